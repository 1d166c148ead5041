//! A real Prometheus server (Debian's `prometheus`, installed by `scripts/install-deps.sh`)
//! scraping a multi-process cluster, one node per role, each with its own metrics endpoint
//! (`metrics.listen`): every target is up and every role's series are there (its state, health
//! and segments, its process's memory and CPU), the proxy's request counters count the test's
//! calls, every query of the Grafana dashboard (`deploy/grafana/quiver.json`) returns series,
//! the replica gauges see the only query node's loss, and the alert rules of
//! `deploy/prometheus/quiver-alerts.yml` all evaluate against the real series.

use std::path::Path;
use std::time::Duration;

use quiver_client::Consistency;
use serde_json::Value;

use crate::common::data;
use crate::common::{eventually, free_port, http_get, run, Harness, ONE_PER_ROLE, READY};

/// `text` percent-encoded for a URL query value (everything but unreserved characters).
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The result vector of the instant query `query` (PromQL) on Prometheus at `port`.
async fn query(port: u16, query: &str) -> Result<Vec<Value>, String> {
    let reply = http_get(port, &format!("/api/v1/query?query={}", url_encoded(query))).await?;
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).ok_or("no body")?;
    let json: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    match json["data"]["result"].as_array() {
        Some(series) => Ok(series.clone()),
        None => Err(format!("no result: {body}")),
    }
}

fn value(series: &Value) -> f64 {
    series["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

#[test]
fn prometheus_scrapes_every_role_of_a_cluster() {
    run(Duration::from_secs(150), async {
        let mut h = Harness::new("prometheus");
        h.start_nats();
        let mut targets = Vec::new();
        let mut nodes = Vec::new();
        for (id, role) in ONE_PER_ROLE {
            let listen = format!("127.0.0.1:{}", free_port().expect("free port"));
            h.start_node(id, &[role], &[("QUIVER_METRICS__LISTEN", &listen)]);
            targets.push(format!("{listen:?}"));
            nodes.push((format!("{id}-{role}"), h.pid(id)));
        }
        let client = h.client().await;
        h.wait_ready(&client, &nodes, READY).await;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, 1_000, 500).await;
        // A sealed segment, a strong search (a consistency wait) and a refused request (an
        // error by code), so that every dashboard panel has series.
        data::flush(&client, "docs").await;
        let strong = data::search("docs", data::dataset().queries(1), 5, Default::default(), Consistency::Strong);
        crate::common::retry("search", Duration::from_secs(20), || client.search(&strong)).await;
        assert!(client.describe_collection("no_such_collection").await.is_err());

        let config = h.dir().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{rules:?}]\n\
                 scrape_configs:\n  - job_name: quiver\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", "),
                rules = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("deploy/prometheus/quiver-alerts.yml")
                    .display()
                    .to_string(),
            ),
        )
        .expect("write prometheus.yml");
        let web = free_port().expect("free port");
        let (config, store, listen) =
            (config.display().to_string(), h.dir().join("tsdb").display().to_string(), format!("127.0.0.1:{web}"));
        let args = ["--config.file", &config, "--storage.tsdb.path", &store, "--web.listen-address", &listen];
        h.start_program("prometheus", Path::new("prometheus"), &args);

        eventually("every target scraped and up", Duration::from_secs(60), || async {
            let up = query(web, "up").await?;
            match up.iter().filter(|s| value(s) == 1.0).count() {
                5 => Ok(()),
                n => Err(format!("{n} of 5 targets up: {up:?}")),
            }
        })
        .await;
        eventually("every role's series", Duration::from_secs(30), || async {
            let states = query(web, "quiver_node_state").await?;
            for (_, role) in ONE_PER_ROLE {
                let serving = states
                    .iter()
                    .any(|s| s["metric"]["role"] == role && s["metric"]["state"] == "serving" && value(s) == 1.0);
                if !serving {
                    return Err(format!("no serving state for {role}: {states:?}"));
                }
            }
            for gauge in ["quiver_node_healthy", "quiver_node_segments"] {
                let series = query(web, gauge).await?;
                for (_, role) in ONE_PER_ROLE {
                    if !series.iter().any(|s| s["metric"]["role"] == role) {
                        return Err(format!("no {gauge} for {role}: {series:?}"));
                    }
                }
            }
            let memory = query(web, "quiver_process_resident_memory_bytes").await?;
            if memory.len() != 5 || memory.iter().any(|s| value(s).is_nan() || value(s) <= 1e6) {
                return Err(format!("memory of 5 processes: {memory:?}"));
            }
            // Latency histograms come as buckets (so percentiles aggregate across processes).
            if query(web, "quiver_request_seconds_bucket").await?.is_empty() {
                return Err("no quiver_request_seconds_bucket series".into());
            }
            let requests = query(web, "quiver_requests_total").await?;
            let inserts: f64 = requests.iter().filter(|s| s["metric"]["method"] == "insert").map(value).sum();
            if inserts < 2.0 {
                return Err(format!("the proxy's insert requests: {requests:?}"));
            }
            Ok(())
        })
        .await;
        // Every query of the Grafana dashboard returns series from this Prometheus (its `$job`
        // variable at "All").
        let dashboard: Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/quiver.json"))
                .expect("read deploy/grafana/quiver.json"),
        )
        .expect("the dashboard is JSON");
        let panels = dashboard["panels"].as_array().expect("panels");
        let exprs: Vec<(String, String)> = panels
            .iter()
            .flat_map(|p| {
                let title = p["title"].as_str().unwrap_or_default().to_string();
                let targets = p["targets"].as_array().cloned().unwrap_or_default();
                targets
                    .into_iter()
                    .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or_default().replace("$job", ".*")))
            })
            .collect();
        assert!(exprs.len() >= 20, "{} dashboard queries", exprs.len());
        eventually("every dashboard query answered", Duration::from_secs(30), || async {
            for (title, expr) in &exprs {
                if query(web, expr).await?.is_empty() {
                    return Err(format!("panel {title:?}: no series for {expr}"));
                }
            }
            Ok(())
        })
        .await;

        // The replica gauges follow the cluster: one group serving everything, then degraded
        // while its only query node is gone.
        data::flush(&client, "docs").await;
        crate::common::retry("load", Duration::from_secs(20), || client.load_collection("docs", 1)).await;
        let groups = |want: f64, degraded_at_least: f64| {
            move || async move {
                let formed = query(web, "max(quiver_replica_groups)").await?.first().map(value);
                let degraded = query(web, "max(quiver_replica_groups_degraded)").await?.first().map(value);
                match (formed, degraded) {
                    (Some(f), Some(d))
                        if f == want && d >= degraded_at_least && (degraded_at_least > 0.0 || d == 0.0) =>
                    {
                        Ok(())
                    }
                    other => Err(format!("formed and degraded groups: {other:?}")),
                }
            }
        };
        eventually("one replica group, not degraded", Duration::from_secs(30), groups(1.0, 0.0)).await;
        h.proc("qn").kill();
        eventually("the group degraded without its query node", Duration::from_secs(30), groups(1.0, 1.0)).await;

        // The alert rules evaluate against the real series: all loaded, none failing, and on a
        // healthy cluster none firing.
        eventually("the alert rules evaluated", Duration::from_secs(30), || async {
            let reply = http_get(web, "/api/v1/rules").await?;
            let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).ok_or("no body")?;
            let json: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
            let rules: Vec<&Value> = json["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let evaluated = rules.iter().filter(|r| r["health"] == "ok").count();
            let firing: Vec<&Value> = rules.iter().filter(|r| r["state"] == "firing").copied().collect();
            if rules.len() != 14 || evaluated != 14 {
                return Err(format!("{evaluated} of {} rules evaluated ok: {rules:?}", rules.len()));
            }
            // (The query node was killed just now: nothing has been wrong for an alert's `for` yet.)
            if !firing.is_empty() {
                return Err(format!("alerts firing: {firing:?}"));
            }
            Ok(())
        })
        .await;
    });
}
