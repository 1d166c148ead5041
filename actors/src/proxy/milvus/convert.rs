//! Conversions between the Milvus wire types (`proto`) and Quiver's own types. Every refusal
//! names the field or parameter at fault, in Milvus' words where pymilvus users know them.

use std::collections::BTreeMap;

use prost::Message;
use quiver_runtime::{Error, Result};
use quiver_schemas::{
    CollectionInfo, CollectionSchema, Column, Consistency, DataType, FieldSchema, IndexParams, IndexType, MetricType,
    PrimaryKey, RowBatch, ScalarValue, SearchParams,
};

use super::proto::common::{self, ConsistencyLevel, ErrorCode, KeyValuePair};
use super::proto::schema::{self as ms, field_data, scalar_field, vector_field, FieldData, ScalarField, VectorField};

/// Milvus' own field ids start here; 0–99 are system fields (row id, timestamp).
const FIRST_FIELD_ID: i64 = 100;
/// Name of the dynamic field, as Milvus shows it to clients.
pub const META: &str = "$meta";

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

pub fn ok() -> common::Status {
    common::Status::default()
}

/// An error as a Milvus status: codes follow Milvus' merr numbers (100 collection not found,
/// 1100 invalid parameter, 101 not loaded, …) so pymilvus raises the exception users expect.
#[allow(deprecated)] // `error_code` is deprecated in milvus-proto, yet pymilvus 2.x still reads it.
pub fn status_of(e: &Error) -> common::Status {
    // Exhaustive on purpose: a new error variant must decide its Milvus code here.
    let (error_code, code, retriable) = match e {
        Error::CollectionNotFound(_) => (ErrorCode::CollectionNotExists, 100, false),
        Error::NotLoaded(_) => (ErrorCode::UnexpectedError, 101, false),
        Error::IndexNotFound(_) => (ErrorCode::IndexNotExist, 700, false),
        // Databases are the only other thing a Milvus client can name that may not exist.
        Error::NotFound(_) => (ErrorCode::UnexpectedError, 800, false),
        Error::InvalidArgument(_) | Error::Decode(_) | Error::AlreadyExists(_) => {
            (ErrorCode::IllegalArgument, 1100, false)
        }
        Error::Unavailable(_) | Error::NotServed(_) | Error::Timeout { .. } | Error::Stale(_) => {
            (ErrorCode::UnexpectedError, 503, true)
        }
        // pymilvus backs off and retries a rate-limited call by itself (merr ErrServiceRateLimit).
        Error::ResourceExhausted(_) => (ErrorCode::RateLimit, 8, true),
        // The client's own deadline passed: retrying cannot help it.
        Error::DeadlineExceeded(_) => (ErrorCode::UnexpectedError, 503, false),
        // Quiver's own failures (faiss, storage, a malformed reply between nodes, configuration).
        Error::Internal(_) | Error::Config(_) | Error::ObjectStore(_) | Error::Io(_) => {
            (ErrorCode::UnexpectedError, 1, false)
        }
    };
    common::Status {
        error_code: error_code as i32,
        reason: e.to_string(),
        code,
        retriable,
        detail: e.to_string(),
        ..Default::default()
    }
}

pub fn kv(key: &str, value: impl ToString) -> KeyValuePair {
    KeyValuePair { key: key.to_string(), value: value.to_string() }
}

fn find<'a>(pairs: &'a [KeyValuePair], key: &str) -> Option<&'a str> {
    pairs.iter().find(|p| p.key.eq_ignore_ascii_case(key)).map(|p| p.value.as_str())
}

pub fn consistency_of(level: i32) -> Consistency {
    match ConsistencyLevel::try_from(level).unwrap_or(ConsistencyLevel::Bounded) {
        // Quiver keeps no client sessions; Strong gives Session's read-your-writes and more.
        ConsistencyLevel::Strong | ConsistencyLevel::Session => Consistency::Strong,
        ConsistencyLevel::Eventually => Consistency::Eventually,
        ConsistencyLevel::Bounded | ConsistencyLevel::Customized => Consistency::Bounded,
    }
}

pub fn consistency_to(c: Consistency) -> ConsistencyLevel {
    match c {
        Consistency::Strong => ConsistencyLevel::Strong,
        Consistency::Bounded => ConsistencyLevel::Bounded,
        Consistency::Eventually => ConsistencyLevel::Eventually,
    }
}

// ---- schemas ----

fn data_type_from(t: i32, field: &str) -> Result<DataType> {
    use ms::DataType as M;
    let m = M::try_from(t).map_err(|_| bad(format!("field {field:?}: unknown data type {t}")))?;
    Ok(match m {
        M::Bool => DataType::Bool,
        M::Int64 => DataType::Int64,
        M::Float => DataType::Float,
        M::Double => DataType::Double,
        M::VarChar | M::String => DataType::VarChar,
        M::Json => DataType::Json,
        M::FloatVector => DataType::FloatVector,
        other => {
            return Err(bad(format!(
                "field {field:?}: data type {} is not supported by Quiver (supported: BOOL, INT64, FLOAT, DOUBLE, \
                 VARCHAR, JSON, FLOAT_VECTOR)",
                other.as_str_name().to_uppercase()
            )))
        }
    })
}

fn data_type_to(t: DataType) -> ms::DataType {
    match t {
        DataType::Bool => ms::DataType::Bool,
        DataType::Int64 => ms::DataType::Int64,
        DataType::Float => ms::DataType::Float,
        DataType::Double => ms::DataType::Double,
        DataType::VarChar => ms::DataType::VarChar,
        DataType::Json => ms::DataType::Json,
        DataType::FloatVector => ms::DataType::FloatVector,
    }
}

fn u32_param(params: &[KeyValuePair], key: &str, field: &str) -> Result<u32> {
    match find(params, key) {
        None => Ok(0),
        Some(v) => v.trim().parse::<u32>().map_err(|_| bad(format!("field {field:?}: {key} {v:?} is not a number"))),
    }
}

/// A Milvus `CreateCollectionRequest.schema` (serialized `schema.CollectionSchema`) as Quiver's schema.
#[allow(deprecated)] // the schema-level `autoID` is deprecated, yet older clients still set it.
pub fn schema_from(name: &str, bytes: &[u8], shards: i32, level: i32) -> Result<CollectionSchema> {
    let m = ms::CollectionSchema::decode(bytes).map_err(|e| bad(format!("malformed collection schema: {e}")))?;
    if !m.name.is_empty() && m.name != name {
        return Err(bad(format!("schema name {:?} differs from collection name {name:?}", m.name)));
    }
    if !m.functions.is_empty() {
        return Err(bad("schema functions (BM25, text embedding) are not supported by Quiver"));
    }
    let mut fields = Vec::new();
    for f in &m.fields {
        if f.is_dynamic || f.name == META {
            continue;
        }
        if f.is_partition_key || f.is_clustering_key {
            return Err(bad(format!("field {:?}: partition and clustering keys are not supported by Quiver", f.name)));
        }
        let data_type = data_type_from(f.data_type, &f.name)?;
        // Only the parameters of the field's type are kept (what DescribeCollection shows).
        let dim = if data_type == DataType::FloatVector { u32_param(&f.type_params, "dim", &f.name)? } else { 0 };
        let max_length =
            if data_type == DataType::VarChar { u32_param(&f.type_params, "max_length", &f.name)? } else { 0 };
        fields.push(FieldSchema {
            name: f.name.clone(),
            data_type,
            is_primary: f.is_primary_key,
            auto_id: f.is_primary_key && (f.auto_id || m.auto_id),
            dim,
            max_length,
            description: f.description.clone(),
        });
    }
    Ok(CollectionSchema {
        name: name.to_string(),
        description: m.description,
        fields,
        enable_dynamic_field: m.enable_dynamic_field,
        num_shards: u32::try_from(shards.max(0)).unwrap_or(0),
        consistency: consistency_of(level),
    })
}

/// Quiver's schema as Milvus shows it: user fields only (no `$meta`, no system fields).
pub fn schema_to(info: &CollectionInfo) -> ms::CollectionSchema {
    let fields = info
        .schema
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut type_params = Vec::new();
            if f.data_type == DataType::FloatVector {
                type_params.push(kv("dim", f.dim));
            }
            if f.data_type == DataType::VarChar {
                type_params.push(kv("max_length", if f.max_length == 0 { 65535 } else { f.max_length }));
            }
            ms::FieldSchema {
                field_id: FIRST_FIELD_ID + i as i64,
                name: f.name.clone(),
                is_primary_key: f.is_primary,
                description: f.description.clone(),
                data_type: data_type_to(f.data_type) as i32,
                type_params,
                auto_id: f.auto_id,
                ..Default::default()
            }
        })
        .collect();
    ms::CollectionSchema {
        name: info.schema.name.clone(),
        description: info.schema.description.clone(),
        fields,
        enable_dynamic_field: info.schema.enable_dynamic_field,
        ..Default::default()
    }
}

// ---- indexes ----

pub fn metric_from(s: &str) -> Result<MetricType> {
    match s.trim().to_ascii_uppercase().as_str() {
        "L2" => Ok(MetricType::L2),
        "IP" => Ok(MetricType::Ip),
        "COSINE" => Ok(MetricType::Cosine),
        other => Err(bad(format!("metric_type {other:?} is not supported for float vectors (use L2, IP or COSINE)"))),
    }
}

pub fn metric_name(m: MetricType) -> &'static str {
    match m {
        MetricType::L2 => "L2",
        MetricType::Ip => "IP",
        MetricType::Cosine => "COSINE",
    }
}

fn index_name(t: IndexType) -> &'static str {
    match t {
        IndexType::Flat => "FLAT",
        IndexType::IvfFlat => "IVF_FLAT",
        IndexType::IvfSq8 => "IVF_SQ8",
        IndexType::IvfPq => "IVF_PQ",
        IndexType::Hnsw => "HNSW",
    }
}

/// Flattens Milvus' index / search parameter pairs: the `params` JSON object (pymilvus sends
/// one) is merged with any top-level pairs. Keys are lower-cased.
fn flat_params(pairs: &[KeyValuePair]) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        if p.key == "params" {
            let v: serde_json::Value = serde_json::from_str(&p.value)
                .map_err(|e| bad(format!("params {:?} is not a JSON object: {e}", p.value)))?;
            let serde_json::Value::Object(map) = v else {
                return Err(bad(format!("params {:?} is not a JSON object", p.value)));
            };
            for (k, v) in map {
                out.insert(k.to_ascii_lowercase(), v);
            }
        } else {
            out.insert(p.key.to_ascii_lowercase(), serde_json::Value::String(p.value.clone()));
        }
    }
    Ok(out)
}

fn num(params: &BTreeMap<String, serde_json::Value>, key: &str) -> Result<Option<u32>> {
    let Some(v) = params.get(key) else { return Ok(None) };
    let n = match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.and_then(|n| u32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| bad(format!("parameter {key} = {v} is not a non-negative integer")))
}

fn text<'a>(params: &'a BTreeMap<String, serde_json::Value>, key: &str) -> Option<&'a str> {
    params.get(key).and_then(|v| v.as_str())
}

/// A vector-field index from `CreateIndexRequest.extra_params`. AUTOINDEX is HNSW (M 16,
/// efConstruction 200), as in Milvus; the metric defaults to COSINE, as in Milvus 2.4+.
pub fn index_from(pairs: &[KeyValuePair]) -> Result<IndexParams> {
    let p = flat_params(pairs)?;
    let kind = text(&p, "index_type").unwrap_or("AUTOINDEX").trim().to_ascii_uppercase();
    let index_type = match kind.as_str() {
        "FLAT" => IndexType::Flat,
        "IVF_FLAT" => IndexType::IvfFlat,
        "IVF_SQ8" => IndexType::IvfSq8,
        "IVF_PQ" => IndexType::IvfPq,
        "HNSW" | "AUTOINDEX" | "" => IndexType::Hnsw,
        other => {
            return Err(bad(format!(
                "index_type {other:?} is not supported (supported: FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ, HNSW, AUTOINDEX)"
            )))
        }
    };
    let metric = metric_from(text(&p, "metric_type").unwrap_or("COSINE"))?;
    let auto = kind == "AUTOINDEX" || kind.is_empty();
    Ok(IndexParams {
        index_type,
        metric,
        nlist: num(&p, "nlist")?.unwrap_or(0),
        m: num(&p, "m")?.unwrap_or(if auto { 16 } else { 0 }),
        nbits: num(&p, "nbits")?.unwrap_or(0),
        ef_construction: num(&p, "efconstruction")?.unwrap_or(if auto { 200 } else { 0 }),
        auto,
        name: String::new(),
    })
}

/// The pairs `DescribeIndex` returns (what pymilvus shows as the index's params).
pub fn index_to(i: &IndexParams) -> Vec<KeyValuePair> {
    let mut params = serde_json::Map::new();
    match i.index_type {
        IndexType::IvfFlat | IndexType::IvfSq8 => {
            params.insert("nlist".into(), i.nlist.into());
        }
        IndexType::IvfPq => {
            params.insert("nlist".into(), i.nlist.into());
            params.insert("m".into(), i.m.into());
            params.insert("nbits".into(), i.nbits.into());
        }
        IndexType::Hnsw => {
            params.insert("M".into(), i.m.into());
            params.insert("efConstruction".into(), i.ef_construction.into());
        }
        IndexType::Flat => {}
    }
    // Flattened, as pymilvus 2.4+ sends them (and shows them), plus the `params` JSON older
    // clients read.
    let mut out = vec![
        kv("index_type", if i.auto { "AUTOINDEX" } else { index_name(i.index_type) }),
        kv("metric_type", metric_name(i.metric)),
    ];
    out.extend(params.iter().map(|(k, v)| kv(k, v)));
    out.push(kv("params", serde_json::Value::Object(params)));
    out
}

// ---- search parameters ----

/// What a Milvus search asks for besides vectors and filter.
#[derive(Debug, Default)]
pub struct Knobs {
    pub top_k: u32,
    pub offset: u32,
    pub metric: Option<MetricType>,
    pub params: SearchParams,
    /// Digits to round scores to (-1 = no rounding).
    pub round_decimal: i32,
}

pub fn knobs_from(pairs: &[KeyValuePair]) -> Result<Knobs> {
    let p = flat_params(pairs)?;
    if p.contains_key("group_by_field") && text(&p, "group_by_field").is_some_and(|s| !s.is_empty()) {
        return Err(bad("grouping search (group_by_field) is not supported by Quiver"));
    }
    if p.contains_key("radius") || p.contains_key("range_filter") {
        return Err(bad("range search (radius / range_filter) is not supported by Quiver"));
    }
    let top_k = match num(&p, "topk")? {
        Some(k) => k,
        None => num(&p, "limit")?.ok_or_else(|| bad("search needs topk (limit)"))?,
    };
    let round_decimal = match p.get("round_decimal") {
        None => -1,
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| bad(format!("round_decimal {v} is not an integer")))?,
    };
    Ok(Knobs {
        top_k,
        offset: num(&p, "offset")?.unwrap_or(0),
        metric: text(&p, "metric_type").filter(|s| !s.is_empty()).map(metric_from).transpose()?,
        params: SearchParams { nprobe: num(&p, "nprobe")?.unwrap_or(0), ef: num(&p, "ef")?.unwrap_or(0) },
        round_decimal,
    })
}

/// `PlaceholderGroup` / `PlaceholderValue` from Milvus' common.proto (not in our subset file
/// because they never appear as fields: searches carry them serialized in `placeholder_group`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PlaceholderGroup {
    #[prost(message, repeated, tag = "1")]
    pub placeholders: Vec<PlaceholderValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PlaceholderValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(int32, tag = "2")]
    pub r#type: i32,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub values: Vec<Vec<u8>>,
}

/// Placeholder type of float vectors (common.PlaceholderType.FloatVector).
const FLOAT_VECTOR_PLACEHOLDER: i32 = 101;

/// Rows of `info`'s collection in `megabytes` MiB of segment data (vectors and primary keys;
/// at least one), for Milvus' `target_size`: `u64::MAX` (no limit) when that many bytes
/// overflow, as VectorDBBench's "as large as possible" (`i64::MAX` bytes in MB) does.
pub fn rows_in_megabytes(info: &CollectionInfo, megabytes: u64) -> u64 {
    let row = u64::from(info.dim()) * 4 + 8;
    megabytes.checked_mul(1024 * 1024).map_or(u64::MAX, |bytes| (bytes / row).max(1))
}

/// The serialized query vectors of a search request. Milvus 2.6 put them in the
/// `search_input` oneof beside searching by primary keys, which Quiver does not serve.
pub fn placeholder_group(r: &super::proto::milvus::SearchRequest) -> Result<&[u8]> {
    use super::proto::milvus::search_request::SearchInput;
    match &r.search_input {
        Some(SearchInput::PlaceholderGroup(group)) => Ok(group),
        Some(SearchInput::Ids(_)) => {
            Err(bad("searching by primary keys (search_input.ids) is not supported; send the query vectors"))
        }
        None => Ok(&[]),
    }
}

/// The query vectors of a search: little-endian f32s, one value per query.
pub fn vectors_from(placeholder_group: &[u8], dim: u32, max_nq: usize) -> Result<(Vec<f32>, usize)> {
    let group = PlaceholderGroup::decode(placeholder_group)
        .map_err(|e| bad(format!("malformed placeholder group (search vectors): {e}")))?;
    let Some(ph) = group.placeholders.first() else { return Err(bad("search has no query vectors")) };
    if ph.r#type != FLOAT_VECTOR_PLACEHOLDER {
        return Err(bad(format!(
            "search vectors of placeholder type {} are not supported (Quiver serves FLOAT_VECTOR fields)",
            ph.r#type
        )));
    }
    let nq = ph.values.len();
    if nq == 0 {
        return Err(bad("search has no query vectors"));
    }
    if nq > max_nq {
        return Err(bad(format!("{nq} query vectors exceed the limit of {max_nq} per search (proxy.max_nq)")));
    }
    // Every length is checked before anything is allocated: the allocation is then bounded by
    // the bytes the client really sent, not by what it claims.
    let want = dim as usize * 4;
    if let Some((i, v)) = ph.values.iter().enumerate().find(|(_, v)| v.len() != want) {
        return Err(bad(format!(
            "vector dimension mismatch: query {i} has {} bytes ({} dimensions), the collection's vector field has {dim}",
            v.len(),
            v.len() / 4
        )));
    }
    let mut out = Vec::with_capacity(nq * dim as usize);
    for v in &ph.values {
        out.extend(v.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    }
    Ok((out, nq))
}

// ---- rows ----

fn field_of<'a>(info: &'a CollectionInfo, name: &str) -> Option<&'a FieldSchema> {
    info.schema.fields.iter().find(|f| f.name == name)
}

fn scalar_values(field: &str, data: &ScalarField, want: DataType) -> Result<Vec<ScalarValue>> {
    use scalar_field::Data;
    let wrong =
        |got: &str| bad(format!("the data type of field {field:?} doesn't match: expected {want:?}, got {got}"));
    let Some(d) = &data.data else { return Err(bad(format!("field {field:?} has no data"))) };
    Ok(match (want, d) {
        (DataType::Bool, Data::BoolData(a)) => a.data.iter().map(|&v| ScalarValue::Bool(v)).collect(),
        (DataType::Int64, Data::LongData(a)) => a.data.iter().map(|&v| ScalarValue::Int64(v)).collect(),
        (DataType::Int64, Data::IntData(a)) => a.data.iter().map(|&v| ScalarValue::Int64(i64::from(v))).collect(),
        (DataType::Float, Data::FloatData(a)) => a.data.iter().map(|&v| ScalarValue::Float(v)).collect(),
        (DataType::Double, Data::DoubleData(a)) => a.data.iter().map(|&v| ScalarValue::Double(v)).collect(),
        (DataType::VarChar, Data::StringData(a)) => a.data.iter().map(|v| ScalarValue::VarChar(v.clone())).collect(),
        (DataType::Json, Data::JsonData(a)) => a
            .data
            .iter()
            .map(|b| {
                std::str::from_utf8(b)
                    .map(|s| ScalarValue::Json(s.to_string()))
                    .map_err(|_| bad(format!("field {field:?}: JSON value is not UTF-8")))
            })
            .collect::<Result<_>>()?,
        (_, Data::BoolData(_)) => return Err(wrong("BOOL")),
        (_, Data::IntData(_)) => return Err(wrong("INT32")),
        (_, Data::LongData(_)) => return Err(wrong("INT64")),
        (_, Data::FloatData(_)) => return Err(wrong("FLOAT")),
        (_, Data::DoubleData(_)) => return Err(wrong("DOUBLE")),
        (_, Data::StringData(_)) => return Err(wrong("VARCHAR")),
        (_, Data::JsonData(_)) => return Err(wrong("JSON")),
        (_, _) => return Err(wrong("an unsupported type")),
    })
}

fn check_len(field: &str, got: usize, rows: usize) -> Result<()> {
    if got != rows {
        return Err(bad(format!("field {field:?} has {got} values, but the request has {rows} rows")));
    }
    Ok(())
}

/// Insert / upsert columns as a row batch, checked against the schema.
pub fn rows_from(info: &CollectionInfo, fields: &[FieldData], num_rows: u32, upsert: bool) -> Result<RowBatch> {
    let rows = num_rows as usize;
    let mut batch = RowBatch { dim: info.dim(), ..Default::default() };
    let mut seen = std::collections::HashSet::new();
    for fd in fields {
        if !seen.insert((fd.is_dynamic, fd.field_name.as_str())) {
            return Err(bad(format!("field {:?} is given twice", fd.field_name)));
        }
        if fd.is_dynamic || fd.field_name == META {
            if !info.schema.enable_dynamic_field {
                return Err(bad(format!(
                    "collection {:?} has no dynamic field; remove the extra keys from the rows",
                    info.schema.name
                )));
            }
            let Some(field_data::Field::Scalars(s)) = &fd.field else {
                return Err(bad("the dynamic field ($meta) must hold JSON"));
            };
            let values = scalar_values(META, s, DataType::Json)?;
            check_len(META, values.len(), rows)?;
            batch.dynamic = values
                .into_iter()
                .map(|v| match v {
                    ScalarValue::Json(s) => s,
                    _ => String::new(),
                })
                .collect();
            continue;
        }
        let Some(schema) = field_of(info, &fd.field_name) else {
            return Err(bad(format!("field {:?} does not exist in collection {:?}", fd.field_name, info.schema.name)));
        };
        match (&fd.field, schema.data_type) {
            (Some(field_data::Field::Vectors(v)), DataType::FloatVector) => {
                batch.vectors = float_vectors(&fd.field_name, v, schema.dim)?;
                check_len(&fd.field_name, batch.vectors.len() / schema.dim.max(1) as usize, rows)?;
            }
            (Some(field_data::Field::Scalars(s)), t) if t != DataType::FloatVector => {
                let values = scalar_values(&fd.field_name, s, t)?;
                check_len(&fd.field_name, values.len(), rows)?;
                if schema.is_primary {
                    if schema.auto_id && !upsert {
                        return Err(bad(format!(
                            "primary key {:?} is auto-generated (auto_id); do not pass it on insert",
                            fd.field_name
                        )));
                    }
                    batch.pks = values
                        .into_iter()
                        .map(|v| match v {
                            ScalarValue::Int64(i) => Ok(PrimaryKey::Int64(i)),
                            ScalarValue::VarChar(s) => Ok(PrimaryKey::VarChar(s)),
                            _ => Err(bad(format!("primary key {:?} must be INT64 or VARCHAR", fd.field_name))),
                        })
                        .collect::<Result<_>>()?;
                } else {
                    batch.columns.push(Column { name: fd.field_name.clone(), values });
                }
            }
            _ => {
                return Err(bad(format!(
                    "the data type of field {:?} doesn't match: expected {:?}",
                    fd.field_name, schema.data_type
                )))
            }
        }
    }
    for f in &info.schema.fields {
        let given = fields.iter().any(|fd| fd.field_name == f.name);
        if !(given || f.is_primary && f.auto_id) {
            return Err(bad(format!("insert missed field {:?}: every row needs it", f.name)));
        }
    }
    if upsert && batch.pks.is_empty() {
        return Err(bad("upsert needs the primary key of every row"));
    }
    Ok(batch)
}

fn float_vectors(field: &str, v: &VectorField, dim: u32) -> Result<Vec<f32>> {
    let Some(vector_field::Data::FloatVector(a)) = &v.data else {
        return Err(bad(format!("field {field:?} is FLOAT_VECTOR; got another vector type")));
    };
    if v.dim != i64::from(dim) {
        return Err(bad(format!("the dim ({}) of field data({field}) is not equal to schema dim ({dim})", v.dim)));
    }
    Ok(a.data.clone())
}

pub fn ids_to(pks: &[PrimaryKey]) -> ms::IDs {
    use ms::i_ds::IdField;
    let field = if pks.iter().all(|p| matches!(p, PrimaryKey::Int64(_))) {
        IdField::IntId(ms::LongArray {
            data: pks.iter().map(|p| if let PrimaryKey::Int64(i) = p { *i } else { 0 }).collect(),
        })
    } else {
        IdField::StrId(ms::StringArray {
            data: pks
                .iter()
                .map(|p| match p {
                    PrimaryKey::VarChar(s) => s.clone(),
                    PrimaryKey::Int64(i) => i.to_string(),
                })
                .collect(),
        })
    };
    ms::IDs { id_field: Some(field) }
}

fn scalar_field(data: scalar_field::Data) -> Option<field_data::Field> {
    Some(field_data::Field::Scalars(ScalarField { data: Some(data) }))
}

/// A result column as Milvus field data, typed by the schema (values of rows written before a
/// field existed come back as the type's zero value).
pub fn column_to(info: &CollectionInfo, col: &Column) -> FieldData {
    use scalar_field::Data;
    let json = |v: &ScalarValue| -> Vec<u8> {
        match v {
            ScalarValue::Json(s) | ScalarValue::VarChar(s) => s.clone().into_bytes(),
            ScalarValue::Null => b"{}".to_vec(),
            ScalarValue::Bool(b) => b.to_string().into_bytes(),
            ScalarValue::Int64(i) => i.to_string().into_bytes(),
            ScalarValue::Float(f) => f.to_string().into_bytes(),
            ScalarValue::Double(f) => f.to_string().into_bytes(),
        }
    };
    if col.name == META {
        return FieldData {
            r#type: ms::DataType::Json as i32,
            field_name: META.to_string(),
            field: scalar_field(Data::JsonData(ms::JsonArray { data: col.values.iter().map(json).collect() })),
            is_dynamic: true,
            ..Default::default()
        };
    }
    let (id, t) = info
        .schema
        .fields
        .iter()
        .enumerate()
        .find(|(_, f)| f.name == col.name)
        .map(|(i, f)| (FIRST_FIELD_ID + i as i64, f.data_type))
        .unwrap_or((0, DataType::Json));
    let vals = &col.values;
    let data = match t {
        DataType::Bool => {
            Data::BoolData(ms::BoolArray { data: vals.iter().map(|v| matches!(v, ScalarValue::Bool(true))).collect() })
        }
        DataType::Int64 => Data::LongData(ms::LongArray {
            data: vals.iter().map(|v| if let ScalarValue::Int64(i) = v { *i } else { 0 }).collect(),
        }),
        DataType::Float => Data::FloatData(ms::FloatArray {
            data: vals
                .iter()
                .map(|v| match v {
                    ScalarValue::Float(f) => *f,
                    ScalarValue::Double(d) => *d as f32,
                    ScalarValue::Int64(i) => *i as f32,
                    _ => 0.0,
                })
                .collect(),
        }),
        DataType::Double => Data::DoubleData(ms::DoubleArray {
            data: vals
                .iter()
                .map(|v| match v {
                    ScalarValue::Float(f) => f64::from(*f),
                    ScalarValue::Double(d) => *d,
                    ScalarValue::Int64(i) => *i as f64,
                    _ => 0.0,
                })
                .collect(),
        }),
        DataType::VarChar => Data::StringData(ms::StringArray {
            data: vals
                .iter()
                .map(|v| if let ScalarValue::VarChar(s) = v { s.clone() } else { String::new() })
                .collect(),
        }),
        DataType::Json | DataType::FloatVector => {
            Data::JsonData(ms::JsonArray { data: vals.iter().map(json).collect() })
        }
    };
    FieldData {
        r#type: data_type_to(if t == DataType::FloatVector { DataType::Json } else { t }) as i32,
        field_name: col.name.clone(),
        field: scalar_field(data),
        field_id: id,
        ..Default::default()
    }
}

/// The primary keys as a result column.
pub fn pk_column(info: &CollectionInfo, pks: &[PrimaryKey]) -> FieldData {
    let name = info.primary_field().map(|f| f.name.clone()).unwrap_or_default();
    let values = pks
        .iter()
        .map(|p| match p {
            PrimaryKey::Int64(i) => ScalarValue::Int64(*i),
            PrimaryKey::VarChar(s) => ScalarValue::VarChar(s.clone()),
        })
        .collect();
    column_to(info, &Column { name, values })
}

/// Vectors as a result column.
pub fn vector_column(info: &CollectionInfo, vectors: Vec<f32>) -> FieldData {
    let (id, name) = info
        .schema
        .fields
        .iter()
        .enumerate()
        .find(|(_, f)| f.data_type == DataType::FloatVector)
        .map(|(i, f)| (FIRST_FIELD_ID + i as i64, f.name.clone()))
        .unwrap_or_default();
    FieldData {
        r#type: ms::DataType::FloatVector as i32,
        field_name: name,
        field: Some(field_data::Field::Vectors(VectorField {
            dim: i64::from(info.dim()),
            data: Some(vector_field::Data::FloatVector(ms::FloatArray { data: vectors })),
        })),
        field_id: id,
        ..Default::default()
    }
}

/// Output fields as Quiver asks for them: schema fields by name, every dynamic key through
/// `$meta` (pymilvus picks the keys it asked for out of it), `*` for all scalar fields.
/// Returns (scalar fields, whether the vector field was asked for).
pub fn output_fields(info: &CollectionInfo, requested: &[String]) -> Result<(Vec<String>, bool)> {
    let mut out: Vec<String> = Vec::new();
    let mut vector = false;
    let push = |out: &mut Vec<String>, f: &str| {
        if !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    };
    for f in requested {
        let f = f.trim();
        if f.is_empty() {
            continue;
        }
        if f == "*" {
            vector = true;
            for field in &info.schema.fields {
                if !field.is_primary && field.data_type != DataType::FloatVector {
                    push(&mut out, &field.name);
                }
            }
            if info.schema.enable_dynamic_field {
                push(&mut out, META);
            }
            continue;
        }
        match field_of(info, f) {
            Some(field) if field.data_type == DataType::FloatVector => vector = true,
            Some(field) if field.is_primary => {}
            Some(field) => push(&mut out, &field.name),
            None if f == META || info.schema.enable_dynamic_field => push(&mut out, META),
            None => {
                return Err(bad(format!(
                    "field {f} does not exist in collection {:?} (output_fields)",
                    info.schema.name
                )))
            }
        }
    }
    Ok((out, vector))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_schemas::Consistency;

    fn field(name: &str, t: ms::DataType, params: &[(&str, &str)]) -> ms::FieldSchema {
        ms::FieldSchema {
            name: name.into(),
            data_type: t as i32,
            type_params: params.iter().map(|(k, v)| kv(k, v)).collect(),
            ..Default::default()
        }
    }

    fn schema_bytes(fields: Vec<ms::FieldSchema>, dynamic: bool) -> Vec<u8> {
        ms::CollectionSchema { name: "c".into(), fields, enable_dynamic_field: dynamic, ..Default::default() }
            .encode_to_vec()
    }

    fn info() -> CollectionInfo {
        let mut id = field("id", ms::DataType::Int64, &[]);
        id.is_primary_key = true;
        let fields = vec![
            id,
            field("vector", ms::DataType::FloatVector, &[("dim", "2")]),
            field("title", ms::DataType::VarChar, &[("max_length", "16")]),
            field("$meta", ms::DataType::Json, &[]),
        ];
        let schema = schema_from("c", &schema_bytes(fields, true), 0, ConsistencyLevel::Strong as i32).unwrap();
        CollectionInfo {
            partitions: Default::default(),
            id: 7,
            schema,
            index: None,
            created_ts: 1,
            scalar_indexes: Vec::new(),
        }
    }

    fn longs(name: &str, v: Vec<i64>) -> FieldData {
        FieldData {
            field_name: name.into(),
            field: scalar_field(scalar_field::Data::LongData(ms::LongArray { data: v })),
            ..Default::default()
        }
    }

    fn strings(name: &str, v: &[&str]) -> FieldData {
        FieldData {
            field_name: name.into(),
            field: scalar_field(scalar_field::Data::StringData(ms::StringArray {
                data: v.iter().map(|s| s.to_string()).collect(),
            })),
            ..Default::default()
        }
    }

    fn vectors(dim: i64, v: Vec<f32>) -> FieldData {
        FieldData {
            field_name: "vector".into(),
            field: Some(field_data::Field::Vectors(VectorField {
                dim,
                data: Some(vector_field::Data::FloatVector(ms::FloatArray { data: v })),
            })),
            ..Default::default()
        }
    }

    fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn schemas_convert_both_ways_without_meta() {
        let info = info();
        assert_eq!(info.schema.fields.len(), 3, "$meta is not a field: {:?}", info.schema.fields);
        assert!(info.schema.enable_dynamic_field);
        assert_eq!(info.schema.consistency, Consistency::Strong);
        assert_eq!(info.dim(), 2);
        let back = schema_to(&info);
        assert!(back.fields.iter().all(|f| f.field_id >= 100 && f.name != META));
        let title = back.fields.iter().find(|f| f.name == "title").unwrap();
        assert_eq!(find(&title.type_params, "max_length"), Some("16"));
        let bad = schema_bytes(vec![field("n", ms::DataType::Int32, &[])], false);
        let e = err(schema_from("c", &bad, 0, 0));
        assert!(e.contains("\"n\"") && e.contains("INT32"), "{e}");
        assert!(err(schema_from("c", b"\xff\xff", 0, 0)).contains("malformed collection schema"));
    }

    /// Found by the `milvus_requests` fuzz target: a `max_length` on a JSON field (or a `dim` on
    /// a scalar) was stored, DescribeCollection did not show it, and the schema it showed
    /// created a different collection.
    #[test]
    fn type_params_of_other_types_are_not_kept() {
        let fields = vec![
            field("id", ms::DataType::Int64, &[("dim", "4")]),
            field("v", ms::DataType::FloatVector, &[("dim", "4"), ("max_length", "9")]),
            field("meta", ms::DataType::Json, &[("max_length", "64"), ("dim", "8")]),
        ];
        let s = schema_from("c", &schema_bytes(fields, false), 1, 0).unwrap();
        let kept: Vec<(u32, u32)> = s.fields.iter().map(|f| (f.dim, f.max_length)).collect();
        assert_eq!(kept, vec![(0, 0), (4, 0), (0, 0)]);
    }

    #[test]
    fn index_params_flattened_or_as_json() {
        let flat = [kv("index_type", "HNSW"), kv("metric_type", "IP"), kv("M", "8"), kv("efConstruction", "64")];
        let p = index_from(&flat).unwrap();
        assert_eq!(
            (p.index_type, p.metric, p.m, p.ef_construction, p.auto),
            (IndexType::Hnsw, MetricType::Ip, 8, 64, false)
        );
        let json =
            [kv("index_type", "IVF_PQ"), kv("metric_type", "L2"), kv("params", r#"{"nlist": 8, "m": 4, "nbits": 8}"#)];
        let p = index_from(&json).unwrap();
        assert_eq!((p.nlist, p.m, p.nbits), (8, 4, 8));
        let auto = index_from(&[kv("index_type", "AUTOINDEX")]).unwrap();
        assert!(auto.auto && auto.index_type == IndexType::Hnsw && auto.metric == MetricType::Cosine);
        let shown = index_to(&auto);
        assert_eq!(find(&shown, "index_type"), Some("AUTOINDEX"));
        assert_eq!(find(&shown, "M"), Some("16"));
        assert!(err(index_from(&[kv("index_type", "DISKANN")])).contains("DISKANN"));
        assert!(err(index_from(&[kv("metric_type", "HAMMING")])).contains("HAMMING"));
        assert!(err(index_from(&[kv("params", "{nope")])).contains("not a JSON object"));
        assert!(err(index_from(&[kv("nlist", "-3")])).contains("nlist"));
    }

    #[test]
    fn search_knobs_and_placeholders() {
        let k = knobs_from(&[kv("topk", "10"), kv("offset", "2"), kv("params", r#"{"ef": 64, "metric_type": "L2"}"#)])
            .unwrap();
        assert_eq!((k.top_k, k.offset, k.params.ef, k.metric), (10, 2, 64, Some(MetricType::L2)));
        assert!(err(knobs_from(&[])).contains("topk"));
        assert!(err(knobs_from(&[kv("topk", "3"), kv("params", r#"{"radius": 1}"#)])).contains("range search"));
        let group = PlaceholderGroup {
            placeholders: vec![PlaceholderValue {
                tag: "$0".into(),
                r#type: FLOAT_VECTOR_PLACEHOLDER,
                values: vec![[1.0f32, 2.0].iter().flat_map(|f| f.to_le_bytes()).collect()],
            }],
        };
        let (v, nq) = vectors_from(&group.encode_to_vec(), 2, 16).unwrap();
        assert_eq!((v, nq), (vec![1.0, 2.0], 1));
        let e = err(vectors_from(&group.encode_to_vec(), 3, 16));
        assert!(e.contains("dimension") && e.contains('3'), "{e}");
        assert!(err(vectors_from(b"\x0a\x05", 2, 16)).contains("placeholder"));
    }

    #[test]
    fn insert_rows_are_checked_against_the_schema() {
        let info = info();
        let meta = FieldData {
            field_name: META.into(),
            is_dynamic: true,
            field: scalar_field(scalar_field::Data::JsonData(ms::JsonArray { data: vec![br#"{"k":1}"#.to_vec()] })),
            ..Default::default()
        };
        let ok = rows_from(
            &info,
            &[longs("id", vec![5]), vectors(2, vec![0.5, 0.5]), strings("title", &["a"]), meta],
            1,
            false,
        )
        .unwrap();
        assert_eq!(ok.pks, vec![PrimaryKey::Int64(5)]);
        assert_eq!(ok.dynamic, vec![r#"{"k":1}"#.to_string()]);
        let e = err(rows_from(&info, &[longs("id", vec![5]), vectors(2, vec![0.5, 0.5])], 1, false));
        assert!(e.contains("title"), "{e}");
        let e = err(rows_from(
            &info,
            &[longs("id", vec![5]), vectors(3, vec![0.5; 3]), strings("title", &["a"])],
            1,
            false,
        ));
        assert!(e.contains("dim (3)") && e.contains("schema dim (2)"), "{e}");
        let e =
            err(rows_from(&info, &[longs("id", vec![5]), vectors(2, vec![0.5; 2]), longs("title", vec![1])], 1, false));
        assert!(e.contains("title") && e.contains("INT64"), "{e}");
        let e = err(rows_from(
            &info,
            &[longs("id", vec![5, 6]), vectors(2, vec![0.5; 2]), strings("title", &["a"])],
            1,
            false,
        ));
        assert!(e.contains("2 values"), "{e}");
        let e = err(rows_from(&info, &[longs("nope", vec![1])], 1, false));
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn output_fields_expand_and_route_dynamic_keys_through_meta() {
        let info = info();
        let (fields, vector) = output_fields(&info, &["*".into()]).unwrap();
        assert_eq!(fields, vec!["title".to_string(), META.to_string()]);
        assert!(vector);
        let (fields, vector) = output_fields(&info, &["color".into(), "title".into(), "id".into()]).unwrap();
        assert_eq!(fields, vec![META.to_string(), "title".to_string()]);
        assert!(!vector);
    }

    #[test]
    fn errors_map_to_milvus_codes() {
        assert_eq!(status_of(&Error::collection_not_found("x")).code, 100);
        assert_eq!(status_of(&Error::index_not_found("x")).code, 700);
        assert_eq!(status_of(&Error::not_loaded("x")).code, 101);
        // By type, never by text: an invalid argument that mentions "not loaded" stays 1100.
        assert_eq!(status_of(&Error::InvalidArgument("not loaded".into())).code, 1100);
        assert_eq!(status_of(&Error::Internal("faiss".into())).code, 1);
        assert!(!status_of(&Error::DeadlineExceeded("late".into())).retriable);
        assert_eq!(status_of(&Error::InvalidArgument("bad".into())).code, 1100);
        let s = status_of(&Error::Unavailable("later".into()));
        assert!(s.retriable && s.code != 0);
        assert_eq!(ok().code, 0);
    }
}
