//! A multi-process cluster: one nats-server and a separate `quiver run` process per role (two
//! query nodes), sharing one data dir / object store. It answers like a single exact index.

use std::collections::BTreeSet;
use std::time::Duration;

use quiver_client::{Consistency, IndexType, MetricType, PrimaryKey, SearchParams, SegmentState};

use crate::common::data::{self, dataset, exact_top_k, recall};
use crate::common::{run, start_nodes, Harness, TWO_QUERY_NODES};

#[test]
fn multi_process_cluster_spreads_segments_and_searches_exactly() {
    run(Duration::from_secs(55), async {
        let mut h = Harness::new("cluster");
        h.start_nats();
        // Row-count placement spreads a flush's segments over both query nodes deterministically;
        // the default (memory) placement follows the nodes' real memory use, which on one machine
        // differs by more than these small segments weigh (it is exercised in plugins.rs).
        let env = [("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2500"), ("QUIVER_PLUGINS__BALANCER", "row-count")];
        let (client, nodes) = start_nodes(&mut h, &TWO_QUERY_NODES, &env).await;
        let status = client.status().await.expect("status");
        let pids: BTreeSet<u32> = status.nodes.iter().map(|n| n.pid).collect();
        assert_eq!(pids.len(), 6, "six processes, one role each: {status:?}");

        let n = 20_000;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, n, 2_000).await;
        data::flush(&client, "docs").await;
        let dist = data::wait_segments(&client, "docs", n as u64, SegmentState::Flushed, Duration::from_secs(20)).await;
        assert!(dist.segments.len() >= 7, "2500 rows per segment: {} segments", dist.segments.len());
        // A segment is sealed once it reaches 2500 rows, so it exceeds that by less than one
        // log entry (an insert message of < 1 MiB: under 700 rows here), flush included.
        let sizes: Vec<u64> = dist.segments.iter().map(|s| s.segment.rows).collect();
        assert!(sizes.iter().all(|r| *r < 2_500 + 700), "segment sizes {sizes:?}");
        let holders: BTreeSet<String> = dist.segments.iter().flat_map(|s| s.nodes.iter().cloned()).collect();
        let query_nodes: BTreeSet<String> = ["qn1-querynode".to_string(), "qn2-querynode".to_string()].into();
        assert_eq!(holders, query_nodes, "sealed segments are spread over both query nodes");

        // Exact (brute force) across two query nodes, merged by the proxy: identical to exact search.
        let ds = dataset();
        let queries = ds.queries(100);
        let truth = exact_top_k(n, &queries, 10);
        let req = data::search("docs", queries.clone(), 10, SearchParams::default(), Consistency::Strong);
        let res = client.search(&req).await.expect("search");
        let r = recall(&res, &queries, &truth, 10);
        assert_eq!(r, 1.0, "cluster brute-force search equals exact search (recall {r})");

        // Get keys from every segment (each lives on one of the two nodes).
        let keys: Vec<PrimaryKey> = (0..n as i64).step_by(997).map(PrimaryKey::Int64).collect();
        let got = client.get("docs", keys.clone(), Vec::new(), Consistency::Strong).await.expect("get");
        assert_eq!(got.rows.pks, keys);

        // Indexed on the index node, served by both query nodes.
        client.create_index("docs", data::index(IndexType::Hnsw, MetricType::Ip, 0, 16, 200)).await.expect("index");
        let dist = data::wait_segments(&client, "docs", n as u64, SegmentState::Indexed, Duration::from_secs(40)).await;
        let holders: BTreeSet<String> = dist.segments.iter().flat_map(|s| s.nodes.iter().cloned()).collect();
        assert_eq!(holders, query_nodes);
        let req = data::search("docs", queries.clone(), 10, SearchParams { nprobe: 0, ef: 64 }, Consistency::Strong);
        let r = recall(&client.search(&req).await.expect("search"), &queries, &truth, 10);
        assert!(r >= 0.95, "cluster HNSW recall@10 = {r}");

        let status = client.status().await.expect("status");
        for (id, _) in &nodes {
            let node = status.nodes.iter().find(|s| &s.node_id == id).expect("node listed");
            assert!(node.healthy && node.restarts == 0, "{node:?}");
        }
        // Heartbeats (every second) report what each query node holds: every segment, once.
        let expected = dist.segments.len() as u32;
        crate::common::eventually("query nodes report their segments", Duration::from_secs(5), || async {
            let status = client.status().await.map_err(|e| e.to_string())?;
            let held: Vec<u32> =
                status.nodes.iter().filter(|s| s.node_id.ends_with("querynode")).map(|s| s.segments).collect();
            if held.iter().sum::<u32>() == expected && held.iter().all(|n| *n > 0) {
                Ok(())
            } else {
                Err(format!("query nodes hold {held:?}, want {expected} in total"))
            }
        })
        .await;
    });
}

/// A load on a cluster still starting, with no query node yet, waits for the first one within
/// the caller's budget instead of failing at once with "0 are alive"; asking for more replicas
/// than there are query nodes, with none on the way, is refused at once, naming the alive ones.
#[test]
fn a_load_waits_for_the_first_query_node_of_a_starting_cluster() {
    run(Duration::from_secs(60), async {
        let mut h = Harness::new("load-waits");
        h.start_nats();
        let procs = [("coord", "coordinator"), ("proxy", "proxy"), ("dn", "datanode")];
        let (client, _) = start_nodes(&mut h, &procs, &[]).await;
        let n = 2_000;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, n, 1_000).await;
        data::flush(&client, "docs").await;

        // One call, sent as the query node starts: it returns once the node serves.
        h.start_node("qn", &["querynode"], &[]);
        let started = std::time::Instant::now();
        client.load_collection("docs", 1).await.expect("the load waits for the first query node");
        eprintln!("load answered {:?} after the query node was started", started.elapsed());
        assert_eq!(data::count(&client, "docs").await, n as i64);

        let started = std::time::Instant::now();
        let err = client.load_collection("docs", 2).await.expect_err("2 replicas on one query node");
        let m = err.to_string();
        assert!(m.contains("needs at least 2 query nodes") && m.contains("1 is alive: qn-querynode"), "{m}");
        assert!(started.elapsed() < Duration::from_secs(2), "refused after {:?}", started.elapsed());
    });
}

/// A flush while no data node consumes the collection yet (a cluster still starting) waits
/// for one within the caller's budget instead of failing at once; with none coming it
/// answers "retry shortly" (Unavailable), not a timeout, before that budget is spent.
#[test]
fn a_flush_waits_for_its_shards_data_node_within_the_callers_budget() {
    run(Duration::from_secs(60), async {
        let mut h = Harness::new("flush-waits");
        h.start_nats();
        let procs = [("coord", "coordinator"), ("proxy", "proxy"), ("qn", "querynode")];
        let (client, _) = start_nodes(&mut h, &procs, &[]).await;
        let n = 3_000;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, n, 1_000).await;

        let short = client.clone().with_timeout(Duration::from_secs(3));
        let started = std::time::Instant::now();
        let err = short.flush("docs").await.expect_err("no data node: the flush cannot succeed");
        let waited = started.elapsed();
        assert!(matches!(err, quiver_client::ClientError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("no data node yet"), "{err}");
        assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(3), "answered after {waited:?}");

        // One call, sent as the data node starts: it succeeds once the node takes the shard.
        h.start_node("dn", &["datanode"], &[]);
        let started = std::time::Instant::now();
        let flushed = client.flush("docs").await.expect("the flush waits for the new data node");
        eprintln!("flush answered {:?} after the data node was started", started.elapsed());
        assert!(!flushed.segments.is_empty(), "{flushed:?}");
        assert_eq!(data::count(&client, "docs").await, n as i64);
    });
}
