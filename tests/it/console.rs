//! The web console (MISSION S4.6) in real headless Chromium (Debian's `chromium`, installed by
//! `scripts/install-deps.sh`) against a live multi-process cluster: the page renders its nodes,
//! the segment chart, replica groups and shard leaders, plugins, hand-offs and slow searches
//! from the admin API; after a second query node joins and the balancer hands segments to it,
//! the chart shows them moved. Screenshots are kept under `<target>/tmp/console/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use quiver_client::{Consistency, SearchParams};

use crate::common::data::{self, dataset};
use crate::common::{eventually, flushed_docs, free_port, run, start_nodes, Harness};

/// Where the screenshots are kept (Cargo's scratch directory for integration tests).
fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).expect("artefact dir");
    dir
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or `--screenshot=FILE`),
/// letting the page's scripts and fetches run for a few seconds of virtual time; its stdout.
fn chromium(profile: &Path, url: &str, action: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,2400",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(action)
        .arg(url)
        .output()
        .expect("run chromium (scripts/install-deps.sh installs it)");
    assert!(out.status.success(), "chromium {action} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of attribute `name` in the first tag of `html` that contains `marker`.
fn attribute(html: &str, marker: &str, name: &str) -> Option<String> {
    let at = html.find(marker)?;
    let start = html[..at].rfind('<')?;
    let tag = &html[start..start + html[start..].find('>')?];
    let key = format!("{name}=\"");
    let from = tag.find(&key)? + key.len();
    Some(tag[from..from + tag[from..].find('"')?].to_string())
}

/// The segment count the chart shows for `node` (None: no bar for it).
fn bar(dom: &str, node: &str) -> Option<u64> {
    let marker = format!("data-node=\"{node}\" data-segments=");
    attribute(dom, &marker, "data-segments").and_then(|v| v.parse().ok())
}

#[test]
fn the_console_shows_a_live_cluster_and_a_hand_off_in_chromium() {
    run(Duration::from_secs(180), async {
        let mut h = Harness::new("console");
        h.start_nats();
        let http = free_port().expect("free port").to_string();
        let env = [
            ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2500"),
            ("QUIVER_PLUGINS__BALANCER", "row-count"),
            ("QUIVER_PROXY__HTTP_PORT", http.as_str()),
            // Every search counts as slow, so the slow-search view has some.
            ("QUIVER_TRACING__SLOW_SEARCH", "0ms"),
        ];
        let procs = [
            ("coord", "coordinator"),
            ("proxy", "proxy"),
            ("qn1", "querynode"),
            ("dn", "datanode"),
            ("ixn", "indexnode"),
        ];
        let (client, _) = start_nodes(&mut h, &procs, &env).await;
        let n = 10_000;
        let dist = flushed_docs(&client, n).await;
        let segments = dist.segments.len() as u64;
        assert!(segments >= 4, "{dist:?}");
        for _ in 0..3 {
            let search = data::search("docs", dataset().queries(2), 10, SearchParams::default(), Consistency::Strong);
            client.search(&search).await.expect("search");
        }
        // The heartbeat reports qn1's segments.
        eventually("qn1's heartbeat counts its segments", Duration::from_secs(20), || async {
            let status = client.status().await.map_err(|e| e.to_string())?;
            let qn1 = status.nodes.iter().find(|n| n.node_id == "qn1-querynode").ok_or("no qn1")?;
            (qn1.segments as u64 == segments).then_some(()).ok_or(format!("qn1 reports {}", qn1.segments))
        })
        .await;

        // As the application principal: the console is read-only, so it may see everything.
        let credentials = std::fs::read_to_string(h.credentials_file("app")).expect("app credentials");
        let url = format!("http://127.0.0.1:{http}/console#token={}", credentials.trim());
        let profile = h.dir().join("chromium");
        let dom = chromium(&profile, &url, "--dump-dom");
        assert!(dom.contains("data-loaded=\"true\""), "the page's script ran: {dom}");
        for id in ["coord-coordinator", "proxy-proxy", "qn1-querynode", "dn-datanode", "ixn-indexnode"] {
            assert!(dom.contains(&format!("data-node=\"{id}\"")), "node {id} listed: {dom}");
        }
        assert_eq!(bar(&dom, "qn1-querynode"), Some(segments), "the chart shows qn1's segments: {dom}");
        assert!(dom.contains("data-collection=\"docs\""), "the collection's replica group: {dom}");
        assert!(dom.contains("shard 0: qn1-querynode"), "its shard leader: {dom}");
        assert!(dom.contains("data-kind=\"balancer\""), "the plugins: {dom}");
        assert!(dom.contains(">row-count<"), "the active balancer: {dom}");
        assert!(dom.contains("class=\"search\""), "the slow searches: {dom}");
        assert!(dom.contains("do_search qn1-querynode"), "a slow search's steps: {dom}");
        assert!(!dom.contains("class=\"error\">/v1"), "no section failed: {dom}");
        let before = artefacts().join("console-before.png");
        chromium(&profile, &url, &format!("--screenshot={}", before.display()));
        assert!(std::fs::metadata(&before).map(|m| m.len() > 10_000).unwrap_or(false), "screenshot {before:?}");

        // A second query node: the balancer hands some of qn1's segments to it.
        h.start_node("qn2", &["querynode"], &env);
        eventually("a completed balance hand-off to qn2", Duration::from_secs(60), || async {
            let events = client.events().await.map_err(|e| e.to_string())?;
            let done = events
                .handoffs
                .iter()
                .any(|e| e.reason == "balance" && e.online_node_id == "qn2-querynode" && e.released_ms > 0);
            done.then_some(()).ok_or("no completed hand-off yet".to_string())
        })
        .await;
        let moved = eventually("both heartbeats count the moved segments", Duration::from_secs(20), || async {
            let status = client.status().await.map_err(|e| e.to_string())?;
            let count = |id: &str| status.nodes.iter().find(|n| n.node_id == id).map_or(0, |n| n.segments as u64);
            let (one, two) = (count("qn1-querynode"), count("qn2-querynode"));
            (two > 0 && one + two == segments).then_some(two).ok_or(format!("qn1 {one}, qn2 {two}"))
        })
        .await;
        let dom = chromium(&profile, &url, "--dump-dom");
        assert_eq!(bar(&dom, "qn2-querynode"), Some(moved), "the chart shows qn2's segments: {dom}");
        assert_eq!(bar(&dom, "qn1-querynode"), Some(segments - moved), "and qn1's fewer: {dom}");
        assert!(dom.contains("data-reason=\"balance\""), "the hand-off is listed: {dom}");
        let after = artefacts().join("console-after.png");
        chromium(&profile, &url, &format!("--screenshot={}", after.display()));
        assert!(std::fs::metadata(&after).map(|m| m.len() > 10_000).unwrap_or(false), "screenshot {after:?}");
    });
}
