//! Every request check of the proxy, and the shard a key belongs to.

use quiver_schemas::{CollectionSchema, Column, Consistency, FieldSchema, SearchParams};

use super::*;
use quiver_runtime::config::LimitsConfig;

fn field(name: &str, data_type: DataType) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        data_type,
        is_primary: false,
        auto_id: false,
        dim: if data_type == DataType::FloatVector { 2 } else { 0 },
        max_length: if data_type == DataType::VarChar { 4 } else { 0 },
        description: String::new(),
    }
}

/// Collection "docs": key `id` of `pk_type` (max_length 4 when VarChar), 2-dimensional `v`,
/// scalars `n` (Int64), `x` (Double), `s` (VarChar, max_length 4).
fn info(pk_type: DataType, auto_id: bool, dynamic: bool) -> CollectionInfo {
    let mut id = field("id", pk_type);
    id.is_primary = true;
    id.auto_id = auto_id;
    let schema = CollectionSchema {
        name: "docs".into(),
        description: String::new(),
        fields: vec![
            id,
            field("v", DataType::FloatVector),
            field("n", DataType::Int64),
            field("x", DataType::Double),
            field("s", DataType::VarChar),
        ],
        enable_dynamic_field: dynamic,
        num_shards: 2,
        consistency: Consistency::Bounded,
    };
    CollectionInfo {
        partitions: Default::default(),
        id: 7,
        schema,
        index: None,
        created_ts: 0,
        scalar_indexes: Vec::new(),
    }
}

fn docs() -> CollectionInfo {
    info(DataType::Int64, false, false)
}

fn rejects<T: std::fmt::Debug>(result: Result<T>, words: &str) {
    match result {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(words), "{m:?} should say {words:?}"),
        other => panic!("expected an invalid-argument error saying {words:?}, got {other:?}"),
    }
}

/// Two valid rows for `docs()`.
fn batch() -> RowBatch {
    RowBatch {
        pks: vec![PrimaryKey::Int64(1), PrimaryKey::Int64(2)],
        dim: 2,
        vectors: vec![0.0, 1.0, 2.0, 3.0],
        columns: vec![
            Column { name: "n".into(), values: vec![ScalarValue::Int64(1), ScalarValue::Int64(2)] },
            Column { name: "x".into(), values: vec![ScalarValue::Int64(3), ScalarValue::Float(0.5)] },
            Column {
                name: "s".into(),
                values: vec![ScalarValue::VarChar("ab".into()), ScalarValue::VarChar(String::new())],
            },
        ],
        dynamic: Vec::new(),
    }
}

#[test]
fn a_valid_insert_passes_with_numbers_coerced() {
    let mut rows = batch();
    rows.columns[2].values[1] = ScalarValue::VarChar("abcd".into());
    assert_eq!(check_insert(&docs(), &mut rows, 10, &LimitsConfig::default()).unwrap(), 2);
    assert_eq!(rows.columns[1].values, [ScalarValue::Double(3.0), ScalarValue::Double(0.5)], "into the Double field");
}

#[test]
fn insert_vectors_are_checked() {
    let mut empty = RowBatch { vectors: Vec::new(), ..batch() };
    rejects(check_insert(&docs(), &mut empty, 10, &LimitsConfig::default()), "empty batch");
    let mut wrong_dim = RowBatch { dim: 3, vectors: vec![0.0; 6], ..batch() };
    rejects(check_insert(&docs(), &mut wrong_dim, 10, &LimitsConfig::default()), "stores 2-dimensional vectors, got 3");
    let mut ragged = RowBatch { vectors: vec![0.0; 5], ..batch() };
    rejects(
        check_insert(&docs(), &mut ragged, 10, &LimitsConfig::default()),
        "5 floats is not a whole number of 2-dimensional vectors",
    );
    let mut nan = batch();
    nan.vectors[3] = f32::NAN;
    rejects(
        check_insert(&docs(), &mut nan, 10, &LimitsConfig::default()),
        "vector 1 contains NaN or infinity (element 1)",
    );
    let mut inf = batch();
    inf.vectors[0] = f32::NEG_INFINITY;
    rejects(
        check_insert(&docs(), &mut inf, 10, &LimitsConfig::default()),
        "vector 0 contains NaN or infinity (element 0)",
    );
    rejects(
        check_insert(&docs(), &mut batch(), 1, &LimitsConfig::default()),
        "insert of 2 rows exceeds the limit of 1 rows",
    );
}

#[test]
fn insert_keys_are_checked() {
    let mut given = batch();
    rejects(
        check_insert(&info(DataType::Int64, true, false), &mut given, 10, &LimitsConfig::default()),
        "is auto_id: do not supply it",
    );
    let mut allocated = RowBatch { pks: Vec::new(), ..batch() };
    assert_eq!(
        check_insert(&info(DataType::Int64, true, false), &mut allocated, 10, &LimitsConfig::default()).unwrap(),
        2
    );
    let mut missing = RowBatch { pks: vec![PrimaryKey::Int64(1)], ..batch() };
    rejects(
        check_insert(&docs(), &mut missing, 10, &LimitsConfig::default()),
        "primary key \"id\": got 1 values for 2 rows",
    );
    let mut typed = batch();
    typed.pks[1] = PrimaryKey::VarChar("2".into());
    rejects(
        check_insert(&docs(), &mut typed, 10, &LimitsConfig::default()),
        "primary key \"id\" is Int64; got a key of another type",
    );
}

#[test]
fn insert_columns_are_checked() {
    let with = |f: &dyn Fn(&mut RowBatch)| {
        let mut rows = batch();
        f(&mut rows);
        check_insert(&docs(), &mut rows, 10, &LimitsConfig::default())
    };
    rejects(with(&|r| r.columns[0].name = "zzz".into()), "field \"zzz\" is not in the schema of \"docs\"");
    rejects(with(&|r| r.columns[1].name = "n".into()), "field \"n\" is given twice");
    rejects(with(&|r| r.columns[0].values.truncate(1)), "field \"n\": got 1 values for 2 rows");
    rejects(with(&|r| r.columns[0].values[1] = ScalarValue::Double(1.5)), "field \"n\" is Int64; row 1 has Double");
    rejects(
        with(&|r| r.columns[2].values[0] = ScalarValue::VarChar("abcde".into())),
        "row 0 is 5 bytes, over max_length 4",
    );
    rejects(with(&|r| drop(r.columns.remove(1))), "field \"x\" is missing from the insert");
}

/// A NaN or infinite Float / Double value was accepted, then written into the segment file's
/// JSON as `null`, which made the sealed segment unreadable (every query node failed to load
/// it). The `milvus_requests` fuzz target checks that accepted rows survive a segment round trip.
#[test]
fn insert_floats_must_be_finite() {
    for bad in
        [ScalarValue::Double(f64::NAN), ScalarValue::Double(f64::INFINITY), ScalarValue::Float(f32::NEG_INFINITY)]
    {
        let mut rows = batch();
        rows.columns[1].values[0] = bad.clone();
        rejects(check_insert(&docs(), &mut rows, 10, &LimitsConfig::default()), "field \"x\" is Double; row 0 has");
    }
    let mut info = docs();
    info.schema.fields.iter_mut().filter(|f| f.name == "x").for_each(|f| f.data_type = DataType::Float);
    let mut rows = batch();
    rows.columns[1].values[0] = ScalarValue::Double(1e300);
    rejects(check_insert(&info, &mut rows, 10, &LimitsConfig::default()), "row 0 has 1e300, out of its range");
}

#[test]
fn insert_dynamic_fields_are_checked() {
    let mut rows = RowBatch { dynamic: vec!["{\"k\":1}".into(), String::new()], ..batch() };
    rejects(check_insert(&docs(), &mut rows.clone(), 10, &LimitsConfig::default()), "has no dynamic field");
    let dynamic = info(DataType::Int64, false, true);
    assert_eq!(check_insert(&dynamic, &mut rows, 10, &LimitsConfig::default()).unwrap(), 2);
    let mut short = RowBatch { dynamic: vec!["{}".into()], ..batch() };
    rejects(
        check_insert(&dynamic, &mut short, 10, &LimitsConfig::default()),
        "dynamic field: got 1 objects for 2 rows",
    );
    let mut not_object = RowBatch { dynamic: vec!["{}".into(), "[1]".into()], ..batch() };
    rejects(
        check_insert(&dynamic, &mut not_object, 10, &LimitsConfig::default()),
        "dynamic field of row 1 is not a JSON object",
    );
}

#[test]
fn keys_must_have_the_collections_type_and_length() {
    check_pk(&docs(), &PrimaryKey::Int64(-5)).unwrap();
    rejects(check_pk(&docs(), &PrimaryKey::VarChar("1".into())), "is Int64; got a key of another type");
    let text = info(DataType::VarChar, false, false);
    check_pk(&text, &PrimaryKey::VarChar("abcd".into())).unwrap();
    rejects(check_pk(&text, &PrimaryKey::VarChar("abcde".into())), "is 5 bytes, longer than max_length 4");
    rejects(check_pk(&text, &PrimaryKey::Int64(1)), "is VarChar; got a key of another type");
    let mut keyless = docs();
    keyless.schema.fields.retain(|f| !f.is_primary);
    assert!(matches!(check_pk(&keyless, &PrimaryKey::Int64(1)), Err(Error::Internal(_))));
}

fn search(nq: usize, top_k: u32) -> Search {
    Search {
        partitions: Default::default(),
        collection: "docs".into(),
        dim: 2,
        vectors: vec![0.5; nq * 2],
        top_k,
        params: SearchParams::default(),
        output_fields: Vec::new(),
        consistency: Consistency::Bounded,
        filter: String::new(),
    }
}

fn limits(max_top_k: u32, max_nq: usize) -> ReadLimits {
    ReadLimits {
        max_top_k,
        max_nq,
        max_hits: 1 << 20,
        max_ef: 512,
        max_nprobe: 64,
        max_filter_bytes: 32,
        max_result_bytes: 1 << 20,
    }
}

#[test]
fn searches_are_bounded_in_top_k_and_query_count() {
    assert_eq!(check_search(&docs(), &mut search(3, 10), &limits(10, 3)).unwrap(), 3, "both at their limit");
    rejects(check_search(&docs(), &mut search(1, 0), &limits(10, 3)), "top_k must be between 1 and 10, got 0");
    rejects(check_search(&docs(), &mut search(1, 11), &limits(10, 3)), "top_k must be between 1 and 10, got 11");
    rejects(
        check_search(&docs(), &mut search(4, 10), &limits(10, 3)),
        "4 query vectors exceed the limit of 3 per search",
    );
    rejects(check_search(&docs(), &mut search(0, 1), &limits(10, 3)), "search has no query vectors");
}

#[test]
fn searches_are_bounded_in_results_ef_nprobe_and_filter_length() {
    let tight = ReadLimits { max_hits: 20, ..limits(10, 10) };
    assert_eq!(check_search(&docs(), &mut search(2, 10), &tight).unwrap(), 2, "20 results: at the limit");
    rejects(check_search(&docs(), &mut search(3, 10), &tight), "3 query vectors × top_k 10 = 30 results");
    let mut ef = search(1, 1);
    ef.params.ef = 513;
    rejects(check_search(&docs(), &mut ef, &limits(10, 10)), "ef 513 exceeds the limit of 512 (limits.max_ef)");
    let mut nprobe = search(1, 1);
    nprobe.params.nprobe = 65;
    rejects(check_search(&docs(), &mut nprobe, &limits(10, 10)), "nprobe 65 exceeds the limit of 64");
    let mut long = Search { filter: "n > 1 and ".repeat(4), ..search(1, 1) };
    rejects(check_search(&docs(), &mut long, &limits(10, 10)), "over the limit of 32 (limits.max_filter_bytes)");
}

#[test]
fn search_vectors_are_checked() {
    let mut wrong_dim = Search { dim: 3, vectors: vec![0.0; 3], ..search(1, 1) };
    rejects(check_search(&docs(), &mut wrong_dim, &limits(10, 10)), "stores 2-dimensional vectors, got 3");
    let mut ragged = Search { vectors: vec![0.0; 3], ..search(1, 1) };
    rejects(check_search(&docs(), &mut ragged, &limits(10, 10)), "3 floats is not a whole number");
    let mut nan = search(2, 1);
    nan.vectors[2] = f32::NAN;
    rejects(check_search(&docs(), &mut nan, &limits(10, 10)), "search: vector 1 contains NaN or infinity (element 0)");
}

#[test]
fn output_fields_are_checked_and_star_expanded() {
    let mut s = Search { output_fields: vec!["*".into(), "n".into()], ..search(1, 1) };
    check_search(&docs(), &mut s, &limits(10, 10)).unwrap();
    assert_eq!(s.output_fields, ["n", "x", "s"], "every scalar field once; not the key, not the vector");
    let dynamic = info(DataType::Int64, false, true);
    assert_eq!(check_output_fields(&dynamic, &["*".into()]).unwrap(), ["n", "x", "s", "$meta"]);
    assert_eq!(check_output_fields(&dynamic, &["color".into()]).unwrap(), ["color"], "a dynamic key");
    assert_eq!(check_output_fields(&docs(), &["s".into(), "s".into()]).unwrap(), ["s"]);
    rejects(check_output_fields(&docs(), &["v".into()]), "output field \"v\" is the vector field");
    rejects(
        check_output_fields(&docs(), &["color".into()]),
        "output field \"color\" does not exist in collection \"docs\"",
    );
}

#[test]
fn select_rows_takes_the_rows_asked_for() {
    let rows = RowBatch { dynamic: vec!["{\"a\":1}".into(), "{}".into()], ..batch() };
    let picked = select_rows(&rows, &[1]);
    assert_eq!(picked.pks, [PrimaryKey::Int64(2)]);
    assert_eq!(picked.vectors, [2.0, 3.0]);
    assert_eq!(picked.columns[0].values, [ScalarValue::Int64(2)]);
    assert_eq!(picked.dynamic, ["{}"]);
    let none = select_rows(&rows, &[]);
    assert!(none.pks.is_empty() && none.vectors.is_empty() && none.columns[0].values.is_empty());
    // Out of range or on an inconsistent batch: no panic, missing parts left out.
    let short = RowBatch { vectors: vec![0.0, 1.0], ..batch() };
    let odd = select_rows(&short, &[1, 5]);
    assert_eq!(odd.pks, [PrimaryKey::Int64(2)]);
    assert!(odd.vectors.is_empty());
    assert_eq!(odd.columns[0].values, [ScalarValue::Int64(2), ScalarValue::Null]);
}

/// FNV-1a (64-bit), written out here so a change to the hashing shows up as a failure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[test]
fn shard_of_is_stable() {
    // The shard of a key decides which log holds it: it must never change between versions.
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "the published FNV-1a test vector");
    for shards in [1, 2, 3, 16, 64] {
        for i in [-7i64, 0, 1, 2, 1_000_003, i64::MAX] {
            let expected = (fnv1a(&i.to_le_bytes()) % u64::from(shards)) as u32;
            assert_eq!(shard_of(&PrimaryKey::Int64(i), shards), expected, "{i} over {shards} shards");
        }
        for s in ["", "a", "doc-42", "ключ"] {
            let expected = (fnv1a(s.as_bytes()) % u64::from(shards)) as u32;
            assert_eq!(shard_of(&PrimaryKey::VarChar(s.into()), shards), expected, "{s:?} over {shards} shards");
        }
    }
    assert_eq!(shard_of(&PrimaryKey::VarChar("a".into()), 4), (0xaf63_dc4c_8601_ec8cu64 % 4) as u32);
    assert_eq!(shard_of(&PrimaryKey::Int64(5), 0), 0, "no shards counts as one");
}
