//! Automatic idling (MISSION S3.6, S3.7) on real processes: after `idling.after` without a
//! request the compute nodes stop (their processes are gone) while the proxy and coordinator
//! keep listening; one search wakes the cluster and is answered, and the wake time is measured;
//! a write while the cluster idles is acknowledged and found after the wake; a cluster with more
//! segments than `idling.max_parts` never idles.

use std::time::{Duration, Instant};

use quiver_client::{Client, Consistency, Role, SearchParams, SegmentState};

use crate::common::data::{self, dataset};
use crate::common::{eventually, process_alive, run, Harness, READY};

const ENV: [(&str, &str); 6] = [
    ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "1000"),
    ("QUIVER_SCALING__INTERVAL", "300ms"),
    ("QUIVER_COORDINATOR__RECONCILE_INTERVAL", "500ms"),
    ("QUIVER_IDLING__ENABLED", "true"),
    ("QUIVER_IDLING__AFTER", "4s"),
    ("QUIVER_IDLING__WAKE_TIMEOUT", "120s"),
];

/// Processes of compute roles that host agents run, with their pids.
async fn compute_processes(client: &Client) -> Vec<(String, u32)> {
    let s = client.scaling().await.expect("scaling");
    s.hosts
        .iter()
        .flat_map(|h| &h.nodes)
        .filter(|p| {
            p.pid != 0 && p.roles.iter().all(|r| matches!(r, Role::QueryNode | Role::DataNode | Role::IndexNode))
        })
        .map(|p| (p.node_id.clone(), p.pid))
        .collect()
}

async fn idle(client: &Client, limit: Duration) -> quiver_client::IdlingStatus {
    eventually("the cluster idles", limit, || async {
        let s = client.idling().await.map_err(|e| e.to_string())?;
        (s.state == "idle").then_some(s.clone()).ok_or(format!("{s:?}"))
    })
    .await
}

#[test]
fn an_idle_cluster_stops_its_compute_nodes_and_a_search_wakes_it() {
    run(Duration::from_secs(360), async {
        let mut h = Harness::new("idling");
        h.start_nats();
        for (id, role) in [("coord", "coordinator"), ("p1", "proxy")] {
            h.start_node(id, &[role], &ENV);
        }
        h.start_host("h1", "h1", &ENV);
        let client = h.client().await;
        let nodes = [("coord-coordinator".to_string(), h.pid("coord")), ("p1-proxy".to_string(), h.pid("p1"))];
        h.wait_ready(&client, &nodes, READY).await;
        for role in ["datanode", "indexnode", "querynode"] {
            crate::common::retry("scale", READY, || client.scale(role, 1)).await;
        }
        eventually("one node of each compute role", Duration::from_secs(60), || async {
            let s = client.scaling().await.map_err(|e| e.to_string())?;
            let ok = s.roles.iter().filter(|r| r.role != Role::Proxy).all(|r| r.converged && r.serving == 1);
            ok.then_some(()).ok_or(format!("{:?}", s.roles))
        })
        .await;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, 3_000, 1_000).await;
        data::flush(&client, "docs").await;
        data::wait_segments(&client, "docs", 3_000, SegmentState::Flushed, Duration::from_secs(60)).await;
        let before = compute_processes(&client).await;
        assert_eq!(before.len(), 3, "{before:?}");

        // Quiet for idling.after: the compute processes stop; the proxy and coordinator stay.
        let s = idle(&client, Duration::from_secs(60)).await;
        assert_eq!((s.stopped, s.after_ms, s.timeout_ms), (3, 4_000, 4_000), "{s:?}");
        eventually("the compute processes are gone", Duration::from_secs(60), || async {
            let alive: Vec<_> = before.iter().filter(|(_, pid)| process_alive(*pid)).collect();
            alive.is_empty().then_some(()).ok_or(format!("{alive:?} still run"))
        })
        .await;
        eventually("the host agent no longer lists them", Duration::from_secs(10), || async {
            let left = compute_processes(&client).await;
            left.is_empty().then_some(()).ok_or(format!("{left:?}"))
        })
        .await;
        assert!(process_alive(h.pid("p1")) && process_alive(h.pid("coord")));

        // One search wakes the cluster and is answered.
        let started = Instant::now();
        let req = data::search("docs", dataset().row(42).to_vec(), 10, SearchParams::default(), Consistency::Strong);
        let r = client.clone().with_timeout(Duration::from_secs(120)).search(&req).await.expect("search after idling");
        let woke_in = started.elapsed();
        assert_eq!(r.results[0].pks[0], quiver_client::PrimaryKey::Int64(42));
        let s = client.idling().await.expect("idling");
        assert_eq!(s.state, "awake", "{s:?}");
        assert!(s.last_startup_ms > 0 && s.last_startup_ms <= woke_in.as_millis() as u64 + 1_000, "{s:?}");
        eprintln!("idling: a search woke the cluster in {woke_in:?} (start-up measured {} ms)", s.last_startup_ms);
        let events = client.events().await.expect("events");
        for action in ["idle", "wake", "awake"] {
            assert!(events.scaling.iter().any(|e| e.action == action), "{action}: {:?}", events.scaling);
        }

        // Idle again; a write while idle is acknowledged, and found once the cluster is back.
        idle(&client, Duration::from_secs(60)).await;
        data::insert_rows(&client, "docs", 3_000, 3_500, 500).await;
        assert_eq!(data::count(&client, "docs").await, 3_500, "the write made while idle");
    });
}

#[test]
fn more_segments_than_max_parts_keep_the_cluster_awake() {
    run(Duration::from_secs(120), async {
        let env = [
            ("QUIVER_IDLING__ENABLED", "true"),
            ("QUIVER_IDLING__AFTER", "1s"),
            ("QUIVER_IDLING__MAX_PARTS", "1"),
            ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "500"),
        ];
        let h = Harness::standalone("idling_parts", &env);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, 1_000, 500).await;
        data::flush(&client, "docs").await;
        data::wait_segments(&client, "docs", 1_000, SegmentState::Flushed, Duration::from_secs(30)).await;
        let s = eventually("the idler notices the segments", Duration::from_secs(30), || async {
            let s = client.idling().await.map_err(|e| e.to_string())?;
            (!s.blocked.is_empty()).then_some(s.clone()).ok_or(format!("{s:?}"))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let s2 = client.idling().await.expect("idling");
        assert_eq!(s2.state, "awake", "{s2:?}");
        assert!(s.blocked.contains("more than idling.max_parts = 1"), "{s:?}");
    });
}
