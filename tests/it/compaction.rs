//! Compaction for real: many small flushed segments with a third of their rows deleted are
//! merged while searches and counts run (none fails, none misses or doubles a row), deleted
//! rows are gone from the segments, and a SIGKILL in the middle of it loses and doubles nothing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_client::{Client, Consistency, IndexType, MetricType, PrimaryKey, SearchParams, SegmentState};

use crate::common::data::{self, dataset, dot};
use crate::common::{eventually, kill_standalone, restart_standalone, retry, run, Harness, READY};

/// Keys `0..n` minus every third (`k % 3 == 0` deleted).
fn kept(n: usize) -> Vec<usize> {
    (0..n).filter(|k| k % 3 != 0).collect()
}

/// Exact top-k by inner product over the base rows `rows`.
fn truth(rows: &[usize], queries: &[f32], k: usize) -> Vec<Vec<i64>> {
    let ds = dataset();
    let dim = ds.dim32() as usize;
    queries
        .chunks_exact(dim)
        .map(|q| {
            let mut scored: Vec<(f32, i64)> = rows.iter().map(|&r| (dot(q, ds.row(r)), r as i64)).collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored.into_iter().take(k).map(|(_, id)| id).collect()
        })
        .collect()
}

fn recall(got: &[Vec<i64>], truth: &[Vec<i64>]) -> f64 {
    let hits: usize = got.iter().zip(truth).map(|(g, t)| g.iter().filter(|id| t.contains(id)).count()).sum();
    hits as f64 / truth.iter().map(Vec::len).sum::<usize>() as f64
}

/// Top-10 keys of each query (HNSW ef 256: one index over the merged rows keeps the recall
/// of a hundred small ones), checking that no deleted key and no key twice comes back.
async fn search_checked(client: &Client, queries: &[f32]) -> Result<Vec<Vec<i64>>, String> {
    let req = data::search("c", queries.to_vec(), 10, SearchParams { nprobe: 0, ef: 256 }, Consistency::Strong);
    let res = client.search(&req).await.map_err(|e| format!("search: {e}"))?;
    let mut out = Vec::new();
    for hits in res.results {
        let ids: Vec<i64> = hits
            .pks
            .iter()
            .map(|pk| match pk {
                PrimaryKey::Int64(k) => *k,
                other => panic!("unexpected key {other:?}"),
            })
            .collect();
        if ids.iter().any(|k| k % 3 == 0) {
            return Err(format!("a deleted key came back: {ids:?}"));
        }
        if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
            return Err(format!("a key came back twice: {ids:?}"));
        }
        if ids.len() != 10 {
            return Err(format!("{} hits instead of 10", ids.len()));
        }
        out.push(ids);
    }
    Ok(out)
}

/// Inserts `flushes × per` rows, sealing a segment after every `per`, then deletes every third
/// key; waits until every segment is indexed.
async fn small_segments_with_deletes(client: &Client, flushes: usize, per: usize) {
    data::create_simple(client, "c").await;
    client.create_index("c", data::index(IndexType::Hnsw, MetricType::Ip, 0, 16, 200)).await.expect("index");
    for f in 0..flushes {
        data::insert_rows(client, "c", f * per, (f + 1) * per, 500).await;
        data::flush(client, "c").await;
    }
    let n = flushes * per;
    let doomed: Vec<PrimaryKey> = (0..n).filter(|k| k % 3 == 0).map(|k| PrimaryKey::Int64(k as i64)).collect();
    for chunk in doomed.chunks(5_000) {
        retry("delete", Duration::from_secs(10), || client.delete("c", chunk.to_vec())).await;
    }
    data::wait_segments(client, "c", n as u64, SegmentState::Indexed, Duration::from_secs(240)).await;
}

/// Waits for a compaction job to complete; panics if a plan failed.
async fn wait_job(client: &Client, job: u64, limit: Duration) {
    let state = eventually(&format!("compaction {job} completes"), limit, || async {
        let s = client.compaction_state(job).await.map_err(|e| e.to_string())?;
        if s.state == "completed" {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    assert!(state.plans.iter().all(|p| p.state == "completed"), "every plan completed: {state:?}");
}

/// The served segments once compaction settled: exactly the live rows, all indexed.
async fn wait_compacted(client: &Client, live: u64, limit: Duration) -> usize {
    let d = eventually("the inputs are replaced", limit, || async {
        let d = client.distribution("c").await.map_err(|e| e.to_string())?;
        let rows: u64 = d.segments.iter().map(|s| s.segment.rows).sum();
        let indexed = d.segments.iter().all(|s| s.segment.state == SegmentState::Indexed);
        if rows == live && indexed && d.segments.iter().all(|s| !s.nodes.is_empty()) {
            Ok(d)
        } else {
            Err(format!("{} segments, {rows} rows, all indexed: {indexed}", d.segments.len()))
        }
    })
    .await;
    d.segments.len()
}

#[test]
fn compaction_merges_small_segments_and_drops_deleted_rows_under_load() {
    run(Duration::from_secs(420), async {
        let (flushes, per) = (100, 1_000);
        let h = Harness::standalone("compaction", &[("QUIVER_COMPACTION__ENABLED", "false")]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        small_segments_with_deletes(&client, flushes, per).await;
        let n = flushes * per;
        let live = kept(n);
        assert_eq!(data::count(&client, "c").await, live.len() as i64);
        let before = client.describe_collection("c").await.expect("describe");
        assert_eq!(before.sealed_segments, flushes as u32);

        let queries = dataset().queries(50);
        let truth = truth(&live, &queries, 10);
        let recall_before = recall(&search_checked(&client, &queries).await.expect("search"), &truth);

        // Searches and counts run all along; each one is checked.
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let reads = Arc::new(AtomicU64::new(0));
        let load = {
            let (client, stop, failures, reads) = (client.clone(), stop.clone(), failures.clone(), reads.clone());
            let queries = dataset().queries(5);
            let expected = live.len() as i64;
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = search_checked(&client, &queries).await {
                        failures.lock().unwrap().push(e);
                    }
                    let q = quiver_client::Query {
                        partitions: Default::default(),
                        collection: "c".into(),
                        filter: String::new(),
                        output_fields: vec!["count(*)".into()],
                        limit: 0,
                        offset: 0,
                        consistency: Consistency::Strong,
                    };
                    match client.query(&q).await {
                        Ok(r) => match r.rows.columns.first().map(|c| c.values.as_slice()) {
                            Some([quiver_client::ScalarValue::Int64(c)]) if *c == expected => {}
                            other => failures.lock().unwrap().push(format!("count(*) answered {other:?}")),
                        },
                        Err(e) => failures.lock().unwrap().push(format!("count(*): {e}")),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        };

        let started = Instant::now();
        let job = client.compact("c").await.expect("compact");
        assert!(!job.plans.is_empty(), "a plan for the small segments: {job:?}");
        assert!(job.plans.iter().all(|p| p.kind == "merge"), "{job:?}");
        wait_job(&client, job.id, Duration::from_secs(240)).await;
        let segments = wait_compacted(&client, live.len() as u64, Duration::from_secs(240)).await;
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap();

        let failures = failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "{} of {} reads failed: {:?}",
            failures.len(),
            reads.load(Ordering::Relaxed),
            &failures[..failures.len().min(5)]
        );
        assert!(reads.load(Ordering::Relaxed) > 10, "the load ran during compaction");
        assert!(segments <= 2, "{segments} segments after compacting {flushes}");
        assert_eq!(data::count(&client, "c").await, live.len() as i64);
        let recall_after = recall(&search_checked(&client, &queries).await.expect("search"), &truth);
        assert!(recall_after >= recall_before - 0.02, "recall {recall_before} before, {recall_after} after");
        let after = client.describe_collection("c").await.expect("describe");
        assert_eq!(after.num_rows, live.len() as u64, "deleted rows are gone from the segments");
        eprintln!(
            "compacted {flushes} segments into {segments} in {took:?}; recall {recall_before:.3} → {recall_after:.3}; \
             {} reads during it",
            reads.load(Ordering::Relaxed)
        );

        // A second compaction finds nothing to do; a restart replays no delete (the log holds
        // none below the floor) and still hides none of the kept rows.
        let again = client.compact("c").await.expect("compact");
        wait_job(&client, again.id, Duration::from_secs(60)).await;
        assert!(again.plans.is_empty(), "nothing left to compact: {again:?}");
    });
}

#[test]
fn sigkill_during_compaction_loses_and_doubles_nothing() {
    run(Duration::from_secs(300), async {
        let (flushes, per) = (30, 500);
        let mut h = Harness::standalone("compaction-kill", &[("QUIVER_COMPACTION__ENABLED", "false")]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        small_segments_with_deletes(&client, flushes, per).await;
        let live = kept(flushes * per);
        let queries = dataset().queries(20);
        let truth = truth(&live, &queries, 10);

        let job = client.compact("c").await.expect("compact");
        assert!(!job.plans.is_empty());
        // Killed while the plan runs (the merge of 30 segments takes a moment).
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(client);
        kill_standalone(&mut h).await;
        let client = restart_standalone(&mut h).await;

        // Whatever the kill interrupted, every kept row is there once and no deleted one is.
        assert_eq!(data::count(&client, "c").await, live.len() as i64);
        let got = eventually("searches answer", Duration::from_secs(30), || search_checked(&client, &queries)).await;
        assert!(recall(&got, &truth) >= 0.9);

        // Compacting again (the coordinator lost the job) finishes the work.
        let job = client.compact("c").await.expect("compact");
        wait_job(&client, job.id, Duration::from_secs(120)).await;
        let segments = wait_compacted(&client, live.len() as u64, Duration::from_secs(180)).await;
        assert!(segments <= 2, "{segments} segments");
        assert_eq!(data::count(&client, "c").await, live.len() as i64);
        let got = search_checked(&client, &queries).await.expect("search");
        assert!(recall(&got, &truth) >= 0.9);

        // And once more after a restart on the compacted data: the deletes below the floor are
        // not replayed, and none of the dropped rows comes back.
        drop(client);
        kill_standalone(&mut h).await;
        let client = restart_standalone(&mut h).await;
        assert_eq!(data::count(&client, "c").await, live.len() as i64);
        let got = eventually("searches answer", Duration::from_secs(30), || search_checked(&client, &queries)).await;
        assert!(recall(&got, &truth) >= 0.9);
    });
}

#[test]
fn background_compaction_merges_flushes_and_drops_deleted_rows_by_itself() {
    run(Duration::from_secs(300), async {
        let (flushes, per) = (12, 200);
        let h = Harness::standalone(
            "compaction-bg",
            &[
                ("QUIVER_COMPACTION__INTERVAL", "1s"),
                ("QUIVER_COMPACTION__DELETE_ENTRIES", "1"),
                ("QUIVER_COMPACTION__DELETE_INTERVAL", "1s"),
            ],
        );
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        data::create_simple(&client, "c").await;
        client.create_index("c", data::index(IndexType::Hnsw, MetricType::Ip, 0, 16, 100)).await.expect("index");
        for f in 0..flushes {
            data::insert_rows(&client, "c", f * per, (f + 1) * per, 500).await;
            data::flush(&client, "c").await;
        }
        let n = flushes * per;
        // No request: the coordinator merges the small segments on its own.
        let merged = eventually("background compaction merges the flushes", Duration::from_secs(120), || async {
            let d = client.distribution("c").await.map_err(|e| e.to_string())?;
            let rows: u64 = d.segments.iter().map(|s| s.segment.rows).sum();
            if d.segments.len() <= 2 && rows == n as u64 && d.segments.iter().all(|s| !s.nodes.is_empty()) {
                Ok(d.segments.len())
            } else {
                Err(format!("{} segments, {rows} rows", d.segments.len()))
            }
        })
        .await;
        assert_eq!(data::count(&client, "c").await, n as i64);

        // A third deleted: above delete_ratio, so the merged segment is rewritten without them.
        let doomed: Vec<PrimaryKey> = (0..n).filter(|k| k % 3 == 0).map(|k| PrimaryKey::Int64(k as i64)).collect();
        retry("delete", Duration::from_secs(10), || client.delete("c", doomed.clone())).await;
        let live = kept(n).len() as u64;
        let segments = wait_compacted(&client, live, Duration::from_secs(120)).await;
        assert!(segments <= merged, "{segments} segments after the delete rewrite");
        assert_eq!(data::count(&client, "c").await, live as i64);
        let queries = dataset().queries(5);
        search_checked(&client, &queries).await.expect("search");
    });
}
