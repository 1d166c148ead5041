//! Checks on the replies a proxy gets from other nodes (STYLE 17: trust nothing that crosses a
//! wire, peers included). Each reply type is checked once, where it arrives, against what was
//! asked: the merges and the Milvus adapter then rely on the shapes checked here. Every check
//! is one pass over the reply; nothing is copied.
//!
//! A malformed reply is never the user's fault, so it is an [`Error::Internal`] naming the node.
//! Not [`Error::Unavailable`], which would send the share to another replica: a reply that
//! breaks the protocol comes from a bug or from nodes of different versions, so every replica
//! would most likely answer the same, and retrying would spend the whole read's attempts (~5 s)
//! only to report the bug as "unavailable".

use std::collections::HashSet;

use quiver_runtime::{Error, Result};
use quiver_schemas::{
    CollectionInfo, Column, DataType, Distribution, GetResults, Hits, NodeSearchResults, PrimaryKey, ScalarValue,
    COUNT_STAR,
};

use crate::coordinator::MAX_SHARDS;

fn malformed(node: &str, what: String) -> Error {
    Error::Internal(format!("malformed reply from query node {node}: {what}"))
}

/// The type of a collection's primary key (its layout was checked to have an Int64 or VarChar one).
pub(super) fn pk_type(info: &CollectionInfo) -> DataType {
    info.primary_field().map_or(DataType::Int64, |f| f.data_type)
}

fn key_type(pk: &PrimaryKey) -> DataType {
    match pk {
        PrimaryKey::Int64(_) => DataType::Int64,
        PrimaryKey::VarChar(_) => DataType::VarChar,
    }
}

/// The first key that is not of the collection's key type, as an error message.
fn wrong_key<'a>(pks: impl IntoIterator<Item = &'a PrimaryKey>, pk_type: DataType) -> Option<String> {
    pks.into_iter()
        .find(|pk| key_type(pk) != pk_type)
        .map(|pk| format!("primary key {pk:?} is not {pk_type:?} like the collection's"))
}

/// `columns` are exactly `names`, in order, each with `rows` values.
fn check_columns(columns: &[Column], names: &[String], rows: usize) -> Result<(), String> {
    if columns.len() != names.len() || columns.iter().zip(names).any(|(c, n)| c.name != *n) {
        let got: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        return Err(format!("columns {got:?} instead of the requested {names:?}"));
    }
    match columns.iter().find(|c| c.values.len() != rows) {
        Some(c) => Err(format!("column {:?} has {} values for {rows} rows", c.name, c.values.len())),
        None => Ok(()),
    }
}

/// What every node's share of a search must look like.
pub(super) struct SearchShape<'a> {
    /// Query vectors: one [`Hits`] each.
    pub nq: usize,
    /// At most this many hits per query.
    pub k: usize,
    /// The output fields asked for: the columns of every [`Hits`], in this order.
    pub fields: &'a [String],
    pub pk_type: DataType,
}

/// Checks a query node's share of a search.
pub(super) fn check_search(node: &str, reply: &NodeSearchResults, want: &SearchShape) -> Result<()> {
    if reply.results.len() != want.nq {
        return Err(malformed(node, format!("{} result lists for {} query vectors", reply.results.len(), want.nq)));
    }
    for (q, hits) in reply.results.iter().enumerate() {
        check_hits(hits, want).map_err(|what| malformed(node, format!("query {q}: {what}")))?;
    }
    Ok(())
}

fn check_hits(hits: &Hits, want: &SearchShape) -> Result<(), String> {
    let n = hits.pks.len();
    if hits.scores.len() != n {
        return Err(format!("{n} ids but {} scores", hits.scores.len()));
    }
    if n > want.k {
        return Err(format!("{n} hits for top_k {}", want.k));
    }
    check_columns(&hits.columns, want.fields, n)?;
    wrong_key(&hits.pks, want.pk_type).map_or(Ok(()), Err)
}

/// What every node's rows for a get or a query must look like.
pub(super) struct RowsShape<'a> {
    /// At most this many rows (the keys asked for; a query's offset + limit).
    pub max_rows: usize,
    /// The scalar columns asked for, in order.
    pub columns: &'a [String],
    /// The vectors' dimension when the rows must carry vectors; `None` when they must not.
    pub dim: Option<usize>,
    pub pk_type: DataType,
}

/// Checks a query node's rows (its share of a get-by-key or of a query).
pub(super) fn check_rows(node: &str, reply: &GetResults, want: &RowsShape) -> Result<()> {
    let rows = &reply.rows;
    let n = rows.pks.len();
    let bad = |what: String| Err(malformed(node, what));
    if n > want.max_rows {
        return bad(format!("{n} rows where at most {} were asked for", want.max_rows));
    }
    if reply.seqs.len() != n {
        return bad(format!("{} log positions for {n} rows", reply.seqs.len()));
    }
    match want.dim {
        Some(dim) if rows.dim as usize != dim => {
            return bad(format!("{}-dimensional vectors in a {dim}-dimensional collection", rows.dim));
        }
        Some(dim) if Some(rows.vectors.len()) != n.checked_mul(dim) => {
            return bad(format!("{} floats for {n} rows of dimension {dim}", rows.vectors.len()));
        }
        None if !rows.vectors.is_empty() => {
            return bad(format!("{} floats of vectors that were not asked for", rows.vectors.len()));
        }
        _ => {}
    }
    if !rows.dynamic.is_empty() && rows.dynamic.len() != n {
        return bad(format!("{} dynamic-field values for {n} rows", rows.dynamic.len()));
    }
    check_columns(&rows.columns, want.columns, n).or_else(bad)?;
    wrong_key(&rows.pks, want.pk_type).map_or(Ok(()), bad)
}

/// Checks a query node's `count(*)` answer: one column with one non-negative count, and no rows.
pub(super) fn check_count(node: &str, reply: &GetResults) -> Result<()> {
    let count = match reply.rows.columns.as_slice() {
        [c] if c.name == COUNT_STAR => c.values.as_slice(),
        _ => &[],
    };
    match count {
        [ScalarValue::Int64(n)] if *n >= 0 && reply.rows.pks.is_empty() => Ok(()),
        _ => Err(malformed(node, format!("not one {COUNT_STAR} column with one count: {:?}", reply.rows.columns))),
    }
}

/// Checks the coordinator's serving layout of collection `name`: the parts a read plans with
/// (shards, segments and their log positions) must be consistent, or a read could count rows
/// twice or not at all.
pub(super) fn check_distribution(name: &str, dist: &Distribution) -> Result<()> {
    let bad =
        |what: String| Err(Error::Internal(format!("malformed reply from coordinator: layout of {name:?}: {what}")));
    let info = &dist.collection;
    if info.schema.name != name {
        return bad(format!("it is the layout of {:?}", info.schema.name));
    }
    let shards = info.schema.num_shards;
    if shards == 0 || shards > MAX_SHARDS {
        return bad(format!("{shards} shards (1 to {MAX_SHARDS})"));
    }
    if info.dim() == 0 {
        return bad("no vector field with a dimension".into());
    }
    if !matches!(info.primary_field().map(|f| f.data_type), Some(DataType::Int64 | DataType::VarChar)) {
        return bad("no Int64 or VarChar primary key".into());
    }
    // Each shard's leaders are listed together (the planner takes each shard's growing rows
    // once per run of equal shard ids).
    let mut listed: Vec<(u32, u64)> = Vec::new();
    for p in &dist.shards {
        if p.shard >= shards {
            return bad(format!("shard {} of {shards}", p.shard));
        }
        match listed.last() {
            Some(&(last, _)) if last == p.shard => {}
            _ if listed.iter().any(|&(s, _)| s == p.shard) => {
                return bad(format!("the leaders of shard {} are not listed together", p.shard));
            }
            _ => listed.push((p.shard, p.sealed_seq)),
        }
    }
    let mut ids = HashSet::with_capacity(dist.segments.len());
    for s in dist.segments.iter().map(|p| &p.segment) {
        if !ids.insert(s.id) {
            return bad(format!("segment {} is listed twice", s.id));
        }
        if s.collection != info.id {
            return bad(format!("segment {} belongs to collection {}, not {}", s.id, s.collection, info.id));
        }
        if s.start_seq > s.end_seq {
            return bad(format!("segment {} starts at {} after its end {}", s.id, s.start_seq, s.end_seq));
        }
        // Growing rows are served after the shard's sealed position: a segment past it would
        // be counted twice.
        match listed.iter().find(|&&(shard, _)| shard == s.shard) {
            None => return bad(format!("segment {} is in shard {}, which is not listed", s.id, s.shard)),
            Some(&(_, sealed)) if s.end_seq > sealed => {
                return bad(format!(
                    "segment {} ends at {} after its shard's sealed position {sealed}",
                    s.id, s.end_seq
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use quiver_schemas::{
        CollectionSchema, Consistency, FieldSchema, RowBatch, SegmentInfo, SegmentPlacement, SegmentState,
        ShardPlacement,
    };

    use super::*;

    fn pks(keys: &[i64]) -> Vec<PrimaryKey> {
        keys.iter().map(|&k| PrimaryKey::Int64(k)).collect()
    }

    fn column(name: &str, n: usize) -> Column {
        Column { name: name.into(), values: vec![ScalarValue::Int64(1); n] }
    }

    fn fields() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn good_hits(n: usize) -> Hits {
        Hits {
            pks: pks(&(0..n as i64).collect::<Vec<_>>()),
            scores: vec![0.5; n],
            columns: vec![column("a", n), column("b", n)],
        }
    }

    /// Checks a reply of two queries whose second list is `second`, for top_k 3.
    fn search_with(second: Hits) -> Result<()> {
        let fields = fields();
        let want = SearchShape { nq: 2, k: 3, fields: &fields, pk_type: DataType::Int64 };
        let reply = NodeSearchResults { results: vec![good_hits(3), second], ..Default::default() };
        check_search("q1", &reply, &want)
    }

    fn rejected(result: Result<()>, words: &str) {
        match result {
            Err(Error::Internal(m)) => assert!(m.contains(words), "{m:?} should say {words:?}"),
            other => panic!("expected an internal error saying {words:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_search_reply_passes() {
        search_with(good_hits(0)).unwrap();
        search_with(good_hits(2)).unwrap();
    }

    #[test]
    fn search_replies_that_break_the_protocol_are_rejected() {
        let fields = fields();
        let want = SearchShape { nq: 2, k: 3, fields: &fields, pk_type: DataType::Int64 };
        let one = NodeSearchResults { results: vec![good_hits(1)], ..Default::default() };
        rejected(check_search("q1", &one, &want), "malformed reply from query node q1: 1 result lists for 2");
        rejected(search_with(good_hits(4)), "query 1: 4 hits for top_k 3");
        let mut h = good_hits(2);
        h.scores.pop();
        rejected(search_with(h), "2 ids but 1 scores");
        let mut h = good_hits(2);
        h.scores.push(0.1);
        rejected(search_with(h), "2 ids but 3 scores");
        let mut h = good_hits(2);
        h.columns[1].values.pop();
        rejected(search_with(h), "column \"b\" has 1 values for 2 rows");
        let mut h = good_hits(2);
        h.columns.swap(0, 1);
        rejected(search_with(h), "columns [\"b\", \"a\"] instead of the requested [\"a\", \"b\"]");
        let mut h = good_hits(2);
        h.columns.pop();
        rejected(search_with(h), "instead of the requested");
        let mut h = good_hits(2);
        h.pks[1] = PrimaryKey::VarChar("x".into());
        rejected(search_with(h), "primary key VarChar(\"x\") is not Int64");
    }

    fn good_rows(n: usize, dim: usize) -> GetResults {
        GetResults {
            rows: RowBatch {
                pks: pks(&(0..n as i64).collect::<Vec<_>>()),
                dim: dim as u32,
                vectors: vec![0.5; n * dim],
                columns: vec![column("a", n), column("b", n)],
                dynamic: Vec::new(),
            },
            seqs: vec![7; n],
        }
    }

    fn rows_with(reply: &GetResults, dim: Option<usize>) -> Result<()> {
        let fields = fields();
        check_rows("q2", reply, &RowsShape { max_rows: 3, columns: &fields, dim, pk_type: DataType::Int64 })
    }

    #[test]
    fn well_formed_rows_pass() {
        rows_with(&good_rows(3, 4), Some(4)).unwrap();
        rows_with(&good_rows(0, 4), Some(4)).unwrap();
        rows_with(&good_rows(2, 0), None).unwrap();
        let mut with_dynamic = good_rows(2, 4);
        with_dynamic.rows.dynamic = vec![String::new(), "{}".into()];
        rows_with(&with_dynamic, Some(4)).unwrap();
    }

    #[test]
    fn rows_that_break_the_protocol_are_rejected() {
        rejected(rows_with(&good_rows(4, 4), Some(4)), "malformed reply from query node q2: 4 rows where at most 3");
        let mut r = good_rows(2, 4);
        r.seqs.pop();
        rejected(rows_with(&r, Some(4)), "1 log positions for 2 rows");
        rejected(rows_with(&good_rows(2, 3), Some(4)), "3-dimensional vectors in a 4-dimensional collection");
        let mut r = good_rows(2, 4);
        r.rows.vectors.pop();
        rejected(rows_with(&r, Some(4)), "7 floats for 2 rows of dimension 4");
        rejected(rows_with(&good_rows(2, 4), None), "8 floats of vectors that were not asked for");
        let mut r = good_rows(2, 4);
        r.rows.dynamic = vec!["{}".into()];
        rejected(rows_with(&r, Some(4)), "1 dynamic-field values for 2 rows");
        let mut r = good_rows(2, 4);
        r.rows.columns[0].values.push(ScalarValue::Null);
        rejected(rows_with(&r, Some(4)), "column \"a\" has 3 values for 2 rows");
        let mut r = good_rows(2, 4);
        r.rows.columns.pop();
        rejected(rows_with(&r, Some(4)), "columns [\"a\"] instead of the requested");
        let mut r = good_rows(2, 4);
        r.rows.pks[0] = PrimaryKey::VarChar("0".into());
        rejected(rows_with(&r, Some(4)), "is not Int64");
    }

    #[test]
    fn a_count_is_one_non_negative_number() {
        let count =
            |columns: Vec<Column>| GetResults { rows: RowBatch { columns, ..Default::default() }, seqs: vec![] };
        let one = |v: ScalarValue| vec![Column { name: COUNT_STAR.into(), values: vec![v] }];
        check_count("q3", &count(one(ScalarValue::Int64(0)))).unwrap();
        check_count("q3", &count(one(ScalarValue::Int64(42)))).unwrap();
        rejected(check_count("q3", &count(one(ScalarValue::Int64(-1)))), "malformed reply from query node q3");
        rejected(check_count("q3", &count(one(ScalarValue::Double(1.0)))), "count(*)");
        rejected(check_count("q3", &count(Vec::new())), "count(*)");
        let two = Column { name: COUNT_STAR.into(), values: vec![ScalarValue::Int64(1), ScalarValue::Int64(2)] };
        rejected(check_count("q3", &count(vec![two])), "count(*)");
        rejected(check_count("q3", &count(vec![column("a", 1)])), "count(*)");
        let mut with_rows = count(one(ScalarValue::Int64(1)));
        with_rows.rows.pks = pks(&[1]);
        rejected(check_count("q3", &with_rows), "count(*)");
    }

    fn field(name: &str, data_type: DataType, is_primary: bool, dim: u32) -> FieldSchema {
        FieldSchema {
            name: name.into(),
            data_type,
            is_primary,
            auto_id: false,
            dim,
            max_length: 0,
            description: String::new(),
        }
    }

    fn segment(id: u64, shard: u32, start_seq: u64, end_seq: u64) -> SegmentPlacement {
        SegmentPlacement {
            segment: SegmentInfo {
                partitions: Default::default(),
                id,
                collection: 7,
                shard,
                rows: 10,
                start_seq,
                end_seq,
                data_path: String::new(),
                index_path: None,
                state: SegmentState::Flushed,
                mem_size: 0,
                delete_seq: 0,
                compacted_from: Vec::new(),
            },
            nodes: vec!["qa".into()],
        }
    }

    fn leader(shard: u32, leader: &str, sealed_seq: u64, replica: u32) -> ShardPlacement {
        ShardPlacement { shard, leader: leader.into(), sealed_seq, replica }
    }

    /// Two shards, each led in two replica groups, with sealed segments below their positions.
    fn layout() -> Distribution {
        let schema = CollectionSchema {
            name: "docs".into(),
            description: String::new(),
            fields: vec![field("id", DataType::Int64, true, 0), field("v", DataType::FloatVector, false, 4)],
            enable_dynamic_field: false,
            num_shards: 2,
            consistency: Consistency::Bounded,
        };
        Distribution {
            collection: CollectionInfo {
                partitions: Default::default(),
                id: 7,
                schema,
                index: None,
                created_ts: 0,
                scalar_indexes: Vec::new(),
            },
            shards: vec![
                leader(0, "qa", 100, 0),
                leader(0, "qb", 100, 1),
                leader(1, "qa", 50, 0),
                leader(1, "", 50, 1),
            ],
            segments: vec![segment(1, 0, 1, 60), segment(2, 0, 61, 100), segment(3, 1, 1, 50)],
            version: 3,
            released: false,
            replicas: Vec::new(),
            unserved: Vec::new(),
        }
    }

    fn coordinator_rejects(d: &Distribution, words: &str) {
        match check_distribution("docs", d) {
            Err(Error::Internal(m)) => {
                assert!(m.starts_with("malformed reply from coordinator"), "{m}");
                assert!(m.contains(words), "{m:?} should say {words:?}");
            }
            other => panic!("expected an internal error saying {words:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_consistent_layout_passes() {
        check_distribution("docs", &layout()).unwrap();
        // A collection whose layout is not placed yet lists nothing.
        check_distribution("docs", &Distribution { shards: Vec::new(), segments: Vec::new(), ..layout() }).unwrap();
    }

    #[test]
    fn inconsistent_layouts_are_rejected() {
        let mut d = layout();
        d.collection.schema.name = "other".into();
        coordinator_rejects(&d, "it is the layout of \"other\"");
        for shards in [0, MAX_SHARDS + 1] {
            let mut d = layout();
            d.collection.schema.num_shards = shards;
            coordinator_rejects(&d, &format!("{shards} shards"));
        }
        let mut d = layout();
        d.collection.schema.fields.pop();
        coordinator_rejects(&d, "no vector field");
        let mut d = layout();
        d.collection.schema.fields[0].data_type = DataType::Double;
        coordinator_rejects(&d, "no Int64 or VarChar primary key");
        let mut d = layout();
        d.shards.push(leader(2, "qa", 0, 0));
        coordinator_rejects(&d, "shard 2 of 2");
        let mut d = layout();
        d.shards.swap(1, 2);
        coordinator_rejects(&d, "the leaders of shard 0 are not listed together");
        let mut d = layout();
        d.segments.push(segment(2, 1, 1, 2));
        coordinator_rejects(&d, "segment 2 is listed twice");
        let mut d = layout();
        d.segments[0].segment.collection = 8;
        coordinator_rejects(&d, "segment 1 belongs to collection 8, not 7");
        let mut d = layout();
        d.segments[0].segment.start_seq = 70;
        coordinator_rejects(&d, "segment 1 starts at 70 after its end 60");
        let mut d = layout();
        d.segments[2].segment.end_seq = 51;
        coordinator_rejects(&d, "segment 3 ends at 51 after its shard's sealed position 50");
        let mut d = layout();
        d.shards.truncate(2);
        coordinator_rejects(&d, "segment 3 is in shard 1, which is not listed");
    }
}
