//! A query node's share of a read over sealed segments and the growing rows of a led shard,
//! with deletes: what `search.rs` answers after `shard.rs` has applied a log.
//!
//! Every row of key `k` has the vector `[k, 0]`, so under L2 from the query `[0, 0]` its
//! distance is `k²` and the nearest rows are the smallest keys.

use std::sync::Arc;

use quiver_schemas::{
    CollectionSchema, Column, Consistency, DataType, DmlEntry, Expr, FieldSchema, IndexParams, IndexType, MetricType,
    PrimaryKey, RowBatch, ScalarValue, SearchParams, SegmentInfo, SegmentState, Seq, COUNT_STAR,
};

use super::pool::SearchPool;
use super::search::{is_quick, run_get, run_query, run_search, Filter, QueryPlan, Scope, SearchPlan};
use super::shard::ShardData;
use super::Sealed;
use crate::dml::LogEntry;
use crate::rows::RowStore;
use crate::vector::VectorIndex;

const DIM: usize = 2;

fn batch(keys: &[i64]) -> RowBatch {
    RowBatch {
        pks: keys.iter().map(|&k| PrimaryKey::Int64(k)).collect(),
        dim: DIM as u32,
        vectors: keys.iter().flat_map(|&k| [k as f32, 0.0]).collect(),
        columns: vec![Column {
            name: "tag".into(),
            values: keys.iter().map(|&k| ScalarValue::Int64(k * 10)).collect(),
        }],
        dynamic: Vec::new(),
    }
}

/// A shard this node leads, sealed up to `sealed_seq`.
fn led_shard(sealed_seq: Seq) -> Arc<ShardData> {
    Arc::new(ShardData::new(7, 0, DIM, MetricType::L2, true, sealed_seq))
}

fn insert(shard: &ShardData, seq: Seq, keys: &[i64]) {
    let entry = DmlEntry::Insert { timestamp: 0, rows: batch(keys), partition: 0 };
    shard.apply(LogEntry { seq, prev: seq - 1, entry: Some(entry), batch_rest: 0 }).unwrap();
}

fn delete(shard: &ShardData, seq: Seq, keys: &[i64]) {
    let entry = DmlEntry::Delete { timestamp: 0, pks: keys.iter().map(|&k| PrimaryKey::Int64(k)).collect() };
    shard.apply(LogEntry { seq, prev: seq - 1, entry: Some(entry), batch_rest: 0 }).unwrap();
}

/// Sealed segment `id` holding `(key, seq)` rows, with a FLAT faiss index or brute force.
fn sealed(id: u64, rows: &[(i64, Seq)], indexed: bool) -> Arc<Sealed> {
    sealed_in(id, rows, indexed, 0)
}

/// [`sealed`], its rows in partition `partition`.
fn sealed_in(id: u64, rows: &[(i64, Seq)], indexed: bool, partition: u32) -> Arc<Sealed> {
    let mut store = RowStore::new(DIM);
    for &(key, seq) in rows {
        store.append(&batch(&[key]), seq, partition);
    }
    let info = SegmentInfo {
        partitions: store.partition_set(),
        id,
        collection: 7,
        shard: 0,
        rows: rows.len() as u64,
        start_seq: rows.first().map_or(0, |r| r.1),
        end_seq: rows.last().map_or(0, |r| r.1),
        data_path: String::new(),
        index_path: None,
        state: SegmentState::Flushed,
        mem_size: 0,
        delete_seq: 0,
        compacted_from: Vec::new(),
    };
    let index = indexed.then(|| {
        let params = IndexParams {
            index_type: IndexType::Flat,
            metric: MetricType::L2,
            nlist: 0,
            m: 0,
            nbits: 0,
            ef_construction: 0,
            auto: false,
            name: String::new(),
        };
        VectorIndex::build(&params, DIM, &store.vectors).unwrap()
    });
    Arc::new(Sealed::new(info, store, index, MetricType::L2).unwrap())
}

fn plan(
    k: usize,
    segments: &[(&Arc<Sealed>, &Arc<ShardData>)],
    growing: &[(&Arc<ShardData>, Seq)],
    filter: Option<Filter>,
) -> SearchPlan {
    SearchPlan {
        queries: vec![0.0; DIM],
        dim: DIM,
        k,
        params: SearchParams::default(),
        metric: MetricType::L2,
        segments: segments.iter().map(|(s, d)| (Arc::clone(s), Arc::clone(d))).collect(),
        growing: growing.iter().map(|(d, after)| (Arc::clone(d), *after)).collect(),
        output_fields: vec!["tag".into()],
        filter,
        scope: Default::default(),
        deadline: None,
    }
}

/// A search pool of more threads than the machine may have: pieces really run side by side.
fn pool() -> SearchPool {
    SearchPool::new(3).unwrap()
}

/// The keys and distances a plan finds for its one query, best first.
fn found(plan: &SearchPlan) -> (Vec<i64>, Vec<f32>) {
    let results = run_search(plan, &pool()).unwrap().0;
    assert_eq!(results.results.len(), 1, "one list per query");
    let hits = &results.results[0];
    assert_eq!(hits.columns[0].values.len(), hits.pks.len(), "one tag per hit");
    for (pk, tag) in hits.pks.iter().zip(&hits.columns[0].values) {
        assert_eq!(ScalarValue::Int64(key(pk) * 10), *tag, "each hit with its own row's columns");
    }
    (hits.pks.iter().map(key).collect(), hits.scores.clone())
}

fn key(pk: &PrimaryKey) -> i64 {
    match pk {
        PrimaryKey::Int64(k) => *k,
        PrimaryKey::VarChar(_) => -1,
    }
}

#[test]
fn growing_search_returns_exactly_the_live_nearest_rows() {
    let shard = led_shard(0);
    insert(&shard, 1, &[5, 1, 9]);
    insert(&shard, 2, &[2, 3, 7, 4]);
    delete(&shard, 3, &[1, 3, 42]);
    let (keys, scores) = found(&plan(3, &[], &[(&shard, 0)], None));
    assert_eq!(keys, [2, 4, 5], "1 and 3 are deleted");
    assert_eq!(scores, [4.0, 16.0, 25.0]);
    // Written again after its delete: visible again.
    insert(&shard, 4, &[1]);
    assert_eq!(found(&plan(3, &[], &[(&shard, 0)], None)).0, [1, 2, 4]);
    // k larger than the live rows: every live row, once.
    assert_eq!(found(&plan(50, &[], &[(&shard, 0)], None)).0, [1, 2, 4, 5, 7, 9]);
}

#[test]
fn growing_rows_at_or_below_the_requests_sealed_position_are_left_to_segments() {
    let shard = led_shard(0);
    insert(&shard, 1, &[1]);
    insert(&shard, 2, &[2]);
    insert(&shard, 3, &[3]);
    assert_eq!(found(&plan(10, &[], &[(&shard, 2)], None)).0, [3], "rows 1 and 2 are in a segment the request has");
    // The shard sealed past the request's view: its segment list lacks rows, so it must refresh.
    shard.advance_sealed(2).unwrap();
    let stale = run_search(&plan(10, &[], &[(&shard, 1)], None), &pool()).unwrap_err();
    assert!(matches!(stale, quiver_runtime::Error::Stale(_)), "{stale}");
    assert_eq!(found(&plan(10, &[], &[(&shard, 2)], None)).0, [3], "sealed rows are dropped from growing");
}

#[test]
fn a_lead_whose_log_was_purged_before_it_read_it_refuses_older_views() {
    // The coordinator sent this node a lead sealed at 0, then served the shard's first
    // segments from another node and purged their inserts (1..=3) before this node's reader got
    // there: it reads entry 4 right after its start. A request planned on the layout it was
    // given (sealed at 0) would find key 4 alone and miss 1..=3 without a word.
    let shard = led_shard(0);
    let entry = DmlEntry::Insert { timestamp: 0, rows: batch(&[4]), partition: 0 };
    shard.apply(LogEntry { seq: 4, prev: 0, entry: Some(entry), batch_rest: 0 }).unwrap();
    for after in [0, 2] {
        let stale = run_search(&plan(10, &[], &[(&shard, after)], None), &pool()).unwrap_err();
        assert!(matches!(stale, quiver_runtime::Error::Stale(_)), "after {after}: {stale}");
        assert!(stale.to_string().contains("purged up to 3"), "{stale}");
    }
    // A fresh layout serves 1..=3 from segments: the growing rows answer for the rest.
    assert_eq!(found(&plan(10, &[], &[(&shard, 3)], None)).0, [4]);
    insert(&shard, 5, &[5]);
    assert_eq!(found(&plan(10, &[], &[(&shard, 3)], None)).0, [4, 5], "contiguous entries are no gap");
    // Gaps below the view (purged before the lead's own sealed position) are harmless.
    let later = led_shard(8);
    let entry = DmlEntry::Insert { timestamp: 0, rows: batch(&[9]), partition: 0 };
    later.apply(LogEntry { seq: 9, prev: 0, entry: Some(entry), batch_rest: 0 }).unwrap();
    assert_eq!(found(&plan(10, &[], &[(&later, 8)], None)).0, [9]);
}

#[test]
fn inserts_at_or_below_the_sealed_position_are_not_kept_as_growing() {
    // A leader that starts after a seal reads the log from the start: the sealed part is skipped.
    let shard = led_shard(2);
    insert(&shard, 1, &[1]);
    insert(&shard, 2, &[2]);
    insert(&shard, 3, &[3]);
    assert_eq!(found(&plan(10, &[], &[(&shard, 2)], None)).0, [3]);
    // A node that only holds segments of the shard keeps no growing rows, only its deletes.
    let follower = Arc::new(ShardData::new(7, 0, DIM, MetricType::L2, false, 0));
    insert(&follower, 1, &[1]);
    delete(&follower, 2, &[1]);
    assert!(follower.growing.read().unwrap().rows.is_empty());
    assert!(follower.deletes.read().unwrap().hides(&PrimaryKey::Int64(1), 1));
}

#[test]
fn sealed_and_growing_rows_are_searched_together() {
    for indexed in [false, true] {
        let shard = led_shard(5);
        let segment = sealed(1, &[(1, 1), (3, 2), (5, 3), (7, 4), (9, 5)], indexed);
        insert(&shard, 6, &[2, 4]);
        insert(&shard, 7, &[6]);
        let (keys, scores) = found(&plan(4, &[(&segment, &shard)], &[(&shard, 5)], None));
        assert_eq!(keys, [1, 2, 3, 4], "indexed: {indexed}");
        assert_eq!(scores, [1.0, 4.0, 9.0, 16.0]);
        assert_eq!(found(&plan(20, &[(&segment, &shard)], &[(&shard, 5)], None)).0, [1, 2, 3, 4, 5, 6, 7, 9]);
    }
}

#[test]
fn deletes_read_after_a_segments_rows_apply_to_it() {
    for indexed in [false, true] {
        let shard = led_shard(5);
        let segment = sealed(1, &[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)], indexed);
        // Delete 1 and 2 after they were sealed, and 9, which the segment does not have.
        delete(&shard, 6, &[1, 2, 9]);
        let (keys, _) = found(&plan(2, &[(&segment, &shard)], &[(&shard, 5)], None));
        assert_eq!(keys, [3, 4], "k rows still found past the deleted ones (indexed: {indexed})");
        // Key 3 written again in growing after the segment: the growing version replaces it,
        // and a delete between the two hides only the old one.
        delete(&shard, 7, &[3]);
        insert(&shard, 8, &[3]);
        let (keys, _) = found(&plan(10, &[(&segment, &shard)], &[(&shard, 5)], None));
        assert_eq!(keys, [3, 4, 5], "indexed: {indexed}");
    }
}

/// Many segments (indexed and not) and growing rows, a batch of queries (the BLAS path) and
/// deletes: the pieces the pool runs merge into exactly the brute-force answer over the live
/// rows, with any pool size.
#[test]
fn pieces_on_the_pool_merge_into_the_exact_answer() {
    let shard = led_shard(600);
    let mut segments = Vec::new();
    for s in 0..6u64 {
        let rows: Vec<(i64, Seq)> = (0..100).map(|r| ((s * 100 + r) as i64, s * 100 + r + 1)).collect();
        segments.push(sealed(s, &rows, s % 2 == 0));
    }
    for seq in 601..=700u64 {
        insert(&shard, seq, &[seq as i64 - 1]);
    }
    delete(&shard, 701, &(0..700).step_by(7).collect::<Vec<i64>>());
    let live: Vec<i64> = (0..700).filter(|k| k % 7 != 0).collect();
    // Queries at [q, 0] for 25 q: the nearest keys are the live ones closest to q.
    let queries: Vec<f32> = (0..25).flat_map(|q| [(q * 29) as f32 + 0.25, 0.0]).collect();
    let segs: Vec<_> = segments.iter().map(|s| (s, &shard)).collect();
    let mut p = plan(5, &segs, &[(&shard, 600)], None);
    p.queries = queries.clone();
    for threads in [1, 2, 5] {
        let found = run_search(&p, &SearchPool::new(threads).unwrap()).unwrap().0;
        for (q, hits) in queries.chunks(DIM).zip(&found.results) {
            let mut want = live.clone();
            want.sort_by(|a, b| (*a as f32 - q[0]).abs().total_cmp(&(*b as f32 - q[0]).abs()));
            assert_eq!(hits.pks.iter().map(key).collect::<Vec<_>>(), want[..5], "{threads} threads, query {q:?}");
        }
    }
}

#[test]
fn a_search_past_its_deadline_is_refused_with_a_clear_error() {
    let shard = led_shard(0);
    insert(&shard, 1, &[1, 2, 3]);
    let mut p = plan(3, &[], &[(&shard, 0)], None);
    p.deadline = Some(std::time::Instant::now());
    let late = run_search(&p, &pool()).unwrap_err();
    assert!(matches!(late, quiver_runtime::Error::DeadlineExceeded(_)), "{late}");
    assert!(late.to_string().contains("fewer queries"), "{late}");
}

#[test]
fn a_delete_before_a_row_was_written_does_not_hide_it() {
    let shard = led_shard(0);
    delete(&shard, 1, &[4]);
    insert(&shard, 2, &[4]);
    assert_eq!(found(&plan(5, &[], &[(&shard, 0)], None)).0, [4]);
}

#[test]
fn filtered_searches_skip_deleted_rows_too() {
    let field = |name: &str, is_primary| FieldSchema {
        name: name.into(),
        data_type: DataType::Int64,
        is_primary,
        auto_id: false,
        dim: 0,
        max_length: 0,
        description: String::new(),
    };
    let schema = CollectionSchema {
        name: "docs".into(),
        description: String::new(),
        fields: vec![field("id", true), field("tag", false)],
        enable_dynamic_field: false,
        num_shards: 1,
        consistency: Consistency::Bounded,
    };
    let expr = quiver_schemas::expr::parse("tag >= 30", &schema).unwrap();
    let filter = || Filter::from_json(&serde_json::to_string(&expr).unwrap()).unwrap();
    for indexed in [false, true] {
        let shard = led_shard(4);
        let segment = sealed(1, &[(1, 1), (2, 2), (3, 3), (4, 4)], indexed);
        insert(&shard, 5, &[5, 6]);
        delete(&shard, 7, &[3, 5]);
        let (keys, _) = found(&plan(10, &[(&segment, &shard)], &[(&shard, 4)], filter()));
        assert_eq!(keys, [4, 6], "indexed: {indexed}");
    }
}

/// A read of some partitions skips the segments holding none of them and searches those holding
/// only them without a filter; growing rows (any partition) are filtered row by row.
#[test]
fn a_partition_scope_skips_and_unfilters_segments() {
    for indexed in [false, true] {
        let shard = led_shard(4);
        let one = sealed_in(1, &[(1, 1), (2, 2)], indexed, 1);
        let two = sealed_in(2, &[(3, 3), (4, 4)], indexed, 2);
        shard
            .apply(LogEntry {
                seq: 5,
                prev: 4,
                entry: Some(DmlEntry::Insert { timestamp: 0, rows: batch(&[5]), partition: 1 }),
                batch_rest: 0,
            })
            .unwrap();
        insert(&shard, 6, &[6]);
        let json = serde_json::to_string(&Expr::Partition(vec![1])).unwrap();
        let filter = Filter::from_json(&json).unwrap();
        let mut segments = vec![(one.clone(), shard.clone()), (two.clone(), shard.clone())];
        let scope = Scope::narrow(&mut segments, filter.as_ref()).unwrap();
        assert_eq!(segments.len(), 1, "segment 2 holds no row of partition 1");
        assert_eq!(scope.inside, [true]);
        assert!(scope.inside_filter.is_none(), "segment 1 is searched without a filter");
        let mut p = plan(10, &[(&one, &shard)], &[(&shard, 4)], filter);
        p.scope = scope;
        assert!(!is_quick(&p), "growing rows are there");
        let (mut keys, _) = found(&p);
        keys.sort();
        assert_eq!(keys, [1, 2, 5], "indexed: {indexed}");
    }
}

#[test]
fn get_returns_the_latest_visible_version_of_each_key() {
    let shard = led_shard(3);
    let segment = sealed(1, &[(1, 1), (2, 2), (3, 3)], false);
    insert(&shard, 4, &[2]);
    delete(&shard, 5, &[3]);
    let pks: Vec<PrimaryKey> = [3, 2, 1, 8].iter().map(|&k| PrimaryKey::Int64(k)).collect();
    let segments = vec![(segment, shard.clone())];
    let (rows, seqs) = run_get(&pks, &["tag".into()], &segments, &[(shard, 3)], DIM, &[]).unwrap();
    assert_eq!(rows.pks, [PrimaryKey::Int64(2), PrimaryKey::Int64(1)], "3 is deleted, 8 was never written");
    assert_eq!(seqs, [4, 1], "key 2's growing version, written after the sealed one");
    assert_eq!(rows.vectors, [2.0, 0.0, 1.0, 0.0]);
    assert_eq!(rows.columns[0].values, [ScalarValue::Int64(20), ScalarValue::Int64(10)]);
}

#[test]
fn query_lists_live_rows_in_key_order_and_counts_them() {
    let shard = led_shard(3);
    let segment = sealed(1, &[(5, 1), (1, 2), (3, 3)], false);
    insert(&shard, 4, &[4, 5]);
    delete(&shard, 5, &[1]);
    let query = |fields: &[&str], limit: u64| QueryPlan {
        filter: None,
        scope: Default::default(),
        output_fields: fields.iter().map(|f| f.to_string()).collect(),
        limit,
        dim: DIM,
        vector_field: "v".into(),
        segments: vec![(segment.clone(), shard.clone())],
        growing: vec![(shard.clone(), 3)],
    };
    let (rows, seqs) = run_query(&query(&["tag"], 0)).unwrap();
    assert_eq!(rows.pks.iter().map(key).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(seqs, [3, 4, 4], "key 5 once, its newer version");
    assert!(rows.vectors.is_empty(), "no vectors unless asked for");
    let (rows, _) = run_query(&query(&["tag", "v"], 2)).unwrap();
    assert_eq!(rows.pks.iter().map(key).collect::<Vec<_>>(), [3, 4], "the first rows in key order");
    assert_eq!(rows.vectors, [3.0, 0.0, 4.0, 0.0]);
    let (count, seqs) = run_query(&query(&[COUNT_STAR], 0)).unwrap();
    assert_eq!(count.columns[0].values, [ScalarValue::Int64(3)]);
    assert!(count.pks.is_empty() && seqs.is_empty());
}

#[test]
fn only_the_offline_node_of_a_live_hand_off_releases() {
    let change = quiver_schemas::SegmentChangeInfo {
        collection: 1,
        online_node_id: "q2".into(),
        online_segment_ids: vec![5],
        offline_node_id: "q1".into(),
        offline_segment_ids: vec![5],
        reason: "balance".into(),
        at_ms: 1,
        released_ms: 0,
    };
    assert!(super::releases(&change, "q1"));
    assert!(!super::releases(&change, "q2"), "the online node keeps them");
    let failover = quiver_schemas::SegmentChangeInfo { reason: "failover".into(), released_ms: 1, ..change.clone() };
    assert!(!super::releases(&failover, "q1"), "a fail-over's offline node is gone");
    let restarted = quiver_schemas::SegmentChangeInfo { online_node_id: "q1".into(), ..change };
    assert!(!super::releases(&restarted, "q1"), "a restarted node keeps what it reloaded");
}
