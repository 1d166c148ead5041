//! A NATS cluster of three servers under a multi-process Quiver cluster: `nats.url` lists all
//! three and streams and KV buckets have three replicas (`nats.replicas = 3`). One server is
//! SIGKILLed: the processes connected to it move to the others, writes, flushes and searches go on
//! (a node started meanwhile, with the dead server first in its list, connects to another), and
//! the server rejoins with nothing lost. Under continuous search + insert load, a server's
//! SIGKILL fails no request: appends are sent again under their message id until acknowledged,
//! and clients send again what no proxy was subscribed to receive. A long call whose request is
//! lost on the way (as one is when the server it was routed through dies) is sent again within
//! seconds, not after its timeout.

use std::time::{Duration, Instant};

use quiver_client::{SegmentState, Stall, Wire};

use crate::common::data;
use crate::common::load::Load;
use crate::common::{indexed_docs, run, start_one_per_role, wait_for_port, Harness, ONE_PER_ROLE, READY};

#[test]
fn a_cluster_on_three_nats_servers_goes_on_without_one() {
    run(Duration::from_secs(150), async {
        let mut h = Harness::new("natsr3");
        h.start_nats_cluster(3);
        let env = [("QUIVER_NATS__REPLICAS", "3"), ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2000")];
        let (client, mut nodes) = start_one_per_role(&mut h, "coord", &env).await;

        indexed_docs(&client, 4_000).await;

        // The first server of every list goes; whoever was connected to it reconnects elsewhere.
        h.proc("nats0").kill();
        data::insert_rows(&client, "docs", 4_000, 6_000, 500).await;
        data::flush(&client, "docs").await;
        data::wait_segments(&client, "docs", 6_000, SegmentState::Indexed, Duration::from_secs(60)).await;
        assert_eq!(data::count(&client, "docs").await, 6_000);
        // A node started now, with the dead server first in its list, connects to another.
        h.start_node("qn2", &["querynode"], &env);
        nodes.push(("qn2-querynode".into(), h.pid("qn2")));
        h.wait_ready(&client, &nodes, READY).await;

        // It comes back with its store, rejoins and catches up; nothing was lost or doubled.
        h.proc("nats0").restart().expect("restart nats0");
        let port = h.nats_port;
        wait_for_port(h.proc("nats0"), port, READY);
        data::insert_rows(&client, "docs", 6_000, 7_000, 500).await;
        assert_eq!(data::count(&client, "docs").await, 7_000);
        for (id, _) in ONE_PER_ROLE {
            assert!(h.proc(id).is_running(), "{id} runs");
        }
    });
}

#[test]
fn a_nats_server_killed_under_search_and_insert_load_fails_nothing() {
    run(Duration::from_secs(240), async {
        let mut h = Harness::new("natsload");
        h.start_nats_cluster(3);
        let env = [("QUIVER_NATS__REPLICAS", "3"), ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2000")];
        let (client, _) = start_one_per_role(&mut h, "coord", &env).await;

        let (initial, total) = (4_000, data::BASE_ROWS);
        indexed_docs(&client, initial).await;

        let load = Load::start_paced(&client, initial, initial, total, Duration::from_millis(120));
        let rows = || load.inserted.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Each server in turn, the next once the last one is back and has caught up.
        let victims = [("nats1", h.more_nats_ports[0]), ("nats0", h.nats_port), ("nats2", h.more_nats_ports[1])];
        for (victim, port) in victims {
            let before = (rows(), load.failures().len());
            h.proc(victim).kill();
            let killed = Instant::now();
            // Writes to a stream the dead server led wait for its new leader (JetStream's
            // election takes 4 to 9 s); the time until two more inserts were acknowledged.
            let mut resumed = None;
            let mut restarted = None;
            while resumed.is_none() || killed.elapsed() < Duration::from_secs(14) {
                if resumed.is_none() && rows() >= before.0 + 400 {
                    resumed = Some(killed.elapsed());
                }
                if restarted.is_none() && killed.elapsed() >= Duration::from_secs(6) {
                    h.proc(victim).restart().expect("restart the nats-server");
                    wait_for_port(h.proc(victim), port, READY);
                    restarted = Some(killed.elapsed());
                }
                assert!(
                    killed.elapsed() < Duration::from_secs(30),
                    "no insert was acknowledged after {victim}'s SIGKILL"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!(
                "{victim} SIGKILLed, back after {restarted:?}: inserts resumed after {resumed:?}; {} rows, {} failures",
                rows() - before.0,
                load.failures().len() - before.1
            );
        }
        let failures = load.failures();
        let acknowledged = load.inserted.clone();
        let searches = load.stop().await;
        // Read once every insert in flight has its answer.
        let inserted = acknowledged.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "{searches} searches, {} rows inserted, {} failures: {:?}",
            inserted - initial as u64,
            failures.len(),
            failures.iter().take(5).collect::<Vec<_>>()
        );
        assert!(failures.is_empty(), "{} failures: {:?}", failures.len(), &failures[..failures.len().min(5)]);
        assert!(searches > 50, "the load ran: {searches} searches");
        assert!(inserted < total as u64, "the inserts ran through the outage");
        assert_eq!(data::count(&client, "docs").await, inserted as i64, "every acknowledged row, once");
    });
}

#[test]
fn a_load_lost_on_the_way_is_sent_again_within_seconds() {
    run(Duration::from_secs(120), async {
        let mut h = Harness::new("lostload");
        h.start_nats();
        let env = [("QUIVER_DEBUG__FAULT_INJECTION", "true"), ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2000")];
        let (client, _) = start_one_per_role(&mut h, "coord", &env).await;
        indexed_docs(&client, 2_000).await;

        // The query node drops what reaches it in the next 4 s, unanswered: the coordinator's
        // load of the next flush's segment among it. NATS never tells a caller that a request
        // was lost; the load (a call of up to 10 minutes) hears no word from the node and is
        // sent again after 10 s, and the coordinator's rounds go on meanwhile.
        let nats = h.nats_as("node").await;
        let subject = quiver_client::Subjects::new(&h.cluster)
            .node_call::<quiver_client::protocol::control::DebugLose>("qn-querynode");
        nats.request(subject, Stall { millis: 4_000 }.to_bytes().into()).await.expect("lose");
        let started = Instant::now();
        data::insert_rows(&client, "docs", 2_000, 4_000, 500).await;
        data::flush(&client, "docs").await;
        data::wait_segments(&client, "docs", 4_000, SegmentState::Indexed, Duration::from_secs(60)).await;
        let took = started.elapsed();
        assert_eq!(data::count(&client, "docs").await, 4_000);
        let coord = std::fs::read_to_string(h.dir().join("coord.log")).expect("coordinator log");
        let qn = std::fs::read_to_string(h.dir().join("qn.log")).expect("query node log");
        assert!(qn.contains("fault injection: request dropped unanswered"), "nothing was dropped");
        assert!(coord.contains("no word from"), "the coordinator did not notice a lost load");
        eprintln!("a lost load: the new segment served {took:?} after the flush began");
    });
}
