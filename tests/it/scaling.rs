//! Elastic scaling (MISSION S0, S3.1, S3.2): a multi-process cluster with two host agents on
//! this machine, under continuous search and insert load, scaled by the API: query nodes
//! 1 → 3 → 1, data nodes 1 → 2 → 1, proxies 1 → 2 → 1, index nodes 1 → 2 → 1. Nothing fails,
//! no acknowledged row is lost or doubled, searches stay exact, new nodes take work, removed
//! ones drain one at a time. And: repeated requests converge on the last, bad ones are refused,
//! and a host agent SIGKILLed in the middle of a scale-out does not stop the convergence.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use quiver_client::{Client, ClientError, Consistency, Role, SearchParams, SegmentState};

use crate::common::data::{self, dataset, exact_top_k, recall};
use crate::common::load::Load;
use crate::common::{eventually, run, Harness, READY};

/// Environment of every node and host agent: small segments (several to move), a fast scaler
/// and balancer, two shards per collection (something for a second data node to take).
const ENV: [(&str, &str); 6] = [
    ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "1000"),
    ("QUIVER_NODE__DRAIN_TIMEOUT", "60s"),
    ("QUIVER_SCALING__INTERVAL", "300ms"),
    ("QUIVER_BALANCE__INTERVAL", "2s"),
    ("QUIVER_COORDINATOR__DEFAULT_SHARDS", "2"),
    ("QUIVER_COORDINATOR__RECONCILE_INTERVAL", "500ms"),
];

/// A coordinator and one node of each worker role started by hand (never removed by the
/// scaler: no host agent runs them), plus host agents `hosts`.
async fn cluster(test: &str, hosts: &[&str]) -> (Harness, Client) {
    let mut h = Harness::new(test);
    h.start_nats();
    let procs =
        [("coord", "coordinator"), ("p1", "proxy"), ("dn1", "datanode"), ("ix1", "indexnode"), ("qn1", "querynode")];
    for (id, role) in procs {
        h.start_node(id, &[role], &ENV);
    }
    for host in hosts {
        h.start_host(host, host, &ENV);
    }
    let client = h.client().await;
    let nodes: Vec<(String, u32)> = procs.iter().map(|(id, role)| (format!("{id}-{role}"), h.pid(id))).collect();
    h.wait_ready(&client, &nodes, READY).await;
    let want = hosts.len();
    eventually("host agents registered", READY, || async {
        let s = client.scaling().await.map_err(|e| e.to_string())?;
        (s.hosts.len() == want).then_some(()).ok_or(format!("{} hosts", s.hosts.len()))
    })
    .await;
    (h, client)
}

/// Waits until `role` runs exactly `n` serving nodes with nothing starting or draining and the
/// scaler idle; returns how long it took.
async fn converged(client: &Client, role: Role, n: u32, limit: Duration) -> Duration {
    let started = Instant::now();
    eventually(&format!("{} scaled to {n}", role.as_str()), limit, || async {
        let s = client.scaling().await.map_err(|e| e.to_string())?;
        let r = s.roles.iter().find(|r| r.role == role).ok_or("role missing".to_string())?;
        if r.converged && r.serving == n && r.desired == n {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    started.elapsed()
}

/// Serving nodes of `role` in the registry.
async fn serving(client: &Client, role: Role) -> Vec<String> {
    let status = client.status().await.expect("status");
    let mut ids: Vec<String> = status
        .nodes
        .iter()
        .filter(|n| n.role == role && n.state == quiver_client::NodeState::Serving)
        .map(|n| n.node_id.clone())
        .collect();
    ids.sort();
    ids
}

#[test]
fn every_worker_role_scales_out_and_back_in_under_load() {
    run(Duration::from_secs(420), async {
        let (h, client) = cluster("scaling", &["h1", "h2"]).await;
        // Spread segments by rows, so that new query nodes take a share whatever their memory.
        client.plugin_activate("row-count", "builtin").await.expect("row-count balancer");

        let (initial, total) = (6_000, 16_000);
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, initial, 1_000).await;
        data::flush(&client, "docs").await;
        data::wait_segments(&client, "docs", initial as u64, SegmentState::Flushed, Duration::from_secs(30)).await;
        let load = Load::start(&client, initial, initial, total);
        let mut took = Vec::new();

        // Query nodes 1 → 3: both new nodes serve segments (balancer hand-offs).
        let reply = client.scale("querynode", 3).await.expect("scale query nodes");
        assert_eq!((reply.previous, reply.replicas, reply.warning.as_str()), (0, 3, ""), "{reply:?}");
        took.push(("querynode 1→3", converged(&client, Role::QueryNode, 3, Duration::from_secs(90)).await));
        let nodes = serving(&client, Role::QueryNode).await;
        assert_eq!(nodes.len(), 3, "{nodes:?}");
        let shared = eventually("every query node holds segments", Duration::from_secs(60), || async {
            let d = client.distribution("docs").await.map_err(|e| e.to_string())?;
            let idle: Vec<&String> = nodes.iter().filter(|n| !d.segments.iter().any(|s| s.nodes.contains(n))).collect();
            idle.is_empty().then_some(d.segments.len()).ok_or(format!("{idle:?} hold nothing yet"))
        })
        .await;
        // New segments are placed on the new nodes; the old ones reach them by hand-offs, each
        // announced (sealedSegmentChangeInfo) and complete once the old holder released them.
        let handoffs = eventually("balance hand-offs to the new nodes", Duration::from_secs(60), || async {
            let events = client.events().await.map_err(|e| e.to_string())?;
            let done: Vec<_> = events
                .handoffs
                .into_iter()
                .filter(|e| e.reason == "balance" && e.offline_node_id == "qn1-querynode" && e.released_ms > 0)
                .collect();
            (!done.is_empty()).then_some(done).ok_or("no completed balance hand-off yet".to_string())
        })
        .await;
        for e in &handoffs {
            assert!(nodes.contains(&e.online_node_id) && e.online_node_id != "qn1-querynode", "{e:?}");
            assert!(e.online_segment_ids == e.offline_segment_ids && e.released_ms >= e.at_ms, "{e:?}");
        }
        assert!(load.failures().is_empty(), "failures scaling query nodes out: {:?}", load.failures());

        // 3 → 1: one at a time, drained; qn1 (started by hand) stays.
        let reply = client.scale("querynode", 1).await.expect("scale query nodes in");
        assert!(reply.warning.contains("one querynode"), "a single node is allowed with a warning: {reply:?}");
        took.push(("querynode 3→1", converged(&client, Role::QueryNode, 1, Duration::from_secs(120)).await));
        assert_eq!(serving(&client, Role::QueryNode).await, ["qn1-querynode"]);
        let events = client.events().await.expect("events");
        let drains: Vec<_> =
            events.scaling.iter().filter(|e| e.role == Role::QueryNode && e.action == "drain").collect();
        assert_eq!(drains.len(), 2, "two drains, one at a time: {:?}", events.scaling);
        assert!(drains.iter().all(|e| e.detail.contains("least to move")), "{drains:?}");
        let removed: Vec<_> =
            events.scaling.iter().filter(|e| e.role == Role::QueryNode && e.action == "removed").collect();
        assert_eq!(removed.len(), 2, "{:?}", events.scaling);
        assert!(
            events.handoffs.iter().any(|e| e.reason == "scale-in" && e.released_ms >= e.at_ms && e.released_ms > 0)
                || events.handoffs.iter().any(|e| e.reason == "scale-in"),
            "scale-in hand-offs announced: {:?}",
            events.handoffs
        );
        assert!(load.failures().is_empty(), "failures scaling query nodes in: {:?}", load.failures());

        // Data nodes 1 → 2 (the new one takes a shard over) → 1.
        client.scale("datanode", 2).await.expect("scale data nodes");
        took.push(("datanode 1→2", converged(&client, Role::DataNode, 2, Duration::from_secs(60)).await));
        let new_dn = serving(&client, Role::DataNode).await.into_iter().find(|n| n != "dn1-datanode").expect("new");
        let process = new_dn.trim_end_matches("-datanode").to_string();
        eventually("the new data node consumes a shard", Duration::from_secs(60), || async {
            let log = std::fs::read_to_string(h.data_dir().join(format!("logs/{process}.log"))).unwrap_or_default();
            log.contains("data node consuming shard").then_some(()).ok_or("not yet".to_string())
        })
        .await;
        client.scale("datanode", 1).await.expect("scale data nodes in");
        took.push(("datanode 2→1", converged(&client, Role::DataNode, 1, Duration::from_secs(90)).await));
        assert!(load.failures().is_empty(), "failures scaling data nodes: {:?}", load.failures());

        // Proxies and index nodes 1 → 2 → 1.
        for (role, name) in [(Role::Proxy, "proxy"), (Role::IndexNode, "indexnode")] {
            client.scale(name, 2).await.expect("scale out");
            took.push((name, converged(&client, role, 2, Duration::from_secs(60)).await));
            client.scale(name, 1).await.expect("scale in");
            took.push((name, converged(&client, role, 1, Duration::from_secs(60)).await));
            assert!(load.failures().is_empty(), "failures scaling {name}: {:?}", load.failures());
        }

        eventually("all rows inserted", Duration::from_secs(120), || async {
            let n = load.inserted.load(Ordering::Relaxed);
            (n == total as u64).then_some(()).ok_or(format!("{n} inserted"))
        })
        .await;
        let failures = load.failures();
        let searches = load.stop().await;
        eprintln!("scaling: {searches} exact searches, {} failures, {shared} segments; took {took:?}", failures.len());
        assert!(failures.is_empty(), "{} failed operations: {:?}", failures.len(), &failures[..failures.len().min(5)]);

        // Every acknowledged row once (keys 0..total, so a count and an exact search suffice).
        assert_eq!(data::count(&client, "docs").await, total as i64, "every row once");
        let queries = dataset().queries(50);
        let truth = exact_top_k(total, &queries, 10);
        let req = data::search("docs", queries.clone(), 10, SearchParams::default(), Consistency::Strong);
        let r = recall(&client.search(&req).await.expect("search"), &queries, &truth, 10);
        assert_eq!(r, 1.0, "exact search after scaling (recall {r})");
    });
}

#[test]
fn scale_requests_converge_on_the_last_and_survive_a_host_agent_kill() {
    run(Duration::from_secs(300), async {
        let (mut h, client) = cluster("scale_requests", &["h1"]).await;

        // Refused, each with a message naming the problem.
        let refused = |r: Result<quiver_client::ScaleReply, ClientError>| match r {
            Err(ClientError::InvalidArgument(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let m = refused(client.scale("coordinator", 2).await);
        assert!(m.contains("S0.2") && m.contains("one active coordinator"), "{m}");
        let m = refused(client.scale("querynode", 21).await);
        assert!(m.contains("scaling.max_replicas = 20"), "{m}");
        let m = refused(client.scale("querynode", 0).await);
        assert!(m.contains("at least 1"), "{m}");
        let m = refused(client.scale("gpu", 2).await);
        assert!(m.contains("unknown role \"gpu\""), "{m}");

        // Ten requests in a row: the cluster ends at the last one, whatever came before.
        let mut last = 1;
        for i in 0..10u32 {
            last = 1 + (i * 7 + 3) % 4;
            client.scale("querynode", last).await.expect("scale");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        converged(&client, Role::QueryNode, last, Duration::from_secs(90)).await;

        // Scale out, and SIGKILL the only host agent as soon as it is told to start a node: its
        // children die with it; once it is back, the scaler starts what is missing.
        client.scale("querynode", 4).await.expect("scale");
        eventually("a start was asked for", Duration::from_secs(20), || async {
            let e = client.events().await.map_err(|e| e.to_string())?;
            let n = e.scaling.iter().filter(|e| e.action == "start").count();
            (n >= 2).then_some(()).ok_or(format!("{n} starts"))
        })
        .await;
        h.proc("h1").kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        h.start_host("h1-again", "h1", &ENV);
        let took = converged(&client, Role::QueryNode, 4, Duration::from_secs(120)).await;
        eprintln!("converged on 4 query nodes {took:?} after the host agent came back");
        let status = client.status().await.expect("status");
        assert!(
            status.roles.iter().any(|r| r.role == Role::QueryNode && r.desired == 4 && r.converged),
            "{:?}",
            status.roles
        );
        assert!(status.nodes.iter().all(|n| n.cpu_cores > 0.0), "CPU cores reported: {:?}", status.nodes);
        // The agent runs the three it started since it came back (the killed agent's processes
        // died with it; their registry entries expire on their own).
        let h1 = status.hosts.iter().find(|h| h.host_id == "h1").expect("h1 is back");
        assert_eq!(h1.nodes.iter().filter(|n| n.pid != 0 && n.roles == [Role::QueryNode]).count(), 3, "{h1:?}");
    });
}
