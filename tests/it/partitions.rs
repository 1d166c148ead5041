//! Partitions through the NATS SDK: rows written to a partition are read only where it is
//! covered, in growing rows, sealed and indexed segments alike; released partitions are not
//! read; a dropped partition's rows are never read again and compaction removes them.

use std::time::Duration;

use quiver_client::{Consistency, IndexType, MetricType, PrimaryKey, Query, ScalarValue, SearchParams, SegmentState};

use crate::common::data::{self, dataset};
use crate::common::{eventually, run, Harness, READY};

async fn count(client: &quiver_client::Client, partitions: &[&str]) -> i64 {
    let q = Query {
        collection: "docs".into(),
        filter: String::new(),
        output_fields: vec!["count(*)".into()],
        limit: 0,
        offset: 0,
        consistency: Consistency::Strong,
        partitions: partitions.iter().map(|p| p.to_string()).collect(),
    };
    match client.query(&q).await.expect("count").rows.columns[0].values.as_slice() {
        [ScalarValue::Int64(n)] => *n,
        other => panic!("count(*) answered {other:?}"),
    }
}

/// The keys a search of dataset row `row` finds (top 20) in `partitions`.
async fn found(client: &quiver_client::Client, row: usize, partitions: &[&str]) -> Vec<i64> {
    let mut req = data::search("docs", dataset().row(row).to_vec(), 20, SearchParams::default(), Consistency::Strong);
    req.partitions = partitions.iter().map(|p| p.to_string()).collect();
    let res = client.search(&req).await.expect("search");
    res.results[0]
        .pks
        .iter()
        .map(|p| match p {
            PrimaryKey::Int64(k) => *k,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn partitions_scope_reads_and_dropped_ones_are_compacted_away() {
    run(Duration::from_secs(180), async {
        let h = Harness::standalone("partitions", &[("QUIVER_COMPACTION__ENABLED", "false")]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        data::create_simple(&client, "docs").await;
        client.create_partition("docs", "a").await.expect("create a");
        client.create_partition("docs", "b").await.expect("create b");
        let ds = dataset();
        let rows =
            |from: usize, to: usize| quiver_client::schema::rows(from as i64..to as i64, ds.dim32(), ds.rows(from, to));
        client.insert_into("docs", "a", rows(0, 500)).await.expect("insert a");
        client.insert_into("docs", "b", rows(500, 1_000)).await.expect("insert b");
        client.insert("docs", rows(1_000, 1_500)).await.expect("insert _default");
        let e = client.insert_into("docs", "c", rows(0, 1)).await.expect_err("no partition c");
        assert!(e.to_string().contains("partition not found"), "{e}");
        let names: Vec<String> = client.list_partitions("docs").await.unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["_default", "a", "b"]);

        // Growing rows, then sealed ones, then indexed ones: each read sees its partitions only.
        for stage in ["growing", "sealed", "indexed"] {
            match stage {
                "sealed" => {
                    data::flush(&client, "docs").await;
                    data::wait_segments(&client, "docs", 1_500, SegmentState::Flushed, Duration::from_secs(30)).await;
                }
                "indexed" => {
                    let index = data::index(IndexType::Hnsw, MetricType::Ip, 0, 16, 100);
                    client.create_index("docs", index).await.expect("index");
                    data::wait_segments(&client, "docs", 1_500, SegmentState::Indexed, Duration::from_secs(60)).await;
                }
                _ => {}
            }
            assert_eq!(count(&client, &[]).await, 1_500, "{stage}");
            assert_eq!(count(&client, &["a"]).await, 500, "{stage}");
            assert_eq!(count(&client, &["b", "_default"]).await, 1_000, "{stage}");
            let in_b = found(&client, 700, &["b"]).await;
            assert_eq!(in_b[0], 700, "{stage}");
            assert!(in_b.iter().all(|k| (500..1_000).contains(k)), "{stage}: {in_b:?}");
            assert!(!found(&client, 42, &["b"]).await.contains(&42), "{stage}");
            assert_eq!(found(&client, 42, &[]).await[0], 42, "{stage}");
        }
        let segments = client.distribution("docs").await.unwrap().segments;
        let tagged: Vec<Vec<u32>> = segments.iter().map(|s| s.segment.partitions.clone()).collect();
        assert!(tagged.iter().all(|p| p == &[0, 1, 2]), "each segment records its partitions: {tagged:?}");

        // A delete in one partition leaves the others' rows alone.
        let del = client.delete_in("docs", "a", "id < 1000").await.expect("delete in a");
        assert_eq!(del.count, 500);
        assert_eq!((count(&client, &["a"]).await, count(&client, &[]).await), (0, 1_000));

        // Released: not read (and not readable by name); dropped: never read again.
        client.release_partitions("docs", &["b"]).await.expect("release b");
        assert_eq!(count(&client, &[]).await, 500);
        let mut req = data::search("docs", ds.row(700).to_vec(), 5, SearchParams::default(), Consistency::Strong);
        req.partitions = vec!["b".into()];
        let e = client.search(&req).await.expect_err("b is released");
        assert!(e.to_string().contains("not loaded"), "{e}");
        client.drop_partition("docs", "b").await.expect("drop b");
        client.create_partition("docs", "b").await.expect("create b again");
        assert_eq!((count(&client, &["b"]).await, count(&client, &[]).await), (0, 500));
        assert!(!found(&client, 700, &[]).await.contains(&700));

        // Compaction rewrites the segments that held b's rows: only `_default`'s are left.
        let job = client.compact("docs").await.expect("compact");
        assert!(!job.plans.is_empty(), "segments holding a dropped partition are compacted: {job:?}");
        eventually("compaction leaves only _default's rows", Duration::from_secs(90), || async {
            let d = client.distribution("docs").await.map_err(|e| e.to_string())?;
            let rows: u64 = d.segments.iter().map(|s| s.segment.rows).sum();
            let parts: Vec<&Vec<u32>> = d.segments.iter().map(|s| &s.segment.partitions).collect();
            (rows == 500 && parts.iter().all(|p| p.is_empty())).then_some(()).ok_or(format!("{rows} rows, {parts:?}"))
        })
        .await;
        assert_eq!(count(&client, &[]).await, 500);
        assert_eq!(found(&client, 1_200, &["_default"]).await[0], 1_200);
    });
}
