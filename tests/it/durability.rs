//! Crashes: SIGKILL of the whole standalone process, and SIGKILL of the nats-server under a
//! running Quiver (embedded and external). Every acknowledged write survives; service resumes.

use std::time::Duration;

use quiver_client::{schema, Client, Consistency, IndexType, MetricType, PrimaryKey, SearchParams, SegmentState};

use crate::common::data::{self, dataset, exact_top_k, recall};
use crate::common::{
    eventually, kill_standalone, nats_child, process_alive, restart_standalone, retry, run, Harness, READY,
};

/// Asserts that every key in `0..n` is returned by a Strong get, with its own vector (500 keys
/// per get: 500 vectors of 384 floats fit in the default 1 MiB NATS max_payload).
async fn assert_all_present(client: &Client, collection: &str, n: usize) {
    let ds = dataset();
    for start in (0..n).step_by(500) {
        let end = (start + 500).min(n);
        let keys: Vec<PrimaryKey> = (start..end).map(|i| PrimaryKey::Int64(i as i64)).collect();
        let got = retry("get", Duration::from_secs(15), || {
            client.get(collection, keys.clone(), Vec::new(), Consistency::Strong)
        })
        .await;
        assert_eq!(got.rows.pks, keys, "{collection}: every acknowledged key in {start}..{end} is present");
        assert_eq!(got.rows.vectors, ds.rows(start, end), "{collection}: vectors of {start}..{end}");
    }
}

/// A Strong search for base row `row` finds key `row` first.
async fn assert_finds_itself(client: &Client, collection: &str, row: usize) {
    let req = data::search(collection, dataset().rows(row, row + 1), 3, SearchParams::default(), Consistency::Strong);
    let res = retry("search", Duration::from_secs(15), || client.search(&req)).await;
    assert_eq!(res.results[0].pks[0], PrimaryKey::Int64(row as i64), "{collection}: search for row {row}");
}

#[test]
fn sigkill_standalone_loses_no_acknowledged_write() {
    run(Duration::from_secs(55), async {
        let mut h = Harness::standalone("sigkill", &[]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        data::create_simple(&client, "durable").await;
        data::create_simple(&client, "untouched").await;
        // 3000 rows flushed and indexed, then 3000 more acknowledged but never flushed.
        data::insert_rows(&client, "durable", 0, 3_000, 500).await;
        data::flush(&client, "durable").await;
        let hnsw = data::index(IndexType::Hnsw, MetricType::Ip, 0, 16, 100);
        client.create_index("durable", hnsw.clone()).await.expect("index");
        data::wait_segments(&client, "durable", 3_000, SegmentState::Indexed, Duration::from_secs(20)).await;
        data::insert_rows(&client, "durable", 3_000, 6_000, 500).await;
        drop(client);

        kill_standalone(&mut h).await;

        let client = restart_standalone(&mut h).await;

        let mut names = retry("list", Duration::from_secs(10), || client.list_collections()).await;
        names.sort();
        assert_eq!(names, vec!["durable".to_string(), "untouched".to_string()]);
        let described = client.describe_collection("durable").await.expect("describe");
        assert_eq!(described.info.index, Some(hnsw), "index definition survives");
        assert_all_present(&client, "durable", 6_000).await;
        assert_finds_itself(&client, "durable", 4_321).await;
        assert_finds_itself(&client, "durable", 123).await;

        // The unflushed rows still get sealed and indexed after the crash.
        data::flush(&client, "durable").await;
        data::wait_segments(&client, "durable", 6_000, SegmentState::Indexed, Duration::from_secs(20)).await;
        let queries = dataset().queries(50);
        let truth = exact_top_k(6_000, &queries, 10);
        let req = data::search("durable", queries.clone(), 10, SearchParams { nprobe: 0, ef: 64 }, Consistency::Strong);
        let r = recall(&client.search(&req).await.expect("search"), &queries, &truth, 10);
        assert!(r >= 0.95, "recall after restart {r}");
        assert_all_present(&client, "durable", 6_000).await;
    });
}

/// Inserts more rows, and checks old and new data with Strong reads, once NATS is back.
async fn check_recovered(client: &Client, collection: &str, before: usize, after: usize) {
    let ds = dataset();
    // The first writes may fail while Quiver reconnects; a failed insert is not acknowledged.
    let rows = schema::rows(before as i64..after as i64, ds.dim32(), ds.rows(before, after));
    let res =
        retry("insert after NATS restart", Duration::from_secs(20), || client.insert(collection, rows.clone())).await;
    assert_eq!(res.pks.len(), after - before);
    assert_finds_itself(client, collection, after - 1).await;
    assert_finds_itself(client, collection, 10).await;
    assert_all_present(client, collection, after).await;
}

#[test]
fn embedded_nats_server_killed_is_restarted() {
    run(Duration::from_secs(55), async {
        let mut h = Harness::standalone("natskill", &[]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        data::create_simple(&client, "c").await;
        data::insert_rows(&client, "c", 0, 2_000, 1_000).await;
        data::flush(&client, "c").await;
        data::insert_rows(&client, "c", 2_000, 3_000, 1_000).await;

        let quiver = h.pid("standalone");
        let old = nats_child(quiver).expect("embedded nats-server");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), nix::sys::signal::Signal::SIGKILL)
            .expect("kill");
        let new = eventually("nats-server restarted by quiver", Duration::from_secs(10), || async {
            match nats_child(quiver) {
                Some(pid) if pid != old => Ok(pid),
                other => Err(format!("child now {other:?}")),
            }
        })
        .await;
        assert_ne!(new, old);
        let port = h.nats_port;
        crate::common::wait_for_port(h.proc("standalone"), port, READY);

        check_recovered(&client, "c", 3_000, 4_000).await;
        assert!(h.proc("standalone").is_running(), "quiver survived losing its nats-server");
        let status = h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        assert!(status.nodes.iter().all(|n| n.healthy), "{status:?}");
    });
}

#[test]
fn external_nats_server_killed_and_restarted() {
    run(Duration::from_secs(55), async {
        let mut h = Harness::new("extnats");
        h.start_nats();
        h.start_node("all", &["coordinator", "proxy", "datanode", "indexnode", "querynode"], &[]);
        let client = h.client().await;
        let pid = h.pid("all");
        let nodes: Vec<(String, u32)> = ["coordinator", "proxy", "datanode", "indexnode", "querynode"]
            .iter()
            .map(|r| (format!("all-{r}"), pid))
            .collect();
        h.wait_ready(&client, &nodes, READY).await;
        data::create_simple(&client, "c").await;
        data::insert_rows(&client, "c", 0, 2_000, 1_000).await;
        data::flush(&client, "c").await;
        data::insert_rows(&client, "c", 2_000, 3_000, 1_000).await;

        h.proc("nats").kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Same port, same JetStream store.
        h.proc("nats").restart().expect("restart");
        let port = h.nats_port;
        crate::common::wait_for_port(h.proc("nats"), port, READY);

        check_recovered(&client, "c", 3_000, 4_000).await;
        assert!(h.proc("all").is_running(), "the quiver node survived the NATS outage");
        h.wait_ready(&client, &nodes, READY).await;
    });
}

#[test]
fn sigterm_stops_cleanly_and_data_survives() {
    run(Duration::from_secs(40), async {
        let mut h = Harness::standalone("sigterm", &[]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        data::create_simple(&client, "c").await;
        data::insert_rows(&client, "c", 0, 1_000, 500).await;
        drop(client);

        let nats = nats_child(h.pid("standalone")).expect("embedded nats-server");
        let status = h.proc("standalone").terminate(Duration::from_secs(15)).expect("quiver exits after SIGTERM");
        assert!(status.success(), "clean shutdown exits with 0: {status:?}");
        assert!(!process_alive(nats), "the embedded nats-server was stopped too");
        assert!(h.proc("standalone").log().contains("Quiver stopped"));

        let client = restart_standalone(&mut h).await;
        assert_all_present(&client, "c", 1_000).await;
    });
}
