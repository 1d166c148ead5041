//! Milvus gRPC requests, as protobuf bytes from a client, through the conversions the gRPC
//! adapter runs (`proxy::milvus::convert`) and the checks behind them (proxy validation, the
//! coordinator's schema and index checks), against a fixed collection. No panic; and what is
//! accepted must hold up further on:
//!
//! - an accepted insert / upsert batch can be stored in a segment file and read back unchanged;
//! - an accepted index definition, as DescribeIndex shows it, creates the same index again;
//! - an accepted schema reads back unchanged from what DescribeCollection shows.
//!
//! Input: byte 0 picks the request type (low 3 bits) and the collection variant (the rest,
//! see `fixtures::info`); the rest is the request's protobuf encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use quiver_actors::fuzzing::milvus::{self as convert, proto};
use quiver_actors::fuzzing::validate;
use quiver_actors::limits::ReadLimits;
use quiver_actors::rows::{decode_segment, encode_segment, RowStore};
use quiver_fuzz::{fixtures, same_debug};
use quiver_runtime::Config;
use quiver_schemas::{CollectionInfo, PrimaryKey, RowBatch, Search, SegmentInfo, SegmentState};

use proto::milvus::{
    CreateCollectionRequest, CreateIndexRequest, DeleteRequest, HybridSearchRequest, InsertRequest, QueryRequest,
    SearchRequest, UpsertRequest,
};

fn config() -> &'static Config {
    static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    CONFIG.get_or_init(Config::default)
}

fn filter(info: &CollectionInfo, text: &str) {
    if text.trim().is_empty() {
        return;
    }
    if let Ok(expr) = quiver_schemas::expr::parse(text, &info.schema) {
        let _ = expr.primary_keys();
        let _ = serde_json::to_string(&expr);
    }
}

fn search(info: &CollectionInfo, r: &SearchRequest) {
    let _ = convert::consistency_of(r.consistency_level);
    let (Ok(knobs), Ok((vectors, _nq)), Ok((fields, _))) = (
        convert::knobs_from(&r.search_params),
        convert::placeholder_group(r).and_then(|group| convert::vectors_from(group, info.dim(), config().proxy.max_nq)),
        convert::output_fields(info, &r.output_fields),
    ) else {
        return;
    };
    let mut search = Search {
        collection: r.collection_name.clone(),
        dim: info.dim(),
        vectors,
        top_k: knobs.top_k.saturating_add(knobs.offset),
        params: knobs.params,
        output_fields: fields,
        consistency: convert::consistency_of(r.consistency_level),
        filter: r.dsl.clone(),
        partitions: r.partition_names.clone(),
    };
    if validate::check_search(info, &mut search, &ReadLimits::of(config())).is_ok() {
        filter(info, &search.filter);
    }
}

/// An accepted batch as the data node stores it: keys allocated if the collection does, appended
/// to a row store, sealed into a segment file that must read back as it was written.
fn store(info: &CollectionInfo, mut batch: RowBatch) {
    let Ok(n) = validate::check_insert(info, &mut batch, config().proxy.max_insert_rows, &config().limits) else {
        return;
    };
    if batch.pks.is_empty() {
        batch.pks = (0..n as i64).map(PrimaryKey::Int64).collect();
    }
    let mut rows = RowStore::new(info.dim() as usize);
    rows.append(&batch, 1, 0);
    let seg = SegmentInfo {
        id: 1,
        collection: info.id,
        shard: 0,
        rows: n as u64,
        start_seq: 1,
        end_seq: 1,
        data_path: "segments/1".into(),
        index_path: None,
        state: SegmentState::Flushed,
        mem_size: rows.mem_bytes(),
        delete_seq: 0,
        compacted_from: Vec::new(),
        partitions: rows.partition_set(),
    };
    let bytes = encode_segment(&seg, &rows).unwrap_or_else(|e| panic!("accepted rows cannot be sealed: {e}"));
    let (seg2, rows2) =
        decode_segment(&bytes).unwrap_or_else(|e| panic!("a segment of accepted rows does not read back: {e}"));
    same_debug("segment info", &seg, &seg2);
    same_debug("segment rows", &rows, &rows2);
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else { return };
    let info = fixtures::info(pick >> 3);
    match pick & 7 {
        0 => {
            if let Ok(r) = SearchRequest::decode(bytes) {
                search(&info, &r);
            }
        }
        1 => {
            if let Ok(r) = HybridSearchRequest::decode(bytes) {
                let _ = convert::output_fields(&info, &r.output_fields);
                for sub in r.requests.iter().take(8) {
                    search(&info, sub);
                }
            }
        }
        2 => {
            if let Ok(r) = QueryRequest::decode(bytes) {
                let _ = convert::consistency_of(r.consistency_level);
                if convert::output_fields(&info, &r.output_fields).is_ok() {
                    filter(&info, &r.expr);
                }
            }
        }
        3 | 4 => {
            let upsert = pick & 7 == 4;
            let r = if upsert {
                UpsertRequest::decode(bytes).map(|r| (r.fields_data, r.num_rows))
            } else {
                InsertRequest::decode(bytes).map(|r| (r.fields_data, r.num_rows))
            };
            if let Ok((fields, num_rows)) = r {
                if let Ok(batch) = convert::rows_from(&info, &fields, num_rows, upsert) {
                    store(&info, batch);
                }
            }
        }
        5 => {
            if let Ok(r) = DeleteRequest::decode(bytes) {
                filter(&info, &r.expr);
            }
        }
        6 => {
            let Ok(r) = CreateCollectionRequest::decode(bytes) else { return };
            let Ok(schema) = convert::schema_from(&r.collection_name, &r.schema, r.shards_num, r.consistency_level)
            else {
                return;
            };
            let Ok(schema) = validate::validate_schema(schema, 2, &config().limits) else { return };
            // What DescribeCollection shows must create the same collection again.
            let info = CollectionInfo {
                id: 1,
                schema,
                index: None,
                created_ts: 1,
                scalar_indexes: Vec::new(),
                partitions: Vec::new(),
            };
            let shown = convert::schema_to(&info).encode_to_vec();
            let level = convert::consistency_to(info.schema.consistency) as i32;
            let again = convert::schema_from(&info.schema.name, &shown, info.schema.num_shards as i32, level)
                .unwrap_or_else(|e| panic!("the schema DescribeCollection shows is refused: {e}"));
            same_debug("schema", &info.schema, &again);
        }
        _ => {
            let Ok(r) = CreateIndexRequest::decode(bytes) else { return };
            let Ok(params) = convert::index_from(&r.extra_params) else { return };
            if validate::validate_index(&params, info.dim()).is_err() {
                return;
            }
            // What DescribeIndex shows must create an index that DescribeIndex shows the same way
            // (parameters the index type does not use, such as HNSW's nlist, are not shown).
            let shown = convert::index_to(&params);
            let again = convert::index_from(&shown)
                .unwrap_or_else(|e| panic!("the index DescribeIndex shows ({params:?}) is refused: {e}"));
            same_debug("index params as DescribeIndex shows them", &shown, &convert::index_to(&again));
            assert_eq!((again.index_type, again.metric, again.auto), (params.index_type, params.metric, params.auto));
        }
    }
});
