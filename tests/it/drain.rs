//! The drainable lifecycle: on a multi-process cluster under continuous search and insert
//! load, one node of each worker role (proxy, query node, data node, index node) is drained
//! in turn, by `quiver ctl drain` and by SIGTERM; nothing fails, no acknowledged insert is lost
//! or written twice, and every search is exact throughout. And deadlines: a client's deadline
//! bounds the work done for it on a stalled query node.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use quiver_client::{Client, ClientError, Consistency, NodeState, SearchParams, SegmentState, Stall, Wire};

use crate::common::data::{self, dataset, exact_top_k, recall};
use crate::common::load::Load;
use crate::common::{eventually, free_port, metrics_text, quiver_cli, run, Harness, READY};

/// Waits until `node` has left the registry, and its process (single-role) exited with 0.
async fn wait_stopped(h: &mut Harness, client: &Client, proc: &str, node: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    eventually(&format!("{node} drained"), limit, || async {
        let status = client.status().await.map_err(|e| e.to_string())?;
        match status.nodes.iter().find(|n| n.node_id == node) {
            Some(n) => Err(format!("{node} is still listed, {:?}", n.state)),
            None => Ok(()),
        }
    })
    .await;
    let exit = h.proc(proc).terminate(limit).expect("the drained node exits");
    assert!(exit.success(), "{proc} exited with {exit:?} after draining:\n{}", h.proc(proc).log_tail(30));
    started.elapsed()
}

#[test]
fn each_role_drains_under_load_without_losing_anything() {
    run(Duration::from_secs(240), async {
        let mut h = Harness::new("drain");
        h.start_nats();
        let env = [("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2500"), ("QUIVER_NODE__DRAIN_TIMEOUT", "60s")];
        let procs = [
            ("coord", "coordinator"),
            ("p1", "proxy"),
            ("p2", "proxy"),
            ("dn1", "datanode"),
            ("dn2", "datanode"),
            ("ix1", "indexnode"),
            ("ix2", "indexnode"),
            ("qn1", "querynode"),
            ("qn2", "querynode"),
        ];
        for (id, role) in &procs {
            h.start_node(id, &[role], &env);
        }
        let client = h.client().await;
        let nodes: Vec<(String, u32)> = procs.iter().map(|(id, role)| (format!("{id}-{role}"), h.pid(id))).collect();
        let status = h.wait_ready(&client, &nodes, READY).await;
        assert!(status.nodes.iter().all(|n| n.state == NodeState::Serving), "{:?}", status.nodes);

        let (initial, total) = (6_000, 14_000);
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, initial, 2_000).await;
        data::flush(&client, "docs").await;
        data::wait_segments(&client, "docs", initial as u64, SegmentState::Flushed, Duration::from_secs(30)).await;
        let d = client.distribution("docs").await.expect("distribution");
        assert!(!d.segments.is_empty() && d.segments.iter().all(|s| !s.nodes.is_empty()), "{d:?}");

        let load = Load::start(&client, initial, initial, total);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let url = h.url();
        let conn = ["ctl", "--url", url.as_str(), "--cluster", h.cluster.as_str()];
        let mut took = Vec::new();

        // A proxy by `quiver ctl drain --wait`: the other proxy serves every request.
        let args: Vec<&str> = conn.iter().copied().chain(["drain", "p1-proxy", "--wait"]).collect();
        // `ctl` finds the admin credentials (drain is admin-only) under the cluster's data dir.
        let data_dir = h.data_dir().display().to_string();
        let (status, out, err) = quiver_cli(&args, &[("QUIVER_CLUSTER__DATA_DIR", &data_dir)], h.dir.path());
        assert!(status.success() && out.contains("p1-proxy: stopped"), "{out}{err}");
        took.push(("proxy", wait_stopped(&mut h, &client, "p1", "p1-proxy", Duration::from_secs(30)).await));
        assert!(load.failures().is_empty(), "failures draining a proxy: {:?}", load.failures());

        // A query node by SIGTERM: its segments and shard leads move to the other one first.
        let d = client.distribution("docs").await.expect("distribution");
        let qn = if d.shards.iter().any(|s| s.leader == "qn1-querynode") { "qn1" } else { "qn2" };
        let node = format!("{qn}-querynode");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(h.pid(qn) as i32), nix::sys::signal::Signal::SIGTERM)
            .expect("SIGTERM");
        took.push(("querynode", wait_stopped(&mut h, &client, qn, &node, Duration::from_secs(60)).await));
        let d = client.distribution("docs").await.expect("distribution");
        assert!(d.segments.iter().all(|s| !s.nodes.contains(&node)), "{node} still holds segments: {d:?}");
        assert!(load.failures().is_empty(), "failures draining a query node: {:?}", load.failures());

        // The data node consuming the shard, by the API: the other one resumes at its checkpoint.
        let owner = ["dn1", "dn2"]
            .into_iter()
            .find(|dn| {
                let log = std::fs::read_to_string(h.dir.path().join(format!("{dn}.log"))).unwrap_or_default();
                log.contains("data node consuming shard")
            })
            .expect("a data node consumes the shard");
        client.drain_node(&format!("{owner}-datanode")).await.expect("drain the data node");
        took.push((
            "datanode",
            wait_stopped(&mut h, &client, owner, &format!("{owner}-datanode"), Duration::from_secs(60)).await,
        ));
        assert!(load.failures().is_empty(), "failures draining a data node: {:?}", load.failures());

        // An index node (nothing to build right now: it simply leaves its queue group).
        client.drain_node("ix1-indexnode").await.expect("drain the index node");
        took.push(("indexnode", wait_stopped(&mut h, &client, "ix1", "ix1-indexnode", Duration::from_secs(30)).await));

        eventually("all rows inserted", Duration::from_secs(90), || async {
            let n = load.inserted.load(Ordering::Relaxed);
            (n == total as u64).then_some(()).ok_or(format!("{n} inserted"))
        })
        .await;
        let failures = load.failures();
        let searches = load.stop().await;
        eprintln!("drain: {searches} exact searches under load, {} failures; drain times {took:?}", failures.len());
        assert!(failures.is_empty(), "{} failed operations: {:?}", failures.len(), &failures[..failures.len().min(5)]);
        assert!(searches > 50, "the load ran ({searches} searches)");

        // Every acknowledged row exactly once, in sealed segments too (the new data node wrote
        // what the drained one left in the log, nothing twice).
        assert_eq!(data::count(&client, "docs").await, total as i64, "every row once");
        data::flush(&client, "docs").await;
        data::wait_segments(&client, "docs", total as u64, SegmentState::Flushed, Duration::from_secs(30)).await;
        let ds = dataset();
        let queries = ds.queries(50);
        let truth = exact_top_k(total, &queries, 10);
        let req = data::search("docs", queries.clone(), 10, SearchParams::default(), Consistency::Strong);
        let r = recall(&client.search(&req).await.expect("search"), &queries, &truth, 10);
        assert_eq!(r, 1.0, "exact search after the drains (recall {r})");
    });
}

#[test]
fn a_client_deadline_bounds_the_work_on_a_stalled_query_node() {
    run(Duration::from_secs(90), async {
        let metrics = free_port().expect("a free port");
        let listen = format!("127.0.0.1:{metrics}");
        let h = Harness::standalone(
            "deadline",
            &[("QUIVER_DEBUG__FAULT_INJECTION", "true"), ("QUIVER_METRICS__LISTEN", &listen)],
        );
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, 500, 500).await;
        let query = dataset().queries(1);
        let req = data::search("docs", query, 10, SearchParams::default(), Consistency::Strong);
        client.search(&req).await.expect("a search before the stall");

        // The query node now answers only after 30 s.
        let nats = h.nats_as("node").await;
        let subject = quiver_client::Subjects::new(&h.cluster)
            .node_call::<quiver_client::protocol::control::DebugStall>("standalone-querynode");
        nats.request(subject, Stall { millis: 30_000 }.to_bytes().into()).await.expect("stall");

        let impatient = client.clone().with_timeout(Duration::from_secs(2));
        let started = Instant::now();
        let outcome = impatient.search(&req).await;
        let waited = started.elapsed();
        assert!(matches!(outcome, Err(ClientError::Timeout(_))), "{outcome:?}");
        assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4), "error after {waited:?}");

        // The query node gave up on it at the same deadline instead of working for 30 s.
        let abandoned = eventually("the query node abandons the search", Duration::from_secs(5), || async {
            let text = metrics_text(metrics).await?;
            text.lines()
                .find(|l| {
                    l.starts_with("quiver_requests_abandoned_total")
                        && l.contains("role=\"querynode\"")
                        && l.contains("method=\"search\"")
                })
                .map(str::to_string)
                .ok_or_else(|| "no abandoned search counted yet".to_string())
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "abandoned only after {:?}: {abandoned}",
            started.elapsed()
        );
    });
}

#[test]
fn a_drain_that_outlasts_its_timeout_answers_what_it_cuts_off() {
    run(Duration::from_secs(90), async {
        let env = [("QUIVER_DEBUG__FAULT_INJECTION", "true"), ("QUIVER_NODE__DRAIN_TIMEOUT", "2s")];
        let mut h = Harness::standalone("drain_timeout", &env);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, 200, 200).await;
        let req = data::search("docs", dataset().queries(1), 5, SearchParams::default(), Consistency::Strong);
        client.search(&req).await.expect("a search before the stall");
        let nats = h.nats_as("node").await;
        let subject = quiver_client::Subjects::new(&h.cluster)
            .node_call::<quiver_client::protocol::control::DebugStall>("standalone-querynode");
        nats.request(subject, Stall { millis: 60_000 }.to_bytes().into()).await.expect("stall");

        // A search stuck on the stalled query node, then SIGTERM: the drain waits for it up to
        // node.drain_timeout, then tells its caller to retry instead of leaving it to time out.
        let patient = client.clone().with_timeout(Duration::from_secs(30));
        let stuck = tokio::spawn(async move {
            let started = Instant::now();
            (patient.search(&req).await, started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pid = h.pid("standalone");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM)
            .expect("SIGTERM");
        let (outcome, waited) = stuck.await.expect("search task");
        assert!(matches!(&outcome, Err(ClientError::Unavailable(m)) if m.contains("drain")), "{outcome:?}");
        assert!(waited < Duration::from_secs(10), "answered after {waited:?}");
        let exit = h.proc("standalone").terminate(Duration::from_secs(20)).expect("standalone exits");
        assert!(exit.success(), "exit {exit:?}:\n{}", h.proc("standalone").log_tail(40));
    });
}
