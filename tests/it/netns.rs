//! Hosts with their own addresses: network namespaces on a bridge (`quiver_testkit::netns`).
//! Host 1 runs the active coordinator, a query node and a data node; host 2 the standby
//! coordinator, a query node, a data node and the index node; the nats-server, the proxy and the
//! client stay in the test's own namespace. The collection has a replica on each host.
//!
//! Host 1 is cut off (its link down) under search + insert load: its nodes are declared dead,
//! the standby coordinator takes over, the shard moves to host 2's data node, searches are
//! answered from host 2's replica and no request fails. After the cut heals host 1's nodes
//! rejoin, its coordinator waits as a standby (one coordinator acts), and every acknowledged row
//! is there once.

use std::time::Duration;

use quiver_client::{IndexType, MetricType, NodeState, Role, SegmentState};
use quiver_testkit::netns::Hosts;

use crate::common::data;
use crate::common::load::Load;
use crate::common::{retry, run, Harness, READY};
use crate::coordinator_ha::{state_of, wait_roles, wait_status};

#[test]
fn a_host_cut_off_hands_its_work_over_and_rejoins_when_the_cut_heals() {
    assert!(Hosts::available(), "this test makes network namespaces: it needs root and iproute2 (ip netns)");
    run(Duration::from_secs(240), async {
        let hosts = Hosts::create(2);
        let mut h = Harness::new("netns");
        h.nats_host = hosts.gateway();
        // The server gives up on a silent client after two missed pings of a second (its
        // defaults, 2 minutes × 2, would keep a cut host's subscriptions that long).
        h.nats_extra_conf = "ping_interval: \"1s\"\nping_max: 2".into();
        h.start_nats();
        let env = [("QUIVER_COORDINATOR__LEASE_TTL", "3s"), ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "3000")];
        let (one, two) = (hosts.ns(1), hosts.ns(2));
        let layout: [(Option<&str>, &str, &str); 6] = [
            (Some(&one), "c1", "coordinator"),
            (None, "proxy", "proxy"),
            (Some(&one), "qn1", "querynode"),
            (Some(&one), "dn1", "datanode"),
            (Some(&two), "qn2", "querynode"),
            (Some(&two), "ixn", "indexnode"),
        ];
        for (netns, id, role) in layout {
            h.start_node_on(netns, id, &[role], &env);
        }
        let client = h.client().await;
        let nodes: Vec<(String, u32)> =
            layout.iter().map(|(_, id, role)| (format!("{id}-{role}"), h.pid(id))).collect();
        h.wait_ready(&client, &nodes, READY).await;
        // Started once host 1's coordinator acts: the standby, and a data node that takes the
        // shard only when host 1's is gone.
        h.start_node_on(Some(&two), "c2", &["coordinator"], &env);
        h.start_node_on(Some(&two), "dn2", &["datanode"], &env);
        wait_roles(&client, "c1-coordinator", "c2-coordinator", READY).await;

        let initial = 4_000;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, initial, 1_000).await;
        data::flush(&client, "docs").await;
        client.create_index("docs", data::index(IndexType::Hnsw, MetricType::Ip, 0, 16, 100)).await.expect("index");
        retry("load", Duration::from_secs(10), || client.load_collection("docs", 2)).await;
        data::wait_segments(&client, "docs", initial as u64, SegmentState::Indexed, Duration::from_secs(60)).await;

        let load = Load::start_paced(&client, initial, initial, data::BASE_ROWS, Duration::from_millis(120));
        tokio::time::sleep(Duration::from_secs(2)).await;

        hosts.cut(1);
        let gone = ["c1-coordinator", "qn1-querynode", "dn1-datanode"];
        let took = wait_status(&client, "host 1's nodes gone and c2 active", Duration::from_secs(60), |s| {
            let listed: Vec<&str> = gone.iter().copied().filter(|n| state_of(s, n).is_some()).collect();
            match state_of(s, "c2-coordinator") {
                Some(NodeState::Serving) if listed.is_empty() => Ok(()),
                c2 => Err(format!("c2 {c2:?}; still listed: {listed:?}")),
            }
        })
        .await;
        eprintln!("host 1 cut off: its nodes dropped out and c2 took over after {took:?}");
        // The work moved: host 2 serves everything, and writes and flushes go on.
        tokio::time::sleep(Duration::from_secs(4)).await;
        data::flush(&client, "docs").await;
        let during = load.failures();
        assert!(
            during.is_empty(),
            "{} failed requests while host 1 was cut off: {:?}",
            during.len(),
            &during[..during.len().min(5)]
        );

        hosts.heal(1);
        let took = wait_status(&client, "host 1's nodes back, c1 standby", Duration::from_secs(60), |s| {
            let back = ["qn1-querynode", "dn1-datanode"].iter().all(|n| state_of(s, n) == Some(NodeState::Serving));
            let active: Vec<&str> = s
                .nodes
                .iter()
                .filter(|n| n.role == Role::Coordinator && n.state == NodeState::Serving)
                .map(|n| n.node_id.as_str())
                .collect();
            match (state_of(s, "c1-coordinator"), back, active.as_slice()) {
                (Some(NodeState::Standby), true, ["c2-coordinator"]) => Ok(()),
                other => Err(format!("c1, host 1's nodes serving, active coordinators: {other:?}")),
            }
        })
        .await;
        eprintln!("the cut healed: host 1's nodes rejoined after {took:?}; c1 waits as a standby");
        tokio::time::sleep(Duration::from_secs(3)).await;

        let failures = load.failures();
        let acknowledged = load.inserted.clone();
        let searches = load.stop().await;
        assert!(failures.is_empty(), "{} failed requests: {:?}", failures.len(), &failures[..failures.len().min(5)]);
        let n = acknowledged.load(std::sync::atomic::Ordering::Relaxed);
        data::flush(&client, "docs").await;
        assert_eq!(data::count(&client, "docs").await, n as i64, "every acknowledged row, once");
        data::wait_segments(&client, "docs", n, SegmentState::Indexed, Duration::from_secs(90)).await;
        assert_eq!(data::count(&client, "docs").await, n as i64, "every acknowledged row, once, after index builds");
        eprintln!("{searches} searches and {} rows inserted across the cut, 0 failed", n - initial as u64);
    });
}
