//! Back-pressure on inserts for a query node's memory (Milvus' memory protection): a query node
//! takes in every insert as growing rows from the log, with no request it could refuse. Once
//! it crosses its high-water mark (its event at once, its heartbeat as the fallback), proxies
//! refuse inserts into the collections it serves (ResourceExhausted, naming the node), the
//! node stays up and answers reads, and no acknowledged row is lost; writes resume once the
//! collection is served by a node with room.

use std::time::{Duration, Instant};

use quiver_client::{Client, ClientError, Consistency, Query, Role};

use crate::common::data;
use crate::common::{eventually, retry, run, start_nodes, Harness};

const MIB: u64 = 1 << 20;
const DIM: u32 = 4096;
/// 64 rows of 16 KiB: 1 MiB per insert.
const BATCH: usize = 64;

/// Rows `start..start + BATCH` with pseudo-random vectors.
fn batch(start: usize) -> quiver_client::RowBatch {
    let vectors = data::noise(0x2545_f491_4f6c_dd1d ^ start as u64, BATCH, DIM as usize);
    quiver_client::schema::rows(start as i64..(start + BATCH) as i64, DIM, vectors)
}

async fn query_node(client: &Client, id: &str) -> Option<quiver_client::NodeStatus> {
    client.status().await.ok()?.nodes.into_iter().find(|n| n.node_id == id && n.role == Role::QueryNode)
}

#[test]
fn inserts_are_refused_while_a_query_node_is_over_its_memory_mark_and_resume_on_a_larger_one() {
    run(Duration::from_secs(240), async {
        let mut h = Harness::new("memory-quota");
        h.start_nats();
        // The mark at 70 %: what is already in the log when inserts stop still comes in (up to
        // 27 MiB more was seen on a loaded machine), and the room up to the budget is for reads.
        let env = [
            ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2000"),
            ("QUIVER_COORDINATOR__RECONCILE_INTERVAL", "500ms"),
            ("QUIVER_LIMITS__MEMORY_HIGH_WATER_PERCENTAGE", "70"),
        ];
        let procs = [("coord", "coordinator"), ("proxy", "proxy"), ("dn", "datanode"), ("ixn", "indexnode")];
        let (client, _) = start_nodes(&mut h, &procs, &env).await;
        // A query node with a 256 MiB budget: its high-water mark (70 %) is 179 MiB.
        let small: Vec<(&str, &str)> = env.iter().copied().chain([("QUIVER_NODE__MEMORY_LIMIT_MB", "256")]).collect();
        h.start_node("qn", &["querynode"], &small);
        let qn = "qn-querynode";
        h.wait_ready(&client, &[(qn.to_string(), h.pid("qn"))], crate::common::READY).await;
        retry("create", Duration::from_secs(10), || {
            client.create_collection(quiver_client::schema::simple("big", DIM))
        })
        .await;
        retry("load", Duration::from_secs(20), || client.load_collection("big", 1)).await;

        // Inserts until refused; at most 600 MiB, well past the mark.
        let started = Instant::now();
        let mut acked = 0usize;
        let refusal = loop {
            assert!(acked < 600 * BATCH, "600 MiB inserted and never refused: {:?}", query_node(&client, qn).await);
            match client.insert("big", batch(acked)).await {
                Ok(_) => acked += BATCH,
                Err(e) => break e,
            }
        };
        let msg = refusal.to_string();
        eprintln!(
            "refused after {acked} rows ({} MiB) in {:?}: {msg}",
            (acked * DIM as usize * 4) >> 20,
            started.elapsed()
        );
        // ResourceExhausted reaches the Rust SDK as its class, Unavailable (worth retrying).
        assert!(matches!(refusal, ClientError::Unavailable(_)), "{refusal:?}");
        assert!(msg.contains(qn) && msg.contains("high-water mark") && msg.contains("\"big\""), "{msg}");
        let status = query_node(&client, qn).await.expect("the query node is still registered");
        assert!(status.mem_capacity == 256 * MIB && status.pid == h.pid("qn"), "{status:?}");
        // It stays refused while the node stays over its mark; the node stays up.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let again = client.insert("big", batch(acked)).await.expect_err("still over the mark");
        assert!(again.to_string().contains("high-water mark"), "{again:?}");
        let status = query_node(&client, qn).await.expect("the query node is still registered");
        assert!(status.healthy && status.restarts == 0 && status.pid == h.pid("qn"), "{status:?}");
        eprintln!("3 s after the refusal the query node uses {} MiB of its 256 MiB", status.mem_used >> 20);
        // Reads go on: the room between the mark and the budget is theirs.
        let count = Query {
            partitions: Default::default(),
            collection: "big".into(),
            filter: String::new(),
            output_fields: vec!["count(*)".into()],
            limit: 0,
            offset: 0,
            consistency: Consistency::Eventually,
        };
        let counted = client.query(&count).await.expect("a query node over its mark answers a query");
        let mut search = quiver_client::schema::search("big", DIM, data::noise(7, 1, DIM as usize), 5);
        search.consistency = Consistency::Eventually;
        let found = client.search(&search).await.expect("and a search");
        assert_eq!(found.results[0].pks.len(), 5, "{found:?}");
        let status = query_node(&client, qn).await.expect("the query node is still registered");
        eprintln!("read at {} MiB: {:?}", status.mem_used >> 20, counted.rows.columns.first().map(|c| &c.values));

        // Replaced by a node with room (what a resize does, make-before-break): writes resume.
        let large: Vec<(&str, &str)> = env.iter().copied().chain([("QUIVER_NODE__MEMORY_LIMIT_MB", "4096")]).collect();
        h.start_node("qn2", &["querynode"], &large);
        h.wait_ready(&client, &[("qn2-querynode".to_string(), h.pid("qn2"))], crate::common::READY).await;
        h.proc("qn").kill();
        let resumed = Instant::now();
        eventually("inserts accepted again", Duration::from_secs(60), || async {
            client.insert("big", batch(acked)).await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await;
        acked += BATCH;
        eprintln!("inserts resumed {:?} after the small node was killed", resumed.elapsed());
        // Every acknowledged row is there, once.
        data::flush(&client, "big").await;
        eventually("every acknowledged row counted", Duration::from_secs(90), || async {
            let n = data::count(&client, "big").await;
            (n == acked as i64).then_some(()).ok_or(format!("count {n}, want {acked}"))
        })
        .await;
    });
}
