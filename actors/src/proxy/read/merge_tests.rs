//! The merges of node replies: search top-k, get by key, query rows, count and paging.

use quiver_schemas::{Column, PrimaryKey, ScalarValue};

use super::*;

fn pk(i: i64) -> PrimaryKey {
    PrimaryKey::Int64(i)
}

/// Hits `(key, score)`, best first as a node sends them, with a `from` column naming `node`.
fn hits(node: &str, list: &[(i64, f32)]) -> Hits {
    Hits {
        pks: list.iter().map(|&(k, _)| pk(k)).collect(),
        scores: list.iter().map(|&(_, s)| s).collect(),
        columns: vec![Column { name: "from".into(), values: vec![ScalarValue::VarChar(node.into()); list.len()] }],
    }
}

fn share(queries: Vec<Hits>) -> SearchResults {
    SearchResults { results: queries }
}

fn keys(h: &Hits) -> Vec<i64> {
    h.pks.iter().map(|p| if let PrimaryKey::Int64(i) = p { *i } else { -1 }).collect()
}

fn from(h: &Hits) -> Vec<String> {
    h.columns[0].values.iter().map(|v| if let ScalarValue::VarChar(s) = v { s.clone() } else { "?".into() }).collect()
}

#[test]
fn search_merge_keeps_the_lowest_distances_for_l2() {
    let a = share(vec![hits("a", &[(1, 0.1), (2, 0.4), (3, 0.9)])]);
    let b = share(vec![hits("b", &[(4, 0.2), (5, 0.3), (6, 0.5)])]);
    let merged = merge(vec![a, b], 1, 4, false);
    assert_eq!(keys(&merged.results[0]), [1, 4, 5, 2]);
    assert_eq!(merged.results[0].scores, [0.1, 0.2, 0.3, 0.4]);
    assert_eq!(from(&merged.results[0]), ["a", "b", "b", "a"], "columns follow their hits");
}

#[test]
fn search_merge_keeps_the_highest_scores_for_ip_and_cosine() {
    let a = share(vec![hits("a", &[(1, 0.9), (2, 0.5)])]);
    let b = share(vec![hits("b", &[(3, 0.95), (4, 0.1)])]);
    let merged = merge(vec![a, b], 1, 3, true);
    assert_eq!(keys(&merged.results[0]), [3, 1, 2]);
    assert_eq!(merged.results[0].scores, [0.95, 0.9, 0.5]);
}

#[test]
fn search_merge_keeps_each_key_once_with_its_best_score() {
    // Key 7 from two replicas' segments (or a key inserted twice without upsert): one hit,
    // the better one; the next key takes the freed place.
    let a = share(vec![hits("a", &[(7, 0.3), (1, 0.6)])]);
    let b = share(vec![hits("b", &[(7, 0.2), (2, 0.5)])]);
    let merged = merge(vec![a, b], 1, 3, false);
    assert_eq!(keys(&merged.results[0]), [7, 2, 1]);
    assert_eq!(merged.results[0].scores, [0.2, 0.5, 0.6]);
    assert_eq!(from(&merged.results[0]), ["b", "b", "a"], "the kept hit's own columns");
}

#[test]
fn search_merge_breaks_ties_in_node_order() {
    let a = share(vec![hits("a", &[(1, 0.5), (2, 0.5)])]);
    let b = share(vec![hits("b", &[(3, 0.5), (1, 0.5)])]);
    let merged = merge(vec![a, b], 1, 3, false);
    assert_eq!(keys(&merged.results[0]), [1, 2, 3]);
    assert_eq!(from(&merged.results[0]), ["a", "a", "b"]);
}

#[test]
fn search_merge_with_k_larger_than_the_hits_returns_them_all() {
    let a = share(vec![hits("a", &[(1, 0.1)])]);
    let b = share(vec![hits("b", &[(2, 0.2)])]);
    let merged = merge(vec![a, b], 1, 100, false);
    assert_eq!(keys(&merged.results[0]), [1, 2]);
}

#[test]
fn search_merge_per_query_and_with_empty_shares() {
    let a = share(vec![hits("a", &[(1, 0.1)]), hits("a", &[])]);
    let b = share(vec![hits("b", &[]), hits("b", &[(2, 0.2), (3, 0.3)])]);
    let empty = share(vec![hits("c", &[]), hits("c", &[])]);
    let merged = merge(vec![a, b, empty], 2, 2, false);
    assert_eq!(merged.results.len(), 2);
    assert_eq!(keys(&merged.results[0]), [1]);
    assert_eq!(keys(&merged.results[1]), [2, 3]);
    // No share at all (nothing to search): one empty list per query.
    let none = merge(Vec::new(), 3, 10, false);
    assert_eq!(none.results.len(), 3);
    assert!(none.results.iter().all(|h| h.pks.is_empty()));
    // One share is the answer as it is (it was checked to have at most k hits per query).
    let one = share(vec![hits("a", &[(1, 0.1), (2, 0.2)])]);
    assert_eq!(merge(vec![one.clone()], 1, 2, false), one);
}

/// A node's rows for keys `(key, seq)`, each with dimension-2 vector `[key, seq]` and a
/// `from` column naming `node`.
fn rows(node: &str, list: &[(i64, u64)]) -> GetResults {
    GetResults {
        rows: RowBatch {
            pks: list.iter().map(|&(k, _)| pk(k)).collect(),
            dim: 2,
            vectors: list.iter().flat_map(|&(k, s)| [k as f32, s as f32]).collect(),
            columns: vec![Column { name: "from".into(), values: vec![ScalarValue::VarChar(node.into()); list.len()] }],
            dynamic: Vec::new(),
        },
        seqs: list.iter().map(|&(_, s)| s).collect(),
    }
}

fn get_of(keys: &[i64]) -> Get {
    Get {
        collection: "docs".into(),
        pks: keys.iter().map(|&k| pk(k)).collect(),
        output_fields: vec!["from".into()],
        consistency: Consistency::Strong,
    }
}

fn row_keys(r: &RowBatch) -> Vec<i64> {
    r.pks.iter().map(|p| if let PrimaryKey::Int64(i) = p { *i } else { -1 }).collect()
}

#[test]
fn get_merge_keeps_the_newest_version_of_a_key() {
    // Key 5 sealed at position 3 on one node and written again (growing) at 12 on the leader:
    // the newer one wins whichever node answered first.
    let sealed = rows("sealed", &[(5, 3), (6, 4)]);
    let growing = rows("growing", &[(5, 12)]);
    for parts in [vec![sealed.clone(), growing.clone()], vec![growing, sealed]] {
        let merged = merge_get(parts, &get_of(&[5, 6]), 2);
        assert_eq!(row_keys(&merged.rows), [5, 6]);
        assert_eq!(merged.seqs, [12, 4]);
        assert_eq!(merged.rows.vectors, [5.0, 12.0, 6.0, 4.0], "each key's vector from its kept version");
        assert_eq!(merged.rows.columns[0].values[0], ScalarValue::VarChar("growing".into()));
    }
}

#[test]
fn get_merge_answers_in_request_order_each_key_once_without_missing_ones() {
    // Key 2 is deleted (no node returns it); key 3 is asked twice.
    let a = rows("a", &[(1, 1), (3, 2)]);
    let b = rows("b", &[(4, 5)]);
    let merged = merge_get(vec![a, b], &get_of(&[4, 3, 2, 1, 3]), 2);
    assert_eq!(row_keys(&merged.rows), [4, 3, 1]);
    assert_eq!(merged.seqs, [5, 2, 1]);
    assert_eq!(merged.rows.vectors.len(), 3 * 2);
    assert_eq!(merged.rows.columns[0].values.len(), 3);
    let none = merge_get(Vec::new(), &get_of(&[1]), 2);
    assert!(none.rows.pks.is_empty() && none.rows.vectors.is_empty());
}

#[test]
fn query_merge_keeps_the_newest_version_in_key_order() {
    let a = rows("a", &[(1, 1), (5, 3), (9, 2)]);
    let b = rows("b", &[(2, 7), (5, 12)]);
    let merged = merge_query(vec![a, b], 2);
    assert_eq!(row_keys(&merged.rows), [1, 2, 5, 9]);
    assert_eq!(merged.seqs, [1, 7, 12, 2]);
    assert_eq!(merged.rows.vectors, [1.0, 1.0, 2.0, 7.0, 5.0, 12.0, 9.0, 2.0]);
    let from: Vec<&ScalarValue> = merged.rows.columns[0].values.iter().collect();
    assert_eq!(from[2], &ScalarValue::VarChar("b".into()));
    // Rows without vectors (not asked for) stay without.
    let mut bare = rows("c", &[(3, 1)]);
    bare.rows.vectors.clear();
    assert!(merge_query(vec![bare], 2).rows.vectors.is_empty());
}

#[test]
fn query_page_skips_offset_and_cuts_at_limit() {
    let merged = merge_query(vec![rows("a", &[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)])], 2).rows;
    assert_eq!(row_keys(&page(merged.clone(), 0, 0)), [1, 2, 3, 4, 5], "no limit");
    assert_eq!(row_keys(&page(merged.clone(), 1, 2)), [2, 3]);
    assert_eq!(row_keys(&page(merged.clone(), 3, 10)), [4, 5], "a limit past the end");
    assert_eq!(row_keys(&page(merged.clone(), 2, 0)), [3, 4, 5], "an offset without a limit");
    assert!(page(merged.clone(), 9, 1).pks.is_empty(), "an offset past the end");
    let p = page(merged, 1, 2);
    assert_eq!(p.vectors, [2.0, 1.0, 3.0, 1.0], "vectors and columns follow the page");
    assert_eq!(p.columns[0].values.len(), 2);
}

#[test]
fn count_adds_the_nodes_counts() {
    let count = |n: i64| GetResults {
        rows: RowBatch {
            columns: vec![Column { name: COUNT_STAR.into(), values: vec![ScalarValue::Int64(n)] }],
            ..Default::default()
        },
        seqs: Vec::new(),
    };
    let total = merge_count(&[count(3), count(0), count(4)]);
    assert_eq!(total.columns, [Column { name: COUNT_STAR.into(), values: vec![ScalarValue::Int64(7)] }]);
    assert_eq!(merge_count(&[]).columns[0].values, [ScalarValue::Int64(0)], "no node: nothing counted");
    assert_eq!(merge_count(&[count(i64::MAX), count(1)]).columns[0].values, [ScalarValue::Int64(i64::MAX)]);
}
