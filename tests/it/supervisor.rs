//! Supervision: a panicking role is contained (the process and the other roles keep running)
//! and restarted with backoff; the restart shows in the status.

use std::time::{Duration, Instant};

use quiver_client::{Consistency, Role, SearchParams, SegmentState};

use crate::common::data::{self, dataset, exact_top_k, recall};
use crate::common::{eventually, run, Harness, READY};

#[test]
fn query_node_panic_is_contained_and_restarted() {
    run(Duration::from_secs(50), async {
        let mut h = Harness::standalone("panic", &[("QUIVER_DEBUG__FAULT_INJECTION", "true")]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        data::create_simple(&client, "c").await;
        data::insert_rows(&client, "c", 0, 3_000, 1_000).await;
        data::flush(&client, "c").await;
        data::wait_segments(&client, "c", 3_000, SegmentState::Flushed, Duration::from_secs(15)).await;
        data::insert_rows(&client, "c", 3_000, 3_500, 500).await;

        let queries = dataset().queries(20);
        let truth = exact_top_k(3_500, &queries, 10);
        let req = data::search("c", queries.clone(), 10, SearchParams::default(), Consistency::Strong);
        assert_eq!(recall(&client.search(&req).await.expect("search"), &queries, &truth, 10), 1.0);

        let nats = h.nats_as("node").await;
        let subject = quiver_client::Subjects::new(&h.cluster)
            .node_call::<quiver_client::protocol::control::DebugPanic>("standalone-querynode");
        nats.publish(subject, quiver_client::Wire::to_bytes(&quiver_client::Empty {}).into()).await.expect("publish");
        nats.flush().await.expect("flush");
        let panicked = Instant::now();

        // While the query node restarts, the other roles keep answering.
        for _ in 0..5 {
            let names = client.list_collections().await.expect("list_collections during the restart");
            assert_eq!(names, vec!["c".to_string()]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The supervisor restarts it (100 ms backoff); the restart shows in the status.
        let status = eventually("restart visible in the status", Duration::from_secs(5), || async {
            let s = client.status().await.map_err(|e| e.to_string())?;
            let qn = s.nodes.iter().find(|n| n.role == Role::QueryNode).ok_or("no query node")?;
            if qn.restarts >= 1 && qn.healthy {
                Ok(s)
            } else {
                Err(format!("{qn:?}"))
            }
        })
        .await;
        assert!(h.proc("standalone").is_running(), "the process survives a panicking role");
        // Within a few seconds the restarted query node serves again. Until then a search may
        // fail with a retryable error, but whatever it returns must be complete (exact).
        // (A request delivered to the node in the instant it crashed is lost and would only
        // time out, so searching starts once the restart is visible.)
        let restarted = Instant::now();
        let failures = std::cell::Cell::new(0u32);
        eventually("query node serving again", Duration::from_secs(8), || {
            let req = req.clone();
            let client = client.clone().with_timeout(Duration::from_secs(8));
            let (queries, truth, failures) = (&queries, &truth, &failures);
            async move {
                match client.search(&req).await {
                    Ok(res) => {
                        let r = recall(&res, queries, truth, 10);
                        assert_eq!(r, 1.0, "a search answered during the restart must be complete");
                        Ok(())
                    }
                    Err(e) if e.is_retryable() => {
                        failures.set(failures.get() + 1);
                        Err(e.to_string())
                    }
                    Err(e) => panic!("search during the restart: {e:?}"),
                }
            }
        })
        .await;
        eprintln!(
            "query node restarted {:?} after the panic, served again {:?} later ({} retryable failures)",
            restarted - panicked,
            restarted.elapsed(),
            failures.get()
        );
        for n in status.nodes.iter().filter(|n| n.role != Role::QueryNode) {
            assert_eq!(n.restarts, 0, "only the query node was restarted: {n:?}");
        }
        // Writes and reads work after the restart, the data is intact.
        data::insert_rows(&client, "c", 3_500, 4_000, 500).await;
        let truth = exact_top_k(4_000, &queries, 10);
        let res = client.search(&req).await.expect("search after restart");
        assert_eq!(recall(&res, &queries, &truth, 10), 1.0);
    });
}
