//! Writes the seed corpora (`fuzz/corpus/<target>/`): real encodings of each message type,
//! Milvus requests, filters, a segment file and index objects, so the fuzzers start from
//! valid input instead of discovering the formats byte by byte. Not a fuzz target:
//! `scripts/fuzz.sh seeds` runs it.
//!
//! Usage: seed_corpus <corpus dir>

use std::path::Path;

use prost::Message;
use quiver_actors::fuzzing::milvus::{proto, PlaceholderGroup, PlaceholderValue};
use quiver_actors::rows::encode_segment;
use quiver_actors::vector::VectorIndex;
use quiver_fuzz::fixtures;
use quiver_schemas::protocol::{ApiRequest, ServiceRequest};
use quiver_schemas::*;

use proto::common::KeyValuePair;
use proto::milvus as pm;
use proto::schema as ps;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn kv(key: &str, value: &str) -> KeyValuePair {
    KeyValuePair { key: key.into(), value: value.into() }
}

fn batch() -> RowBatch {
    RowBatch {
        pks: vec![PrimaryKey::Int64(1), PrimaryKey::Int64(2)],
        dim: 2,
        vectors: vec![0.5, -1.0, 2.0, 0.25],
        columns: vec![
            Column { name: "i".into(), values: vec![ScalarValue::Int64(3), ScalarValue::Null] },
            Column {
                name: "s".into(),
                values: vec![ScalarValue::VarChar("abc".into()), ScalarValue::VarChar(String::new())],
            },
            Column { name: "d".into(), values: vec![ScalarValue::Double(0.1), ScalarValue::Float(1.5)] },
            Column {
                name: "meta".into(),
                values: vec![ScalarValue::Json(r#"{"a":1}"#.into()), ScalarValue::Bool(true)],
            },
        ],
        dynamic: vec![r#"{"k":1}"#.into(), String::new()],
    }
}

fn segment() -> SegmentInfo {
    SegmentInfo {
        id: 11,
        collection: 7,
        shard: 1,
        rows: 2,
        start_seq: 3,
        end_seq: 9,
        data_path: "segments/7/11.data".into(),
        index_path: Some("indexes/7/11.index".into()),
        state: SegmentState::Indexed,
        mem_size: 4096,
        delete_seq: 0,
        compacted_from: Vec::new(),
        partitions: vec![0, 2],
    }
}

fn search() -> Search {
    Search {
        partitions: Default::default(),
        collection: "docs".into(),
        dim: 2,
        vectors: vec![0.5, 0.5],
        top_k: 10,
        params: SearchParams { nprobe: 8, ef: 64 },
        output_fields: vec!["s".into(), "$meta".into()],
        consistency: Consistency::Strong,
        filter: "i > 1 and s like \"a%\"".into(),
    }
}

fn query() -> Query {
    Query {
        partitions: Default::default(),
        collection: "docs".into(),
        filter: "id in [1, 2]".into(),
        output_fields: vec!["count(*)".into()],
        limit: 10,
        offset: 1,
        consistency: Consistency::Bounded,
    }
}

fn get() -> Get {
    Get {
        collection: "docs".into(),
        pks: vec![PrimaryKey::VarChar("a".into())],
        output_fields: vec!["i".into()],
        consistency: Consistency::Eventually,
    }
}

fn hits() -> Hits {
    Hits { pks: vec![PrimaryKey::Int64(1)], scores: vec![0.5], columns: batch().columns[..1].to_vec() }
}

fn placement() -> ShardPlacement {
    ShardPlacement { shard: 1, leader: "q1".into(), sealed_seq: 4, replica: 1 }
}

fn node_status() -> NodeStatus {
    NodeStatus {
        node_id: "q1".into(),
        role: Role::QueryNode,
        host: "h".into(),
        pid: 1,
        healthy: true,
        mem_used: 1,
        mem_capacity: 2,
        segments: 3,
        restarts: 0,
        started_ms: 5,
        heartbeat_ms: 6,
        detail: String::new(),
        state: NodeState::default(),
        cpu_cores: 2.0,
        cpu_busy: 0.5,
        host_agent: "h1".into(),
        faiss_simd: "avx2".into(),
        memory_refusals: 1,
        last_request_ms: 7,
    }
}

fn role_scaling() -> RoleScaling {
    RoleScaling {
        role: Role::QueryNode,
        desired: 3,
        serving: 2,
        starting: 1,
        draining: 0,
        converged: false,
        activity: "starting qn-7 on h1".into(),
        size: size(),
        resizing: 1,
    }
}

fn size() -> NodeSize {
    NodeSize { cpu_millis: 2_000, memory_bytes: 8 << 30 }
}

fn host_status() -> HostStatus {
    HostStatus {
        host_id: "h1".into(),
        cpus: 2,
        max_nodes: 4,
        nodes: vec![HostedNode { node_id: "qn-7".into(), roles: vec![Role::QueryNode], pid: 9, ..Default::default() }],
        ..Default::default()
    }
}

fn handoff() -> SegmentChangeInfo {
    SegmentChangeInfo {
        collection: 7,
        online_node_id: "q2".into(),
        online_segment_ids: vec![11],
        offline_node_id: "q1".into(),
        offline_segment_ids: vec![11],
        reason: "balance".into(),
        at_ms: 5,
        released_ms: 6,
    }
}

/// Every bus message type, in the order of `fuzz_targets/wire_decode.rs`.
fn wire(dir: &Path) {
    let info = fixtures::info(0);
    let index = IndexParams {
        index_type: IndexType::Hnsw,
        metric: MetricType::Cosine,
        nlist: 0,
        m: 16,
        nbits: 0,
        ef_construction: 200,
        auto: true,
        name: "idx".into(),
    };
    let dist = Distribution {
        collection: info.clone(),
        shards: vec![placement()],
        segments: vec![SegmentPlacement { segment: segment(), nodes: vec!["q1".into()] }],
        version: 3,
        released: false,
        replicas: vec![ReplicaGroup { id: 0, nodes: vec!["q1".into(), "q2".into()] }],
        unserved: Vec::new(),
    };
    let node_status = node_status();
    let messages: Vec<Vec<u8>> = vec![
        CreateCollection { schema: info.schema.clone() }.to_bytes(),
        CollectionName { name: "docs".into() }.to_bytes(),
        Empty {}.to_bytes(),
        CollectionList { names: vec!["a".into(), "docs".into()] }.to_bytes(),
        CollectionDescription { info: info.clone(), num_rows: 5, sealed_segments: 1 }.to_bytes(),
        CreateIndex { collection: "docs".into(), params: index.clone() }.to_bytes(),
        Insert { partition: Default::default(), collection: "docs".into(), rows: batch() }.to_bytes(),
        Delete {
            partition: Default::default(),
            collection: "docs".into(),
            pks: vec![PrimaryKey::Int64(4)],
            filter: "i == 1".into(),
        }
        .to_bytes(),
        MutationResult { pks: vec![PrimaryKey::Int64(1)], timestamp: 99, count: 1 }.to_bytes(),
        get().to_bytes(),
        search().to_bytes(),
        query().to_bytes(),
        QueryResults { rows: batch() }.to_bytes(),
        SearchResults { results: vec![hits(), Hits::default()] }.to_bytes(),
        NodeSearchResults { results: vec![hits()], shards: Vec::new(), in_flight: 2, rows_searched: 10_000 }.to_bytes(),
        FlushResult { segments: vec![1, 2] }.to_bytes(),
        ClusterStatus {
            cluster: "quiver".into(),
            nodes: vec![node_status.clone()],
            roles: vec![role_scaling()],
            hosts: vec![host_status()],
            notes: vec!["note".into()],
        }
        .to_bytes(),
        PluginUpload { kind: "router".into(), name: "r".into(), wasm: b"\0asm".to_vec() }.to_bytes(),
        PluginActivate { name: "r".into(), version: "1".into() }.to_bytes(),
        PluginRollback { kind: "router".into() }.to_bytes(),
        PluginReport { json: "{}".into() }.to_bytes(),
        Alloc { count: 3 }.to_bytes(),
        AllocRange { start: 10, count: 3 }.to_bytes(),
        Stall { millis: 5 }.to_bytes(),
        DmlEntry::Insert { partition: Default::default(), timestamp: 5, rows: batch() }.to_bytes(),
        SegmentFlushed { segment: segment() }.to_bytes(),
        BuildIndex { segment: segment(), params: index, dim: 2 }.to_bytes(),
        IndexBuilt { segment: 11, collection: 7, index_path: "indexes/7/11".into(), build_ms: 3 }.to_bytes(),
        LoadSegments {
            collection: info.clone(),
            segments: vec![segment()],
            lead_shards: vec![placement()],
            shard_views: Vec::new(),
            delete_floors: vec![ShardSeq { shard: 0, seq: 4 }],
        }
        .to_bytes(),
        CompactTask {
            collection: info.clone(),
            shard: 0,
            plan: 3,
            inputs: vec![segment(), segment()],
            output: 12,
            delete_from: 1,
            delete_to: 9,
            min_dropped: 1,
        }
        .to_bytes(),
        CompactOutcome { plan: 3, output: Some(segment()), dropped_rows: 2, unchanged: false }.to_bytes(),
        CompactionState {
            id: 5,
            collection: "docs".into(),
            state: "executing".into(),
            plans: vec![CompactionPlan {
                id: 3,
                shard: 0,
                sources: vec![10, 11],
                target: 12,
                kind: "merge".into(),
                state: "executing".into(),
                error: String::new(),
            }],
        }
        .to_bytes(),
        CompactionJobId { id: 5 }.to_bytes(),
        ReleaseSegments { collection: 7, segments: vec![11], all: false }.to_bytes(),
        NodeSearch {
            collection: 7,
            search: search(),
            segments: vec![11],
            growing: vec![placement()],
            guarantee_ts: 1,
            filter: String::new(),
        }
        .to_bytes(),
        NodeGet {
            collection: 7,
            get: get(),
            segments: vec![11],
            growing: Vec::new(),
            guarantee_ts: 1,
            partitions: Vec::new(),
        }
        .to_bytes(),
        NodeQuery {
            collection: 7,
            query: query(),
            segments: Vec::new(),
            growing: Vec::new(),
            guarantee_ts: 0,
            filter: "{\"Exists\":{\"Dynamic\":{\"path\":[{\"Key\":\"k\"}]}}}".into(),
        }
        .to_bytes(),
        GetResults { rows: batch(), seqs: vec![1, 2] }.to_bytes(),
        dist.to_bytes(),
        LoadCollection { name: "docs".into(), replicas: 2 }.to_bytes(),
        node_status.to_bytes(),
        WatchChannels { channels: vec![ChannelAssignment { collection: info, shard: 1, checkpoint: 4 }] }.to_bytes(),
        ScaleRequest { role: "querynode".into(), replicas: 3, size: size() }.to_bytes(),
        ScaleReply {
            role: Role::QueryNode,
            replicas: 3,
            previous: 1,
            warning: String::new(),
            size: size(),
            previous_size: NodeSize::UNSIZED,
        }
        .to_bytes(),
        ScalingStatus { roles: vec![role_scaling()], hosts: vec![host_status()] }.to_bytes(),
        ClusterEvents {
            handoffs: vec![handoff()],
            scaling: vec![ScalingEvent {
                at_ms: 1,
                role: Role::QueryNode,
                node_id: "qn-7-querynode".into(),
                action: "start".into(),
                detail: "on host h1".into(),
            }],
        }
        .to_bytes(),
        handoff().to_bytes(),
        StartNode { node_id: "qn-7".into(), role: Role::QueryNode, size: size() }.to_bytes(),
        StopNode { node_id: "qn-7".into() }.to_bytes(),
        AutoscaleRequest {
            role: "querynode".into(),
            min_memory_bytes: 4 << 30,
            max_memory_bytes: 8 << 30,
            reset: false,
        }
        .to_bytes(),
        AutoscaleStatus {
            enabled: true,
            interval_ms: 60_000,
            window_ms: 3_600_000,
            roles: vec![RoleAutoscale {
                role: Role::QueryNode,
                enabled: true,
                min_memory_bytes: 4 << 30,
                max_memory_bytes: 8 << 30,
                size: size(),
                samples: 3,
                peak_cpu_percent: 80.0,
                peak_memory_bytes: 1 << 30,
                ooms: 0,
                held_until_ms: 0,
            }],
            decisions: vec![AutoscaleDecision {
                at_ms: 1,
                role: Role::QueryNode,
                from: NodeSize::UNSIZED,
                to: size(),
                reason: "cpu peak 80.0% > 75%: double".into(),
                plugin: "threshold@builtin".into(),
                action: "resize".into(),
            }],
        }
        .to_bytes(),
        IdlingStatus {
            enabled: true,
            state: "idle".into(),
            since_ms: 1,
            last_request_ms: 2,
            after_ms: 900_000,
            timeout_ms: 900_000,
            last_startup_ms: 5_000,
            blocked: String::new(),
            stopped: 3,
        }
        .to_bytes(),
    ];
    for (i, bytes) in messages.iter().enumerate() {
        let mut seed = vec![i as u8];
        seed.extend_from_slice(bytes);
        write(dir, "wire_decode", &format!("type-{i:02}"), &seed);
    }
    // Service requests: byte 0 past the types picks the service (ApiRequest = 0 mod 7 ...).
    let first_service = messages.len() as u8;
    let api_search = ApiRequest::METHODS.iter().position(|m| *m == "search").unwrap_or(0) as u8;
    let mut seed = vec![first_service.next_multiple_of(7), api_search];
    seed.extend_from_slice(&search().to_bytes());
    write(dir, "wire_decode", "api-search", &seed);
}

fn field_data(name: &str, data: ps::scalar_field::Data) -> ps::FieldData {
    ps::FieldData {
        field_name: name.into(),
        field: Some(ps::field_data::Field::Scalars(ps::ScalarField { data: Some(data) })),
        ..Default::default()
    }
}

fn insert_fields() -> Vec<ps::FieldData> {
    use ps::scalar_field::Data;
    vec![
        field_data("id", Data::LongData(ps::LongArray { data: vec![1, 2] })),
        field_data("flag", Data::BoolData(ps::BoolArray { data: vec![true, false] })),
        field_data("i", Data::LongData(ps::LongArray { data: vec![5, -5] })),
        field_data("f", Data::FloatData(ps::FloatArray { data: vec![0.5, 1.0] })),
        field_data("d", Data::DoubleData(ps::DoubleArray { data: vec![0.1, 2.0] })),
        field_data("s", Data::StringData(ps::StringArray { data: vec!["a".into(), "bc".into()] })),
        field_data("meta", Data::JsonData(ps::JsonArray { data: vec![b"{\"a\":1}".to_vec(), b"[1]".to_vec()] })),
        field_data("late", Data::LongData(ps::LongArray { data: vec![0, 0] })),
        ps::FieldData {
            field_name: "emb".into(),
            field: Some(ps::field_data::Field::Vectors(ps::VectorField {
                dim: 2,
                data: Some(ps::vector_field::Data::FloatVector(ps::FloatArray { data: vec![0.1, 0.2, 0.3, 0.4] })),
            })),
            ..Default::default()
        },
        ps::FieldData {
            is_dynamic: true,
            ..field_data("$meta", Data::JsonData(ps::JsonArray { data: vec![b"{\"k\":1}".to_vec(), b"{}".to_vec()] }))
        },
    ]
}

fn milvus(dir: &Path) {
    let placeholder = PlaceholderGroup {
        placeholders: vec![PlaceholderValue {
            tag: "$0".into(),
            r#type: 101,
            values: vec![[0.5f32, -0.5].iter().flat_map(|f| f.to_le_bytes()).collect()],
        }],
    };
    let search = pm::SearchRequest {
        collection_name: "docs".into(),
        dsl: "i > 1 and meta[\"a\"] == 1".into(),
        search_input: Some(pm::search_request::SearchInput::PlaceholderGroup(placeholder.encode_to_vec())),
        output_fields: vec!["s".into(), "k".into()],
        search_params: vec![kv("topk", "10"), kv("params", r#"{"ef": 64, "nprobe": 4}"#), kv("metric_type", "COSINE")],
        consistency_level: 0,
        ..Default::default()
    };
    let mut seeds: Vec<(&str, u8, Vec<u8>)> = vec![("search", 0, search.encode_to_vec())];
    let hybrid = pm::HybridSearchRequest {
        collection_name: "docs".into(),
        requests: vec![search.clone(), search],
        rank_params: vec![kv("strategy", "rrf"), kv("limit", "5")],
        output_fields: vec!["*".into()],
        ..Default::default()
    };
    seeds.push(("hybrid", 1, hybrid.encode_to_vec()));
    let query = pm::QueryRequest {
        collection_name: "docs".into(),
        expr: "id in [1, 2] or s like \"a%\"".into(),
        output_fields: vec!["*".into()],
        query_params: vec![kv("limit", "10")],
        ..Default::default()
    };
    seeds.push(("query", 2, query.encode_to_vec()));
    let insert = pm::InsertRequest {
        collection_name: "docs".into(),
        fields_data: insert_fields(),
        num_rows: 2,
        ..Default::default()
    };
    seeds.push(("insert", 3, insert.encode_to_vec()));
    let upsert = pm::UpsertRequest {
        collection_name: "docs".into(),
        fields_data: insert_fields(),
        num_rows: 2,
        ..Default::default()
    };
    seeds.push(("upsert", 4, upsert.encode_to_vec()));
    let delete =
        pm::DeleteRequest { collection_name: "docs".into(), expr: "id in [1, 2]".into(), ..Default::default() };
    seeds.push(("delete", 5, delete.encode_to_vec()));
    let schema = quiver_actors::fuzzing::milvus::schema_to(&fixtures::info(0));
    let create = pm::CreateCollectionRequest {
        collection_name: "docs".into(),
        schema: schema.encode_to_vec(),
        shards_num: 2,
        ..Default::default()
    };
    seeds.push(("create-collection", 6, create.encode_to_vec()));
    let index = pm::CreateIndexRequest {
        collection_name: "docs".into(),
        field_name: "emb".into(),
        extra_params: vec![
            kv("index_type", "IVF_PQ"),
            kv("metric_type", "L2"),
            kv("params", r#"{"nlist": 64, "m": 2, "nbits": 8}"#),
        ],
        ..Default::default()
    };
    seeds.push(("create-index", 7, index.encode_to_vec()));
    for (name, pick, bytes) in seeds {
        let mut seed = vec![pick];
        seed.extend_from_slice(&bytes);
        write(dir, "milvus_requests", name, &seed);
    }
}

fn filters(dir: &Path) {
    let texts = [
        "i > 1 and s like \"a%c\"",
        "not (flag == true) or f <= 0.1",
        "1 < d <= 3.0 && meta[\"b\"][2] == \"x\"",
        "k in [1, 2.5, 9223372036854775807] or $meta[\"o\"][\"p\"] == 'q'",
        "json_contains_all(arr, [1, 2.5]) and exists o[\"p\"]",
        "id % 7 == 0 and (i + 1) * 2 != 4 and -f < 1e-3",
        "late is null and meta[\"c\"] is not null",
        "array_contains_any(meta[\"b\"], [\"x\", \"y\"]) || s not like \"%\\%\"",
    ];
    for (i, t) in texts.iter().enumerate() {
        write(dir, "filter", &format!("filter-{i}"), t.as_bytes());
    }
    // `filter_structured` reads its input through `arbitrary`; a few byte patterns do.
    for (i, seed) in
        [&[1u8, 3, 0, 5, 1, 2, 3][..], &[9, 2, 1, 0, 4, 4, 1, 8], &[3, 1, 1, 7, 2, 6, 0, 1, 5, 2, 9]].iter().enumerate()
    {
        write(dir, "filter_structured", &format!("seed-{i}"), seed);
    }
}

fn segments(dir: &Path) {
    let mut rows = fixtures::rows();
    rows.columns.truncate(4);
    let bytes = encode_segment(&segment(), &rows).unwrap_or_else(|e| panic!("{e}"));
    write(dir, "segment_decode", "fixture", &bytes);
    let empty = quiver_actors::rows::RowStore::new(3);
    write(dir, "segment_decode", "empty", &encode_segment(&segment(), &empty).unwrap_or_else(|e| panic!("{e}")));
}

fn indexes(dir: &Path) {
    let vectors: Vec<f32> = (0..40 * 2).map(|i| i as f32 / 10.0).collect();
    for (name, kind) in [("flat", IndexType::Flat), ("hnsw", IndexType::Hnsw)] {
        let params = IndexParams {
            index_type: kind,
            metric: MetricType::L2,
            nlist: 0,
            m: 4,
            nbits: 0,
            ef_construction: 8,
            auto: false,
            name: String::new(),
        };
        let index = VectorIndex::build(&params, 2, &vectors).unwrap_or_else(|e| panic!("{e}"));
        let mut seed = vec![0u8];
        seed.extend_from_slice(&index.to_bytes().unwrap_or_else(|e| panic!("{e}")));
        write(dir, "index_decode", name, &seed);
    }
    // Damage mode: pick an index, flip a byte near the start.
    write(dir, "index_decode", "damaged", &[1, 0, 30, 0, 1, 0x40]);
}

// Every binary of this crate is built instrumented, and the coverage callbacks live in
// libFuzzer: an (unused) fuzz target links it. `main` below is the program's own.
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into());
    let dir = Path::new(&dir);
    wire(dir);
    milvus(dir);
    filters(dir);
    segments(dir);
    indexes(dir);
    println!("seed corpora written under {}", dir.display());
}
