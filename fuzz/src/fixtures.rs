//! The fixed collection the targets run against: every scalar type, a JSON column, a dynamic
//! field, a column in the schema that the rows lack, and rows with the awkward values (nulls,
//! integers beyond 2^53, ±0, JSON of every shape, text that is not JSON).

use quiver_actors::rows::RowStore;
use quiver_schemas::{
    CollectionInfo, CollectionSchema, Column, Consistency, DataType, FieldSchema, PrimaryKey, ScalarValue,
};

fn field(name: &str, data_type: DataType) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        data_type,
        is_primary: false,
        auto_id: false,
        dim: if data_type == DataType::FloatVector { 2 } else { 0 },
        max_length: if data_type == DataType::VarChar { 64 } else { 0 },
        description: String::new(),
    }
}

/// `docs`: `id` (Int64 key), `flag`, `i`, `f` (f32), `d`, `s`, `meta` (JSON), `emb` (2-d vector),
/// `late` (Int64, absent from [`rows`]: added to the schema after they were written); dynamic.
pub fn schema() -> CollectionSchema {
    let mut id = field("id", DataType::Int64);
    id.is_primary = true;
    CollectionSchema {
        name: "docs".into(),
        description: String::new(),
        fields: vec![
            id,
            field("flag", DataType::Bool),
            field("i", DataType::Int64),
            field("f", DataType::Float),
            field("d", DataType::Double),
            field("s", DataType::VarChar),
            field("meta", DataType::Json),
            field("emb", DataType::FloatVector),
            field("late", DataType::Int64),
        ],
        enable_dynamic_field: true,
        num_shards: 2,
        consistency: Consistency::Bounded,
    }
}

/// The collection of [`schema`]; `variant` 1 has an auto-id Int64 key and no
/// dynamic field, 2 a VarChar key, anything else is [`schema`] as is.
pub fn info(variant: u8) -> CollectionInfo {
    let mut schema = schema();
    match variant % 3 {
        1 => {
            schema.enable_dynamic_field = false;
            schema.fields[0].auto_id = true;
        }
        2 => {
            schema.fields[0].data_type = DataType::VarChar;
            schema.fields[0].max_length = 16;
        }
        _ => {}
    }
    CollectionInfo { id: 7, schema, index: None, created_ts: 1, scalar_indexes: Vec::new(), partitions: Vec::new() }
}

const N: usize = 10;

/// Ten rows of [`schema`] (without `late`).
pub fn rows() -> RowStore {
    use ScalarValue::{Bool, Double, Float, Int64, Json, Null, VarChar};
    let two53 = 1i64 << 53;
    let pks = [0, 1, -1, 2, i64::MAX, i64::MIN, two53 + 1, two53, 42, 7].map(PrimaryKey::Int64).to_vec();
    let col = |name: &str, values: Vec<ScalarValue>| {
        debug_assert_eq!(values.len(), N);
        Column { name: name.into(), values }
    };
    let s = |t: &str| VarChar(t.into());
    let j = |t: &str| Json(t.into());
    let columns = vec![
        col(
            "flag",
            vec![
                Bool(true),
                Bool(false),
                Null,
                Bool(true),
                Bool(false),
                Bool(true),
                Null,
                Bool(false),
                Bool(true),
                Bool(false),
            ],
        ),
        col(
            "i",
            vec![
                Int64(0),
                Int64(1),
                Int64(-1),
                Int64(i64::MAX),
                Int64(i64::MIN),
                Int64(two53 + 1),
                Null,
                Int64(42),
                j("7"),
                Int64(two53),
            ],
        ),
        col(
            "f",
            vec![
                Float(0.0),
                Float(0.1),
                Float(-0.0),
                Float(1.5),
                Float(f32::MAX),
                Float(16_777_216.0),
                Null,
                Float(-3.25),
                Float(1e-40),
                Float(2.0),
            ],
        ),
        col(
            "d",
            vec![
                Double(0.0),
                Double(0.1),
                Double(-2.5),
                Double(1e300),
                Null,
                Double(9_007_199_254_740_992.0),
                Double(3.0),
                Double(0.30000000000000004),
                Double(-0.0),
                Double(9.223_372_036_854_776e18),
            ],
        ),
        col("s", vec![s(""), s("abc"), s("a%c"), s("ab\\%"), s("héllo"), s("abcabc"), Null, s("z"), s("%"), s("ab")]),
        col(
            "meta",
            vec![
                j(r#"{"a":1,"b":[1,2,"x",true,null],"c":{"d":true,"e":[[1]]}}"#),
                j("[1,2,3]"),
                j(r#""str""#),
                j("1.5"),
                j("null"),
                j(""),
                j("not json"),
                s(r#"{"a":2,"b":[]}"#),
                Null,
                j(r#"{"a":"1","b":[1.0,2.5],"c":null}"#),
            ],
        ),
    ];
    let dynamic = [
        r#"{"k":1,"arr":[1,2.5,"s",true,null,[1]],"o":{"p":"q"}}"#,
        "",
        r#"{"k":"1","arr":["s"]}"#,
        "[1]",
        "garbage",
        r#"{"k":null,"o":{}}"#,
        r#"{"k":9223372036854775807,"u":18446744073709551615,"arr":[9007199254740993]}"#,
        r#"{"k":1.0,"arr":[]}"#,
        r#"{"k":-0.0,"arr":[1,1,1],"o":{"p":["q"]}}"#,
        r#"{"k":true,"s":"héllo"}"#,
    ]
    .map(String::from)
    .to_vec();
    RowStore {
        dim: 2,
        pks,
        seqs: (1..=N as u64).collect(),
        vectors: (0..N * 2).map(|x| x as f32 * 0.5 - 3.0).collect(),
        columns,
        dynamic,
        // Rows in three partitions, for filters that name some.
        partitions: (0..N as u32).map(|i| i % 3).collect(),
    }
}
