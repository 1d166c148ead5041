//! Hostile input, black box: a real standalone, attacked through both APIs (Milvus gRPC and
//! the NATS API) and straight into a shard's log, with well over 200 malformed, oversized,
//! truncated, wrong-typed, deeply nested and boundary inputs. Each one must get an answer
//! naming the problem (or be refused at the transport), and afterwards no role has restarted,
//! peak memory stayed bounded, and the data is intact.

use std::time::{Duration, Instant};

use base64::Engine;
use prost::Message as _;
use quiver_actors::proxy::milvus::proto::common::{self, KeyValuePair};
use quiver_actors::proxy::milvus::proto::milvus::milvus_service_client::MilvusServiceClient;
use quiver_actors::proxy::milvus::proto::milvus::*;
use quiver_actors::proxy::milvus::proto::schema::{
    self as ms, field_data, scalar_field, vector_field, FieldData, ScalarField, VectorField,
};
use quiver_client::{schema, Consistency, DataType, IndexType, MetricType, Query, Wire};
use quiver_schemas::protocol::subjects::DmlKind;
use quiver_schemas::{DmlEntry, PrimaryKey, RowBatch, ServiceRequest, Subjects};
use tonic::transport::Channel;

use crate::common::data::{self, dataset};
use crate::common::{api_error_as_node, free_port, run, Harness, READY};

/// Rows of the collection the attacks run against.
const ROWS: usize = 3_000;

/// `PlaceholderGroup` of Milvus' common.proto (searches carry it serialized).
#[derive(Clone, PartialEq, prost::Message)]
struct PlaceholderGroup {
    #[prost(message, repeated, tag = "1")]
    placeholders: Vec<PlaceholderValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PlaceholderValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(int32, tag = "2")]
    r#type: i32,
    #[prost(bytes = "vec", repeated, tag = "3")]
    values: Vec<Vec<u8>>,
}

pub(crate) fn placeholder(values: Vec<Vec<u8>>, kind: i32) -> Vec<u8> {
    PlaceholderGroup { placeholders: vec![PlaceholderValue { tag: "$0".into(), r#type: kind, values }] }.encode_to_vec()
}

pub(crate) fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

pub(crate) fn kv(k: &str, v: &str) -> KeyValuePair {
    KeyValuePair { key: k.into(), value: v.into() }
}

/// What became of one hostile request.
enum Answer {
    /// An application status (code 0 = success) with its reason.
    Status(i32, String),
    /// Refused by the gRPC layer (size limits, load shedding).
    Grpc(tonic::Status),
}

fn status_of(s: Option<common::Status>) -> Answer {
    let s = s.unwrap_or_default();
    Answer::Status(s.code, s.reason)
}

/// Tallies the cases; every case must be refused with a message naming its problem.
struct Cases {
    count: usize,
    failures: Vec<String>,
}

impl Cases {
    fn refused(&mut self, name: &str, answer: Answer, needles: &[&str]) {
        self.count += 1;
        match answer {
            Answer::Status(0, _) => self.failures.push(format!("{name}: accepted, expected a refusal")),
            Answer::Status(code, reason) => {
                let lower = reason.to_lowercase();
                if let Some(n) = needles.iter().find(|n| !lower.contains(&n.to_lowercase())) {
                    self.failures.push(format!("{name}: code {code} {reason:?} does not mention {n:?}"));
                }
            }
            Answer::Grpc(status) => {
                let lower = status.message().to_lowercase();
                if let Some(n) = needles.iter().find(|n| !lower.contains(&n.to_lowercase())) {
                    self.failures.push(format!("{name}: gRPC {status:?} does not mention {n:?}"));
                }
            }
        }
    }
}

macro_rules! call {
    ($client:expr, $method:ident, $req:expr) => {
        match $client.clone().$method($req).await {
            Ok(r) => status_of(r.into_inner().status),
            Err(s) => Answer::Grpc(s),
        }
    };
}

macro_rules! call_status {
    ($client:expr, $method:ident, $req:expr) => {
        match $client.clone().$method($req).await {
            Ok(r) => status_of(Some(r.into_inner())),
            Err(s) => Answer::Grpc(s),
        }
    };
}

pub(crate) fn search_req(collection: &str, params: Vec<KeyValuePair>, group: Vec<u8>) -> SearchRequest {
    SearchRequest {
        collection_name: collection.into(),
        search_input: Some(search_request::SearchInput::PlaceholderGroup(group)),
        dsl_type: 1,
        search_params: params,
        ..Default::default()
    }
}

fn knobs(topk: &str, params: &str) -> Vec<KeyValuePair> {
    vec![kv("topk", topk), kv("metric_type", "COSINE"), kv("params", params)]
}

fn long_field(name: &str, data: Vec<i64>) -> FieldData {
    FieldData {
        r#type: ms::DataType::Int64 as i32,
        field_name: name.into(),
        field: Some(field_data::Field::Scalars(ScalarField {
            data: Some(scalar_field::Data::LongData(ms::LongArray { data })),
        })),
        ..Default::default()
    }
}

fn vector_data(name: &str, dim: i64, data: Vec<f32>) -> FieldData {
    FieldData {
        r#type: ms::DataType::FloatVector as i32,
        field_name: name.into(),
        field: Some(field_data::Field::Vectors(VectorField {
            dim,
            data: Some(vector_field::Data::FloatVector(ms::FloatArray { data })),
        })),
        ..Default::default()
    }
}

fn scalar_data(name: &str, t: ms::DataType, data: scalar_field::Data) -> FieldData {
    FieldData {
        r#type: t as i32,
        field_name: name.into(),
        field: Some(field_data::Field::Scalars(ScalarField { data: Some(data) })),
        ..Default::default()
    }
}

fn insert_req(collection: &str, fields: Vec<FieldData>, num_rows: u32) -> InsertRequest {
    InsertRequest { collection_name: collection.into(), fields_data: fields, num_rows, ..Default::default() }
}

fn schema_field(name: &str, t: ms::DataType, params: &[(&str, &str)]) -> ms::FieldSchema {
    ms::FieldSchema {
        name: name.into(),
        data_type: t as i32,
        type_params: params.iter().map(|(k, v)| kv(k, v)).collect(),
        ..Default::default()
    }
}

fn create_req(name: &str, fields: Vec<ms::FieldSchema>) -> CreateCollectionRequest {
    let schema = ms::CollectionSchema { name: name.into(), fields, ..Default::default() };
    CreateCollectionRequest { collection_name: name.into(), schema: schema.encode_to_vec(), ..Default::default() }
}

fn pk_field() -> ms::FieldSchema {
    ms::FieldSchema { is_primary_key: true, ..schema_field("id", ms::DataType::Int64, &[]) }
}

/// Peak resident memory of a process (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn hostile_inputs_get_clear_errors_and_break_nothing() {
    run(Duration::from_secs(240), async {
        let grpc_port = free_port().expect("port");
        let metrics_port = free_port().expect("port");
        let (grpc, metrics) = (grpc_port.to_string(), format!("127.0.0.1:{metrics_port}"));
        let h = Harness::standalone(
            "hostile",
            &[("QUIVER_PROXY__GRPC_PORT", grpc.as_str()), ("QUIVER_METRICS__LISTEN", metrics.as_str())],
        );
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        let pid = h.pid("standalone");
        let dim = dataset().dim32();
        // No dynamic field: an unknown name in a filter or output list is an error.
        let mut simple = schema::simple("h", dim);
        simple.enable_dynamic_field = false;
        client.create_collection(simple).await.expect("collection h");
        let mut typed = schema::simple("typed", 8);
        typed.enable_dynamic_field = false;
        typed.fields.push(schema::field("title", DataType::VarChar));
        typed.fields.push(schema::field("meta", DataType::Json));
        typed.fields.iter_mut().filter(|f| f.name == "title").for_each(|f| f.max_length = 16);
        client.create_collection(typed).await.expect("typed collection");
        client.create_collection(schema::simple("wide", 32_768)).await.expect("wide collection");
        data::insert_rows(&client, "h", 0, ROWS, 1_000).await;
        let before = data::flush(&client, "h").await;
        assert!(!before.is_empty());
        client.create_index("h", data::index(IndexType::Hnsw, MetricType::Cosine, 0, 16, 64)).await.expect("index");
        for c in ["h", "typed", "wide"] {
            client.load_collection(c, 1).await.expect("load");
        }
        let count_h = || async {
            let q = Query {
                partitions: Default::default(),
                collection: "h".into(),
                filter: String::new(),
                output_fields: vec!["count(*)".into()],
                limit: 0,
                offset: 0,
                consistency: Consistency::Strong,
            };
            client.query(&q).await.expect("count").rows.columns[0].values[0].clone()
        };
        let counted = count_h().await;

        let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}")).expect("uri").connect_lazy();
        // As admin (security is on by default): pymilvus' `token="admin:<password>"`.
        let token = std::fs::read_to_string(h.credentials_file("admin")).expect("admin credentials");
        let token: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            base64::engine::general_purpose::STANDARD.encode(token.trim()).parse().expect("metadata value");
        let admin = move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", token.clone());
            Ok(req)
        };
        let g = MilvusServiceClient::with_interceptor(channel, admin)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let mut cases = Cases { count: 0, failures: Vec::new() };
        let query_vec = floats(&dataset().queries(1)[..dim as usize]);
        let good_group = placeholder(vec![query_vec.clone()], 101);

        // ---- Search: the placeholder group ----
        // The reported crash: 5,000,000 empty values on a dim-32768 collection (10 MB).
        let started = Instant::now();
        let empties = placeholder(vec![Vec::new(); 5_000_000], 101);
        let a = call!(g, search, search_req("wide", knobs("10", "{}"), empties));
        cases.refused("5M empty placeholder values", a, &["query vectors", "limit"]);
        assert!(started.elapsed() < Duration::from_secs(30));
        let wrong_len = [0usize, 1, 3, 4, 5, 4 * dim as usize - 1, 4 * dim as usize + 4, 8 * dim as usize];
        for len in wrong_len {
            let a = call!(g, search, search_req("h", knobs("10", "{}"), placeholder(vec![vec![0u8; len]], 101)));
            cases.refused(&format!("placeholder value of {len} bytes"), a, &["dimension"]);
        }
        for (name, bytes) in [
            ("empty placeholder group", Vec::new()),
            ("garbage placeholder group", b"\xff\xff\xff\xff garbage".to_vec()),
            ("truncated placeholder group", good_group[..good_group.len() / 2].to_vec()),
            ("group without values", placeholder(Vec::new(), 101)),
        ] {
            let a = call!(g, search, search_req("h", knobs("10", "{}"), bytes));
            cases.refused(name, a, &[]);
        }
        for kind in [0, 100, 102, 103, 104, 21, -1, i32::MAX] {
            let a = call!(g, search, search_req("h", knobs("10", "{}"), placeholder(vec![query_vec.clone()], kind)));
            cases.refused(&format!("placeholder type {kind}"), a, &["placeholder type"]);
        }
        let too_many = placeholder(vec![floats(&[0.5; 8]); 16_385], 101);
        let a = call!(g, search, search_req("typed", knobs("1", "{}"), too_many));
        cases.refused("16385 query vectors", a, &["16385 query vectors exceed"]);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut v = dataset().queries(1)[..dim as usize].to_vec();
            v[3] = bad;
            let a = call!(g, search, search_req("h", knobs("10", "{}"), placeholder(vec![floats(&v)], 101)));
            cases.refused(&format!("query vector with {bad}"), a, &["NaN or infinity"]);
        }
        // ---- Search: top-k, offset and parameters ----
        for topk in ["0", "-1", "16385", "99999999999999999999", "abc", "", "1.5", "0x10", "1e3", "NaN"] {
            let a = call!(g, search, search_req("h", knobs(topk, "{}"), good_group.clone()));
            cases.refused(&format!("topk {topk:?}"), a, &["topk"]);
        }
        for offset in ["16384", "-1", "18446744073709551616", "x"] {
            let mut params = knobs("10", "{}");
            params.push(kv("offset", offset));
            let a = call!(g, search, search_req("h", params, good_group.clone()));
            cases.refused(&format!("offset {offset:?}"), a, &["offset"]);
        }
        let nq100 = placeholder(vec![query_vec.clone(); 100], 101);
        let a = call!(g, search, search_req("h", knobs("16384", "{}"), nq100));
        cases.refused("nq 100 x topk 16384", a, &["limits.max_search_hits"]);
        for (p, needle) in [
            (r#"{"ef": 32769}"#, "limits.max_ef"),
            (r#"{"ef": 4294967296}"#, "ef"),
            (r#"{"ef": -5}"#, "ef"),
            (r#"{"ef": "many"}"#, "ef"),
            (r#"{"ef": 1e100}"#, "ef"),
            (r#"{"nprobe": 65537}"#, "limits.max_nprobe"),
            (r#"{"nprobe": -1}"#, "nprobe"),
            (r#"{"nprobe": [1]}"#, "nprobe"),
            (r#"{"radius": 1}"#, "range search"),
            (r#"{"#, "params"),
            (r#"[1,2]"#, "params"),
            (r#""text""#, "params"),
        ] {
            let a = call!(g, search, search_req("h", knobs("10", p), good_group.clone()));
            cases.refused(&format!("search params {p}"), a, &[needle]);
        }
        let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let a = call!(g, search, search_req("h", knobs("10", &deep_json), good_group.clone()));
        cases.refused("search params nested 100000 deep", a, &["params"]);
        for metric in ["FOO", "L2", "IP", "\u{0}"] {
            let params = vec![kv("topk", "10"), kv("metric_type", metric), kv("params", "{}")];
            let a = call!(g, search, search_req("h", params, good_group.clone()));
            cases.refused(&format!("metric {metric:?}"), a, &["metric"]);
        }
        // ---- Search: filters and output fields ----
        let nested = format!("{}id > 1{}", "(".repeat(10_000), ")".repeat(10_000));
        let long_filter = format!("id in [{}]", (0..200_000).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        let filters: Vec<(String, &str)> = vec![
            (nested.clone(), "nest"),
            (long_filter.clone(), "limits.max_filter_bytes"),
            ("nope > 1".into(), "nope"),
            ("id >".into(), ""),
            ("id in [".into(), ""),
            ("id == 'text'".into(), ""),
            ("((((".into(), ""),
            ("\u{0}\u{1}\u{2}".into(), ""),
            ("id like 5".into(), ""),
            ("json_contains(id, 1)".into(), ""),
            (format!("id == {}", "9".repeat(400)), ""),
            ("not not not".into(), ""),
        ];
        for (f, needle) in &filters {
            let mut req = search_req("h", knobs("10", "{}"), good_group.clone());
            req.dsl = f.clone();
            let a = call!(g, search, req);
            let shown: String = f.chars().take(30).collect();
            cases.refused(&format!("search filter {shown:?}"), a, &[needle]);
        }
        for fields in [
            vec!["nope".to_string()],
            vec!["x".repeat(100_000)],
            vec!["id"; 10_000].iter().map(|s| format!("{s}?")).collect(),
        ] {
            let mut req = search_req("h", knobs("10", "{}"), good_group.clone());
            req.output_fields = fields;
            let a = call!(g, search, req);
            cases.refused("search output fields", a, &["does not exist"]);
        }
        for name in ["", "nope", "x\u{0}y", "../../etc/passwd", "🙂", &"c".repeat(100_000)] {
            let a = call!(g, search, search_req(name, knobs("10", "{}"), good_group.clone()));
            cases.refused(&format!("search on collection {:?}", name.chars().take(20).collect::<String>()), a, &[]);
        }
        let mut partition = search_req("h", knobs("10", "{}"), good_group.clone());
        partition.partition_names = vec!["p1".into()];
        cases.refused("search partition", call!(g, search, partition), &["partition"]);
        let mut huge = search_req("h", knobs("10", "{}"), good_group.clone());
        huge.partition_names = vec!["p".repeat(1 << 20)];
        cases.refused("search with a 1 MB partition name", call!(g, search, huge), &["at most 255"]);
        let mut many = search_req("h", knobs("10", "{}"), good_group.clone());
        many.partition_names = (0..100_000).map(|i| format!("p{i}")).collect();
        cases.refused("search naming 100,000 partitions", call!(g, search, many), &["at most 1024"]);
        let create = |name: String| CreatePartitionRequest {
            collection_name: "h".into(),
            partition_name: name,
            ..Default::default()
        };
        for (what, name) in [("empty", String::new()), ("1 MB", "p".repeat(1 << 20)), ("NUL", "a\u{0}b".into())] {
            cases.refused(
                &format!("create partition, {what} name"),
                call_status!(g, create_partition, create(name)),
                &["partition name"],
            );
        }
        let show = ShowPartitionsRequest {
            collection_name: "h".into(),
            partition_names: (0..100_000).map(|i| format!("p{i}")).collect(),
            ..Default::default()
        };
        cases.refused("show 100,000 partitions", call!(g, show_partitions, show), &["at most 1024"]);

        // ---- Query ----
        let query_req = |expr: &str, params: &[(&str, &str)], fields: &[&str]| QueryRequest {
            collection_name: "h".into(),
            expr: expr.into(),
            output_fields: fields.iter().map(|s| s.to_string()).collect(),
            query_params: params.iter().map(|(k, v)| kv(k, v)).collect(),
            ..Default::default()
        };
        for (f, needle) in &filters {
            let a = call!(g, query, query_req(f, &[("limit", "10")], &[]));
            let shown: String = f.chars().take(30).collect();
            cases.refused(&format!("query filter {shown:?}"), a, &[needle]);
        }
        for (params, needle) in [
            (vec![("limit", "-1")], "limit"),
            (vec![("limit", "abc")], "limit"),
            (vec![("limit", "16385")], "max_top_k"),
            (vec![("limit", "18446744073709551615")], "max_top_k"),
            (vec![("limit", "10"), ("offset", "18446744073709551615")], "max_top_k"),
            (vec![("offset", "x")], "offset"),
            (vec![("limit", "10"), ("offset", "16380")], "max_top_k"),
        ] {
            let a = call!(g, query, query_req("id >= 0", &params, &[]));
            cases.refused(&format!("query params {params:?}"), a, &[needle]);
        }
        let a = call!(g, query, query_req("", &[], &[]));
        cases.refused("query without filter or limit", a, &["limit"]);
        for fields in [&["nope"][..], &["vector", "nope"], &["x".repeat(1000).as_str()]] {
            let a = call!(g, query, query_req("id >= 0", &[("limit", "5")], fields));
            cases.refused(&format!("query output fields {fields:?}"), a, &[]);
        }

        // ---- Insert and upsert ----
        let n = 4i64;
        let ids = || long_field("id", (0..n).map(|i| 1_000_000 + i).collect());
        let vecs = |d: i64, count: usize| vector_data("vector", d, vec![0.25; count]);
        let good_vecs = || vecs(i64::from(dim), n as usize * dim as usize);
        let insert_cases: Vec<(&str, InsertRequest, &str)> = vec![
            ("no fields", insert_req("h", vec![], 4), ""),
            ("vectors only, no key", insert_req("h", vec![good_vecs()], 4), "id"),
            ("keys only", insert_req("h", vec![ids()], 4), "vector"),
            ("wrong dim", insert_req("h", vec![ids(), vecs(7, 28)], 4), "dim"),
            ("dim 0", insert_req("h", vec![ids(), vecs(0, 0)], 4), "dim"),
            ("dim -1", insert_req("h", vec![ids(), vecs(-1, 4)], 4), "dim"),
            ("dim 2^40", insert_req("h", vec![ids(), vecs(1 << 40, 4)], 4), "dim"),
            ("ragged vectors", insert_req("h", vec![ids(), vecs(i64::from(dim), 4 * dim as usize - 1)], 4), ""),
            ("too few vectors", insert_req("h", vec![ids(), vecs(i64::from(dim), 3 * dim as usize)], 4), ""),
            ("num_rows huge", insert_req("h", vec![ids(), good_vecs()], u32::MAX), ""),
            ("num_rows 0", insert_req("h", vec![ids(), good_vecs()], 0), ""),
            (
                "keys as strings",
                insert_req(
                    "h",
                    vec![
                        scalar_data(
                            "id",
                            ms::DataType::VarChar,
                            scalar_field::Data::StringData(ms::StringArray { data: vec!["a".into(); 4] }),
                        ),
                        good_vecs(),
                    ],
                    4,
                ),
                "id",
            ),
            ("duplicate field", insert_req("h", vec![ids(), ids(), good_vecs()], 4), ""),
            ("unknown field", insert_req("h", vec![ids(), good_vecs(), long_field("ghost", vec![1; 4])], 4), "ghost"),
            ("NaN vector", insert_req("h", vec![ids(), vecs(i64::from(dim), 0)], 4), ""),
            ("no such collection", insert_req("ghost", vec![ids(), good_vecs()], 4), "ghost"),
        ];
        for (name, req, needle) in insert_cases {
            let a = call!(g, insert, req.clone());
            cases.refused(&format!("insert: {name}"), a, &[needle]);
            let upsert = UpsertRequest {
                collection_name: req.collection_name,
                fields_data: req.fields_data,
                num_rows: req.num_rows,
                ..Default::default()
            };
            let a = call!(g, upsert, upsert);
            cases.refused(&format!("upsert: {name}"), a, &[needle]);
        }
        let mut nan = dataset().rows(0, 4);
        nan[5] = f32::NAN;
        let a = call!(g, insert, insert_req("h", vec![ids(), vector_data("vector", i64::from(dim), nan)], 4));
        cases.refused("insert: vector holding NaN", a, &["NaN"]);
        let typed_ids = || long_field("id", vec![1, 2]);
        let typed_vecs = || vector_data("vector", 8, vec![0.5; 16]);
        let title = |v: Vec<String>| {
            scalar_data("title", ms::DataType::VarChar, scalar_field::Data::StringData(ms::StringArray { data: v }))
        };
        let meta = |v: Vec<Vec<u8>>| {
            scalar_data("meta", ms::DataType::Json, scalar_field::Data::JsonData(ms::JsonArray { data: v }))
        };
        let ok_title = || title(vec!["a".into(), "b".into()]);
        let ok_meta = || meta(vec![b"{}".to_vec(), b"{}".to_vec()]);
        let deep = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes();
        let typed_cases: Vec<(&str, Vec<FieldData>, &str)> = vec![
            (
                "title over max_length",
                vec![typed_ids(), typed_vecs(), title(vec!["x".repeat(17), "b".into()]), ok_meta()],
                "max_length",
            ),
            (
                "title 1 MB",
                vec![typed_ids(), typed_vecs(), title(vec!["x".repeat(1 << 20), "b".into()]), ok_meta()],
                "max_length",
            ),
            ("title count short", vec![typed_ids(), typed_vecs(), title(vec!["a".into()]), ok_meta()], "title"),
            ("title missing", vec![typed_ids(), typed_vecs(), ok_meta()], "title"),
            ("title as numbers", vec![typed_ids(), typed_vecs(), long_field("title", vec![1, 2]), ok_meta()], "title"),
            (
                "meta not JSON",
                vec![typed_ids(), typed_vecs(), ok_title(), meta(vec![b"{".to_vec(), b"{}".to_vec()])],
                "json",
            ),
            (
                "meta not UTF-8",
                vec![typed_ids(), typed_vecs(), ok_title(), meta(vec![vec![0xff, 0xfe], b"{}".to_vec()])],
                "utf-8",
            ),
            (
                "meta 100 KB",
                vec![
                    typed_ids(),
                    typed_vecs(),
                    ok_title(),
                    meta(vec![format!("\"{}\"", "x".repeat(100_000)).into_bytes(), b"{}".to_vec()]),
                ],
                "limits.max_json_bytes",
            ),
            (
                "meta nested 5000 deep",
                vec![typed_ids(), typed_vecs(), ok_title(), meta(vec![deep.clone(), b"{}".to_vec()])],
                "json",
            ),
            ("meta count long", vec![typed_ids(), typed_vecs(), ok_title(), meta(vec![b"{}".to_vec(); 3])], "meta"),
            (
                "dynamic field on a static schema",
                vec![
                    typed_ids(),
                    typed_vecs(),
                    ok_title(),
                    ok_meta(),
                    FieldData { is_dynamic: true, ..meta(vec![b"{}".to_vec(); 2]) },
                ],
                "dynamic",
            ),
        ];
        for (name, fields, needle) in typed_cases {
            let a = call!(g, insert, insert_req("typed", fields, 2));
            cases.refused(&format!("typed insert: {name}"), a, &[needle]);
        }

        // ---- Delete ----
        for (f, needle) in &filters {
            let req = DeleteRequest { collection_name: "h".into(), expr: f.clone(), ..Default::default() };
            let a = call!(g, delete, req);
            let shown: String = f.chars().take(30).collect();
            cases.refused(&format!("delete filter {shown:?}"), a, &[needle]);
        }
        let a = call!(g, delete, DeleteRequest { collection_name: "h".into(), ..Default::default() });
        cases.refused("delete without filter", a, &[]);

        // ---- Create collection ----
        let vector = |d: &str| schema_field("v", ms::DataType::FloatVector, &[("dim", d)]);
        let create_cases: Vec<(&str, CreateCollectionRequest, &str)> = vec![
            (
                "garbage schema",
                CreateCollectionRequest {
                    collection_name: "c1".into(),
                    schema: b"\xff\xff garbage".to_vec(),
                    ..Default::default()
                },
                "schema",
            ),
            ("empty schema", CreateCollectionRequest { collection_name: "c1".into(), ..Default::default() }, ""),
            ("dim 0", create_req("c1", vec![pk_field(), vector("0")]), "dim"),
            ("dim -1", create_req("c1", vec![pk_field(), vector("-1")]), "dim"),
            ("dim 32769", create_req("c1", vec![pk_field(), vector("32769")]), "dim"),
            ("dim 2^40", create_req("c1", vec![pk_field(), vector("1099511627776")]), "dim"),
            ("dim text", create_req("c1", vec![pk_field(), vector("big")]), "dim"),
            ("no vector", create_req("c1", vec![pk_field()]), "vector"),
            ("no key", create_req("c1", vec![vector("8")]), "primary"),
            ("two keys", create_req("c1", vec![pk_field(), pk_field(), vector("8")]), ""),
            (
                "two vectors",
                create_req(
                    "c1",
                    vec![pk_field(), vector("8"), schema_field("w", ms::DataType::FloatVector, &[("dim", "8")])],
                ),
                "vector",
            ),
            (
                "65 fields",
                create_req("c1", {
                    let mut f = vec![pk_field(), vector("8")];
                    f.extend((0..63).map(|i| schema_field(&format!("f{i}"), ms::DataType::Int64, &[])));
                    f
                }),
                "limits.max_fields",
            ),
            (
                "varchar max_length 70000",
                create_req(
                    "c1",
                    vec![pk_field(), vector("8"), schema_field("s", ms::DataType::VarChar, &[("max_length", "70000")])],
                ),
                "max_length",
            ),
            (
                "varchar max_length -1",
                create_req(
                    "c1",
                    vec![pk_field(), vector("8"), schema_field("s", ms::DataType::VarChar, &[("max_length", "-1")])],
                ),
                "max_length",
            ),
            (
                "binary vector",
                create_req("c1", vec![pk_field(), schema_field("b", ms::DataType::BinaryVector, &[("dim", "8")])]),
                "",
            ),
            (
                "sparse vector",
                create_req("c1", vec![pk_field(), schema_field("b", ms::DataType::SparseFloatVector, &[])]),
                "",
            ),
            (
                "array field",
                create_req("c1", vec![pk_field(), vector("8"), schema_field("a", ms::DataType::Array, &[])]),
                "",
            ),
            (
                "field name with spaces",
                create_req("c1", vec![pk_field(), vector("8"), schema_field("a b", ms::DataType::Int64, &[])]),
                "invalid",
            ),
            ("empty name", create_req("", vec![pk_field(), vector("8")]), "name"),
            ("name 100 KB", create_req(&"n".repeat(100_000), vec![pk_field(), vector("8")]), "invalid"),
            ("name with NUL", create_req("a\u{0}b", vec![pk_field(), vector("8")]), "invalid"),
            (
                "1000 shards",
                CreateCollectionRequest { shards_num: 1000, ..create_req("c1", vec![pk_field(), vector("8")]) },
                "shards",
            ),
        ];
        for (name, req, needle) in create_cases {
            let a = call_status!(g, create_collection, req);
            cases.refused(&format!("create collection: {name}"), a, &[needle]);
        }

        // ---- Indexes, load, hybrid search ----
        let index_req = |params: &[(&str, &str)]| CreateIndexRequest {
            collection_name: "typed".into(),
            field_name: "vector".into(),
            extra_params: params.iter().map(|(k, v)| kv(k, v)).collect(),
            ..Default::default()
        };
        for params in [
            vec![("index_type", "NOPE"), ("metric_type", "IP")],
            vec![("index_type", "HNSW"), ("metric_type", "IP"), ("params", r#"{"M": 100000}"#)],
            vec![("index_type", "HNSW"), ("metric_type", "IP"), ("params", r#"{"M": 1}"#)],
            vec![("index_type", "HNSW"), ("metric_type", "IP"), ("params", r#"{"M": -3}"#)],
            vec![("index_type", "IVF_FLAT"), ("metric_type", "IP"), ("params", r#"{"nlist": 99999999999}"#)],
            vec![("index_type", "IVF_PQ"), ("metric_type", "IP"), ("params", r#"{"nlist": 4, "m": 3}"#)],
            vec![("index_type", "HNSW"), ("metric_type", "HAMMING")],
            vec![("index_type", "HNSW"), ("metric_type", "IP"), ("params", "{{{")],
        ] {
            let a = call_status!(g, create_index, index_req(&params));
            cases.refused(&format!("create index {params:?}"), a, &[]);
        }
        for replicas in [1000, i32::MAX] {
            let req =
                LoadCollectionRequest { collection_name: "h".into(), replica_number: replicas, ..Default::default() };
            let a = call_status!(g, load_collection, req);
            cases.refused(&format!("load with {replicas} replicas"), a, &["replica"]);
        }
        let hybrid = |subs: usize, params: &[(&str, &str)]| HybridSearchRequest {
            collection_name: "h".into(),
            requests: (0..subs).map(|_| search_req("h", knobs("5", "{}"), good_group.clone())).collect(),
            rank_params: params.iter().map(|(k, v)| kv(k, v)).collect(),
            ..Default::default()
        };
        for (subs, params, needle) in [
            (2, vec![("limit", "-1")], "limit"),
            (2, vec![("limit", "4294967295"), ("offset", "4294967295")], "limit"),
            (2, vec![("limit", "0")], "limit"),
            (2, vec![("limit", "x")], "limit"),
            (2, vec![("limit", "10"), ("offset", "16380")], "limit"),
            (0, vec![("limit", "10")], "sub-searches"),
            (65, vec![("limit", "10")], "limits.max_hybrid_requests"),
        ] {
            let a = call!(g, hybrid_search, hybrid(subs, &params));
            cases.refused(&format!("hybrid search {subs} subs {params:?}"), a, &[needle]);
        }

        // ---- Transport: messages over the gRPC limit ----
        let huge = vecs(i64::from(dim), (17 << 20) / 4);
        match g.clone().insert(insert_req("h", vec![ids(), huge], 4)).await {
            Err(s) => {
                cases.count += 1;
                assert!(
                    matches!(
                        s.code(),
                        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument
                    ),
                    "17 MiB insert: {s:?}"
                );
            }
            Ok(r) => cases.refused("17 MiB insert", status_of(r.into_inner().status), &[]),
        }

        // ---- The NATS API: every method, with garbage, empty, truncated and amplifying bodies ----
        let amplifier: Vec<u8> = {
            let words: [u64; 5] = [3 << 48, 0, (7 << 32) | (1 << 2), 0, 100_000_000 << 2];
            let mut b = Vec::new();
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&5u32.to_le_bytes());
            words.iter().for_each(|w| b.extend_from_slice(&w.to_le_bytes()));
            b
        };
        let valid_search =
            data::search("h", dataset().queries(1), 10, Default::default(), Consistency::Strong).to_bytes();
        let bodies: Vec<(&str, Vec<u8>)> = vec![
            ("garbage", b"this is not a capnp message!!!!!".to_vec()),
            ("empty", Vec::new()),
            ("truncated", valid_search[..valid_search.len() / 2].to_vec()),
            ("odd length", valid_search[..valid_search.len() - 3].to_vec()),
            ("amplifying list", amplifier),
            ("all ones", vec![0xff; 4096]),
        ];
        let mutating = ["drop_collection", "release_collection", "drop_index", "plugin_rollback", "plugin_activate"];
        for method in quiver_schemas::protocol::ApiRequest::METHODS {
            for (what, body) in &bodies {
                // A body that decodes to an empty message could really drop or release
                // something: those methods get only bodies that cannot decode.
                if mutating.contains(method) && *what == "empty" {
                    continue;
                }
                cases.count += 1;
                let started = Instant::now();
                match client.call_raw(method, body.clone()).await {
                    // Methods that take `Empty` ignore whatever body they get.
                    Ok(_)
                        if matches!(
                            *method,
                            "list_collections"
                                | "status"
                                | "plugin_list"
                                | "scaling"
                                | "events"
                                | "autoscaling"
                                | "idling"
                        ) => {}
                    Ok(_) => cases.failures.push(format!("nats {method} with {what} body: accepted")),
                    Err(e) => {
                        if e.is_retryable() {
                            cases.failures.push(format!("nats {method} with {what} body: {e}"));
                        }
                    }
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "nats {method} {what} took {:?}",
                    started.elapsed()
                );
            }
        }
        // Unknown methods: the NATS server refuses them to a client (its permissions list the
        // API's methods); a node principal, which may publish there, gets the proxy's answer.
        for i in 0..40 {
            cases.count += 1;
            let method = format!("no_such_method_{i}");
            match client.call_raw(&method, Vec::new()).await {
                Err(quiver_client::ClientError::PermissionDenied(m)) if m.contains(&method) => {}
                other => cases.failures.push(format!("unknown method {method} as admin: {other:?}")),
            }
            if i % 10 == 0 {
                cases.count += 1;
                let error = api_error_as_node(&h, &method, Vec::new()).await;
                if !error.contains("unknown method") {
                    cases.failures.push(format!("unknown method {method} as node: {error:?}"));
                }
            }
        }

        // ---- Straight into the log: an insert whose vectors are not whole rows ----
        let info = client.describe_collection("h").await.expect("describe").info;
        let subjects = Subjects::new(&h.cluster);
        let nats = h.nats_as("node").await;
        let js = async_nats::jetstream::new(nats);
        let forged = |rows: RowBatch| DmlEntry::Insert { partition: Default::default(), timestamp: 1, rows }.to_bytes();
        let ragged = RowBatch {
            pks: vec![PrimaryKey::Int64(9_000_001)],
            dim,
            vectors: vec![0.5; dim as usize - 1],
            ..Default::default()
        };
        let wrong_dim =
            RowBatch { pks: vec![PrimaryKey::Int64(9_000_002)], dim: 3, vectors: vec![0.5; 3], ..Default::default() };
        let wrong_key = RowBatch {
            pks: vec![PrimaryKey::VarChar("k".into())],
            dim,
            vectors: vec![0.5; dim as usize],
            ..Default::default()
        };
        for (what, payload) in [
            ("ragged", forged(ragged)),
            ("wrong dim", forged(wrong_dim)),
            ("wrong key type", forged(wrong_key)),
            ("garbage", b"garbage!".to_vec()),
        ] {
            cases.count += 1;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Quiver-Dml", "insert");
            let subject = subjects.dml_entry(info.id, 0, DmlKind::Insert);
            let ack = js.publish_with_headers(subject, headers, payload.into()).await.expect("publish");
            ack.await.unwrap_or_else(|e| panic!("log append of {what}: {e}"));
        }
        let detail = crate::common::eventually("quarantine shown in status", Duration::from_secs(20), || async {
            let s = client.status().await.map_err(|e| e.to_string())?;
            let q = s.nodes.iter().find(|n| n.detail.contains("quarantined")).map(|n| n.detail.clone());
            q.ok_or_else(|| format!("{:?}", s.nodes.iter().map(|n| &n.detail).collect::<Vec<_>>()))
        })
        .await;
        assert!(detail.contains("log entries quarantined"), "{detail}");

        // ---- Afterwards: every case answered as expected, nothing restarted, data intact ----
        assert!(
            cases.failures.is_empty(),
            "{} of {} cases failed:\n{}",
            cases.failures.len(),
            cases.count,
            cases.failures.join("\n")
        );
        assert!(cases.count >= 200, "only {} hostile cases", cases.count);
        let status = client.status().await.expect("status");
        for n in &status.nodes {
            assert!(n.healthy && n.restarts == 0, "{} restarted {} times or is unhealthy", n.node_id, n.restarts);
            assert_eq!(n.pid, pid, "{} runs in another process", n.node_id);
        }
        let peak = peak_rss(pid);
        assert!(peak < 3 << 30, "peak RSS {} MiB", peak >> 20);
        assert_eq!(count_h().await, counted, "row count changed");
        let found = client
            .search(&data::search("h", dataset().queries(2), 10, Default::default(), Consistency::Strong))
            .await
            .expect("search after the attacks");
        assert!(found.results.iter().all(|r| r.pks.len() == 10));
        let body = reqwest_metrics(metrics_port).await;
        let unknown_series = body.lines().filter(|l| l.contains("no_such_method")).count();
        assert_eq!(unknown_series, 0, "unknown method names became metric series");
        eprintln!("{} hostile cases refused; peak RSS {} MiB", cases.count, peak >> 20);
    });
}

/// The Prometheus text of the metrics endpoint (plain HTTP/1.0 over a socket).
async fn reqwest_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
