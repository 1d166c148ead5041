//! A NATS cluster of three servers under a multi-process Quiver cluster: `nats.url` lists all
//! three and streams and KV buckets have three replicas (`nats.replicas = 3`). One server is
//! SIGKILLed: the processes connected to it move to the others, writes, flushes and searches go on
//! (a node started meanwhile, with the dead server first in its list, connects to another), and
//! the server rejoins with nothing lost.

use std::time::Duration;

use quiver_client::SegmentState;

use crate::common::data;
use crate::common::{indexed_docs, run, wait_for_port, Harness, ONE_PER_ROLE, READY};

#[test]
fn a_cluster_on_three_nats_servers_goes_on_without_one() {
    run(Duration::from_secs(150), async {
        let mut h = Harness::new("natsr3");
        h.start_nats_cluster(3);
        let env = [("QUIVER_NATS__REPLICAS", "3"), ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2000")];
        for (id, role) in ONE_PER_ROLE {
            h.start_node(id, &[role], &env);
        }
        let client = h.client().await;
        let mut nodes: Vec<(String, u32)> =
            ONE_PER_ROLE.iter().map(|(id, role)| (format!("{id}-{role}"), h.pid(id))).collect();
        h.wait_ready(&client, &nodes, READY).await;

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
