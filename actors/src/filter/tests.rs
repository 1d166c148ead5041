use std::time::Instant;

use quiver_schemas::{expr, CollectionSchema, Column, FieldSchema};

use super::*;

/// A field of a test schema (vectors of dimension 2). Also used by `index.rs`' tests.
pub(super) fn field(name: &str, data_type: DataType, is_primary: bool) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        data_type,
        is_primary,
        auto_id: false,
        dim: if data_type == DataType::FloatVector { 2 } else { 0 },
        max_length: 0,
        description: String::new(),
    }
}

fn schema(pk_type: DataType) -> CollectionSchema {
    CollectionSchema {
        name: "c".into(),
        description: String::new(),
        fields: vec![
            field("id", pk_type, true),
            field("age", DataType::Int64, false),
            field("price", DataType::Float, false),
            field("score", DataType::Double, false),
            field("name", DataType::VarChar, false),
            field("active", DataType::Bool, false),
            field("meta", DataType::Json, false),
            // In the schema, but added after these rows were written: no column in the store.
            field("later", DataType::Int64, false),
            field("vec", DataType::FloatVector, false),
        ],
        enable_dynamic_field: true,
        num_shards: 1,
        consistency: Default::default(),
    }
}

fn column(name: &str, values: Vec<ScalarValue>) -> Column {
    Column { name: name.into(), values }
}

fn rows() -> RowStore {
    use ScalarValue::{Bool as B, Double as D, Float as F, Int64 as I, Json as J, Null as N, VarChar as S};
    let j = |s: &str| J(s.to_string());
    let s = |s: &str| S(s.to_string());
    RowStore {
        partitions: Default::default(),
        dim: 0,
        pks: (100..106).map(PrimaryKey::Int64).collect(),
        seqs: vec![1; 6],
        vectors: Vec::new(),
        columns: vec![
            column("age", vec![I(10), I(20), N, I(40), I(50), I(60)]),
            column("price", vec![F(0.1), F(1.5), F(2.0), N, F(3.25), F(-4.0)]),
            column("score", vec![D(0.1), D(1.5), D(f64::NAN), N, D(3.25), D(-4.0)]),
            column("name", vec![s("apple"), s("banana"), s("avocado"), N, s("cherry"), s("a_b%")]),
            column("active", vec![B(true), B(false), B(true), N, B(false), B(true)]),
            column(
                "meta",
                vec![
                    j(r#"{"a": 1, "tags": ["x", "y"]}"#),
                    j(r#"{"a": "s"}"#),
                    N,
                    j(r#"{"a": 2.5, "b": {"c": [1, 2]}}"#),
                    j("not json"),
                    j(r#"{"a": null, "tags": [1, 2]}"#),
                ],
            ),
        ],
        dynamic: vec![
            r#"{"color": "red", "n": 1}"#.into(),
            r#"{"color": "blue", "n": 2.5, "sub": {"k": true}}"#.into(),
            String::new(),
            r#"{"n": null}"#.into(),
            r#"{"color": "red", "n": "x"}"#.into(),
            r#"{"n": 5, "list": [1, "a"], "flag": true}"#.into(),
        ],
    }
}

/// Row offsets matching `text`, checked against `matches` row by row, after a JSON round
/// trip of the expression (as query nodes receive it).
fn select_in(text: &str, rows: &RowStore, pk_type: DataType) -> Vec<usize> {
    let e = expr::parse(text, &schema(pk_type)).unwrap_or_else(|e| panic!("{e}"));
    let e: Expr = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
    let bits = evaluate(&e, rows);
    assert_eq!(bits.len(), rows.len());
    let got: Vec<usize> = bits.ones().collect();
    for r in 0..rows.len() {
        assert_eq!(matches(&e, rows, r), bits.get(r), "{text}: row {r}");
    }
    assert_eq!(bits.count_ones(), got.len());
    got
}

fn select(text: &str) -> Vec<usize> {
    select_in(text, &rows(), DataType::Int64)
}

#[test]
fn bitmap_layout_and_ops() {
    let mut b = Bitmap::new(10, true);
    assert_eq!(b.as_bytes(), &[0xFF, 0b11]);
    assert_eq!((b.len(), b.count_ones()), (10, 10));
    b.set(3, false);
    b.set(99, true);
    assert!(!b.get(3) && b.get(9) && !b.get(10) && !b.get(99));
    assert_eq!(b.as_bytes()[0], 0b1111_0111);
    b.and_not(|i| i % 2 == 0);
    assert_eq!(b.ones().collect::<Vec<_>>(), vec![1, 5, 7, 9]);
    let mut z = Bitmap::new(9, false);
    assert_eq!(z.as_bytes(), &[0, 0]);
    z.set(8, true);
    assert_eq!((z.as_bytes()[1], z.count_ones()), (1, 1));
    assert!(Bitmap::new(0, true).is_empty());
    assert_eq!(Bitmap::new(16, true).as_bytes(), &[0xFF, 0xFF]);
}

#[test]
fn comparisons_and_nulls() {
    assert_eq!(select("age > 20"), vec![3, 4, 5]);
    assert_eq!(select("age >= 20"), vec![1, 3, 4, 5]);
    assert_eq!(select("age < 20"), vec![0]);
    assert_eq!(select("age <= 20"), vec![0, 1]);
    assert_eq!(select("age == 40"), vec![3]);
    // Null (row 2) never matches, not even `!=` or `not`.
    assert_eq!(select("age != 40"), vec![0, 1, 4, 5]);
    assert_eq!(select("not (age == 40)"), vec![0, 1, 4, 5]);
    assert_eq!(select("age == 40 or not (age == 40)"), vec![0, 1, 3, 4, 5]);
    assert_eq!(select("age > 15.5"), vec![1, 3, 4, 5]);
    assert_eq!(select("10 < age <= 40"), vec![1, 3]);
    assert_eq!(select("50 >= age > 10"), vec![1, 3, 4]);
    // Float (f32) columns compare with literals rounded to f32, as Milvus does.
    assert_eq!(select("price == 0.1"), vec![0]);
    assert_eq!(select("price in [0.1, 3.25]"), vec![0, 4]);
    assert_eq!(select("price > 0.1"), vec![1, 2, 4]);
    assert_eq!(select("price == 2"), vec![2]);
    assert_eq!(select("price < 0"), vec![5]);
    // NaN compares with nothing.
    assert_eq!(select("score > 0 or score <= 0"), vec![0, 1, 4, 5]);
    assert_eq!(select("score == 0.1"), vec![0]);
    assert_eq!(select(r#"name == "apple""#), vec![0]);
    assert_eq!(select(r#"name > "b""#), vec![1, 4]);
    assert_eq!(select(r#"name != "apple""#), vec![1, 2, 4, 5]);
    assert_eq!(select("active"), vec![0, 2, 5]);
    assert_eq!(select("active == false"), vec![1, 4]);
    assert_eq!(select("active != true"), vec![1, 4]);
    assert_eq!(select("age is null"), vec![2]);
    assert_eq!(select("name is not null"), vec![0, 1, 2, 4, 5]);
    // A column the rows predate is null everywhere.
    assert_eq!(select("later > 0 or later <= 0"), Vec::<usize>::new());
    assert_eq!(select("later is null"), vec![0, 1, 2, 3, 4, 5]);
}

/// The partition term the proxy adds to a read of some partitions, alone and with a filter,
/// through the JSON the query nodes receive (rows without partition ids are `_default`'s).
#[test]
fn partitions() {
    let mut rows = rows();
    let partition = |ids: Vec<u32>, rows: &RowStore| {
        let e: Expr = serde_json::from_str(&serde_json::to_string(&Expr::Partition(ids)).unwrap()).unwrap();
        evaluate(&e, rows).ones().collect::<Vec<_>>()
    };
    assert_eq!(partition(vec![0], &rows), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(partition(vec![1], &rows), Vec::<usize>::new());
    rows.partitions = vec![0, 1, 1, 2, 0, 2];
    assert_eq!(partition(vec![1, 2], &rows), vec![1, 2, 3, 5]);
    let age = expr::parse("age > 15", &schema(DataType::Int64)).unwrap();
    let both = Expr::And(vec![age, Expr::Partition(vec![2])]);
    assert_eq!(evaluate(&both, &rows).ones().collect::<Vec<_>>(), vec![3, 5]);
    assert!(matches(&both, &rows, 3) && !matches(&both, &rows, 1));
}

#[test]
fn logic() {
    assert_eq!(select("age > 10 and age < 60"), vec![1, 3, 4]);
    assert_eq!(select("age == 10 || age == 60"), vec![0, 5]);
    assert_eq!(select("not age > 30 and active"), vec![0]);
    assert_eq!(select("(age < 15 or age > 55) and not active == false"), vec![0, 5]);
    // false and unknown = false; true or unknown = true.
    assert_eq!(select("not (age > 100 and later == 1)"), vec![0, 1, 3, 4, 5]);
    assert_eq!(select("age > 0 or later == 1"), vec![0, 1, 3, 4, 5]);
    assert_eq!(select("!(age > 0 or later == 1)"), Vec::<usize>::new());
}

#[test]
fn in_like_and_arithmetic() {
    assert_eq!(select("age in [10, 40, 99]"), vec![0, 3]);
    assert_eq!(select("age in [40.0]"), vec![3]);
    assert_eq!(select("age not in [10, 40]"), vec![1, 4, 5]);
    assert_eq!(select("age in []"), Vec::<usize>::new());
    assert_eq!(select("age not in []"), vec![0, 1, 3, 4, 5]);
    assert_eq!(select(r#"name in ["apple", "cherry"]"#), vec![0, 4]);
    assert_eq!(select("active in [false]"), vec![1, 4]);
    assert_eq!(select(r#"name like "a%""#), vec![0, 2, 5]);
    assert_eq!(select(r#"name like "%na%""#), vec![1]);
    assert_eq!(select(r#"name like "%y""#), vec![4]);
    assert_eq!(select(r#"name like "a_b\%""#), vec![5]);
    assert_eq!(select(r#"name like "a_%""#), vec![5]);
    assert_eq!(select(r#"name not like "a%""#), vec![1, 4]);
    assert_eq!(select("age % 20 == 0"), vec![1, 3, 5]);
    assert_eq!(select("age * 2 > 100"), vec![5]);
    assert_eq!(select("age / 20 == 2"), vec![3, 4]);
    assert_eq!(select("price * 2 > 6"), vec![4]);
    assert_eq!(select("-age < -45"), vec![4, 5]);
    assert_eq!(select("age + price > 50"), vec![4, 5]);
    assert_eq!(select("age - 10 in [0, 50]"), vec![0, 5]);
    // Division by a zero-valued field makes the row unknown, not a crash.
    assert_eq!(select("age / (age - 10) >= 0"), vec![1, 3, 4, 5]);
}

#[test]
fn primary_keys_int_and_varchar() {
    assert_eq!(select("id in [101, 105, 7]"), vec![1, 5]);
    assert_eq!(select("id > 103"), vec![4, 5]);
    assert_eq!(select("id % 2 == 0 and id != 100"), vec![2, 4]);
    let mut rows = rows();
    rows.pks = ["a", "b", "c", "d", "e", "f"].iter().map(|s| PrimaryKey::VarChar(s.to_string())).collect();
    assert_eq!(select_in(r#"id in ["b", "f", "z"]"#, &rows, DataType::VarChar), vec![1, 5]);
    assert_eq!(select_in(r#"id like "%e""#, &rows, DataType::VarChar), vec![4]);
    assert_eq!(select_in(r#"id >= "e""#, &rows, DataType::VarChar), vec![4, 5]);
}

#[test]
fn json_columns() {
    assert_eq!(select(r#"meta["a"] == 1"#), vec![0]);
    assert_eq!(select(r#"meta["a"] > 0"#), vec![0, 3]);
    assert_eq!(select(r#"meta["a"] == "s""#), vec![1]);
    // Missing keys, JSON null, another type and unparsable documents never match.
    assert_eq!(select(r#"meta["a"] != 1"#), vec![3]);
    assert_eq!(select(r#"meta["a"] not in [1]"#), vec![3]);
    assert_eq!(select(r#"meta["b"]["c"][1] == 2"#), vec![3]);
    assert_eq!(select(r#"meta["b"]["c"][5] == 2 or meta["b"]["c"][0] < 0"#), Vec::<usize>::new());
    assert_eq!(select(r#"meta["a"] is null"#), vec![2, 4, 5]);
    assert_eq!(select(r#"exists meta["a"]"#), vec![0, 1, 3, 5]);
    assert_eq!(select(r#"exists meta"#), vec![0, 1, 3, 5]);
    assert_eq!(select(r#"json_contains(meta["tags"], "x")"#), vec![0]);
    assert_eq!(select(r#"json_contains(meta["tags"], 2)"#), vec![5]);
    assert_eq!(select(r#"json_contains_all(meta["tags"], ["x", "y"])"#), vec![0]);
    assert_eq!(select(r#"json_contains_all(meta["tags"], ["x", "z"])"#), Vec::<usize>::new());
    assert_eq!(select(r#"json_contains_any(meta["tags"], [2, 9])"#), vec![5]);
    assert_eq!(select(r#"array_contains(meta["b"]["c"], 1.0)"#), vec![3]);
    assert_eq!(select(r#"meta["a"] like "%""#), vec![1]);
}

#[test]
fn dynamic_fields() {
    assert_eq!(select(r#"color == "red""#), vec![0, 4]);
    assert_eq!(select(r#"$meta["color"] == "red""#), vec![0, 4]);
    assert_eq!(select(r#"color != "red""#), vec![1]);
    assert_eq!(select(r#"color in ["blue", "green"]"#), vec![1]);
    assert_eq!(select(r#"color like "r%""#), vec![0, 4]);
    assert_eq!(select("n > 1"), vec![1, 5]);
    assert_eq!(select("n >= 1 and n < 3"), vec![0, 1]);
    assert_eq!(select("n not in [1]"), vec![1, 5]);
    assert_eq!(select("n * 2 == 5"), vec![1]);
    assert_eq!(select("n % 2 == 1"), vec![0, 5]);
    assert_eq!(select(r#"sub["k"] == true"#), vec![1]);
    assert_eq!(select(r#"$meta["sub"]["k"]"#), vec![1]);
    assert_eq!(select("flag"), vec![5]);
    assert_eq!(select("exists n"), vec![0, 1, 3, 4, 5]);
    assert_eq!(select("n is null"), vec![2, 3]);
    assert_eq!(select("json_contains(list, \"a\")"), vec![5]);
    assert_eq!(select("nothing == 1 or exists nothing"), Vec::<usize>::new());
    // Rows without any dynamic data.
    let mut bare = rows();
    bare.dynamic.clear();
    assert_eq!(select_in("n > 0 or exists color", &bare, DataType::Int64), Vec::<usize>::new());
    assert_eq!(select_in("n is null and age > 30", &bare, DataType::Int64), vec![3, 4, 5]);
}

/// Rows per second of `evaluate` for typical filters over 100k rows (printed, not asserted).
#[test]
fn throughput_100k_rows() {
    const N: usize = 100_000;
    let names = ["apple", "banana", "avocado", "cherry", "apricot"];
    let rows = RowStore {
        partitions: Default::default(),
        dim: 0,
        pks: (0..N as i64).map(PrimaryKey::Int64).collect(),
        seqs: vec![1; N],
        vectors: Vec::new(),
        columns: vec![
            column("age", (0..N).map(|i| ScalarValue::Int64((i * 7 % 100) as i64)).collect()),
            column("price", (0..N).map(|i| ScalarValue::Float((i % 1000) as f32 / 10.0)).collect()),
            column("name", (0..N).map(|i| ScalarValue::VarChar(names[i % names.len()].to_string())).collect()),
        ],
        dynamic: (0..N).map(|i| format!(r#"{{"color": "{}", "n": {}}}"#, names[i % 3], i % 50)).collect(),
    };
    for text in [
        "age > 30 and age < 60",
        r#"age > 30 and name like "a%" and price < 50.5"#,
        "id in [1, 5, 99, 1000, 50000] or age % 10 == 3",
        r#"$meta["color"] == "apple" and n > 10"#,
    ] {
        let e = expr::parse(text, &schema(DataType::Int64)).unwrap();
        let start = Instant::now();
        let bits = evaluate(&e, &rows);
        let secs = start.elapsed().as_secs_f64();
        println!(
            "evaluate `{text}` over {N} rows: {:.1} ms, {:.1} M rows/s, {} match",
            secs * 1e3,
            N as f64 / secs / 1e6,
            bits.count_ones()
        );
        assert!(bits.count_ones() > 0);
    }
}

/// Integers compare with floats exactly: rounding the integer to f64 made `x == 2.0^53` true
/// for x = 2^53 + 1 while `x in [2.0^53]` and the primary-key fast path said no (the `filter`
/// fuzz targets compare `evaluate` with a reference evaluator and with that fast path).
#[test]
fn integers_and_floats_compare_exactly() {
    let big = (1i64 << 53) + 1;
    let mut rows = rows();
    rows.pks = vec![big, i64::MAX, i64::MIN, 1 << 53, 7, -7].into_iter().map(PrimaryKey::Int64).collect();
    rows.columns[0].values = rows
        .pks
        .iter()
        .map(|p| match p {
            PrimaryKey::Int64(i) => ScalarValue::Int64(*i),
            PrimaryKey::VarChar(_) => ScalarValue::Null,
        })
        .collect();
    let select = |text: &str| select_in(text, &rows, DataType::Int64);
    assert_eq!(select("age == 9007199254740992.0"), vec![3]);
    assert_eq!(select("age in [9007199254740992.0]"), vec![3]);
    assert_eq!(select("age > 9007199254740992.0"), vec![0, 1]);
    assert_eq!(select("age < 9223372036854775807.0"), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(select("age == 9223372036854775807.0 or age >= 9.3e18"), Vec::<usize>::new());
    assert_eq!(select("age == -9223372036854775808.0"), vec![2]);
    assert_eq!(select("age > 6.5 and age < 7.5 or age == -7.0"), vec![4, 5]);
    assert_eq!(select("age < -6.5 and age > -7.5"), vec![5]);
    // The primary-key fast path selects the same rows.
    for (text, want) in [("id == 9007199254740992.0", vec![3]), ("id in [9223372036854775807.0, -7.0]", vec![5])] {
        let e = expr::parse(text, &schema(DataType::Int64)).unwrap();
        let keys = e.primary_keys().unwrap();
        let by_key: Vec<usize> = (0..rows.len()).filter(|&r| keys.contains(&rows.pks[r])).collect();
        assert_eq!(by_key, want, "{text}");
        assert_eq!(select(text), want, "{text}");
    }
}
