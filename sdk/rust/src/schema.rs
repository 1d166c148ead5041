//! Helpers to build schemas, rows, searches and index parameters.

use quiver_schemas::{
    CollectionSchema, Column, Consistency, DataType, FieldSchema, IndexParams, IndexType, MetricType, PrimaryKey,
    Query, RowBatch, Search, SearchParams,
};

use crate::ClientError;

/// A field with everything but name and type defaulted.
pub fn field(name: &str, data_type: DataType) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        data_type,
        is_primary: false,
        auto_id: false,
        dim: 0,
        max_length: 0,
        description: String::new(),
    }
}

/// `id` (Int64 primary key, user-supplied) + `vector` of `dim` floats + dynamic fields.
pub fn simple(name: &str, dim: u32) -> CollectionSchema {
    let mut id = field("id", DataType::Int64);
    id.is_primary = true;
    let mut vector = field("vector", DataType::FloatVector);
    vector.dim = dim;
    CollectionSchema {
        name: name.into(),
        description: String::new(),
        fields: vec![id, vector],
        enable_dynamic_field: true,
        num_shards: 0,
        consistency: Consistency::default(),
    }
}

/// Index parameters with defaults for everything but type and metric.
pub fn index(index_type: IndexType, metric: MetricType) -> IndexParams {
    IndexParams { index_type, metric, nlist: 0, m: 0, nbits: 0, ef_construction: 0, auto: false, name: String::new() }
}

/// Index parameters from the names people type (`quiver ctl index --type HNSW --metric IP`):
/// the index type `FLAT`, `IVF_FLAT`, `IVF_SQ8`, `IVF_PQ`, `HNSW` or `AUTOINDEX` (HNSW marked
/// `auto`) and a metric as [`metric_named`] reads it, in any case; every other parameter 0 (the
/// index's default).
pub fn index_named(index_type: &str, metric: &str) -> Result<IndexParams, ClientError> {
    let kind = match index_type.to_ascii_uppercase().as_str() {
        "FLAT" => IndexType::Flat,
        "IVF_FLAT" => IndexType::IvfFlat,
        "IVF_SQ8" => IndexType::IvfSq8,
        "IVF_PQ" => IndexType::IvfPq,
        "HNSW" | "AUTOINDEX" => IndexType::Hnsw,
        other => {
            return Err(ClientError::InvalidArgument(format!(
                "unknown index type {other:?}: use FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ or HNSW"
            )))
        }
    };
    Ok(IndexParams { auto: index_type.eq_ignore_ascii_case("AUTOINDEX"), ..index(kind, metric_named(metric)?) })
}

/// The metric named `L2`, `IP` or `COSINE`, in any case.
pub fn metric_named(name: &str) -> Result<MetricType, ClientError> {
    match name.to_ascii_uppercase().as_str() {
        "L2" => Ok(MetricType::L2),
        "IP" => Ok(MetricType::Ip),
        "COSINE" => Ok(MetricType::Cosine),
        other => Err(ClientError::InvalidArgument(format!("unknown metric {other:?}: use L2, IP or COSINE"))),
    }
}

/// The consistency level named `strong`, `bounded` or `eventually`, in any case.
pub fn consistency_named(name: &str) -> Result<Consistency, ClientError> {
    match name.trim().to_ascii_lowercase().as_str() {
        "strong" => Ok(Consistency::Strong),
        "bounded" => Ok(Consistency::Bounded),
        "eventually" => Ok(Consistency::Eventually),
        other => Err(ClientError::InvalidArgument(format!(
            "unknown consistency {other:?}: use strong, bounded or eventually"
        ))),
    }
}

/// Rows with Int64 keys `ids` and the given vectors (row-major).
pub fn rows(ids: impl IntoIterator<Item = i64>, dim: u32, vectors: Vec<f32>) -> RowBatch {
    RowBatch {
        pks: ids.into_iter().map(PrimaryKey::Int64).collect(),
        dim,
        vectors,
        columns: Vec::new(),
        dynamic: Vec::new(),
    }
}

/// A top-k search of `vectors` (row-major, `dim` each).
pub fn search(collection: &str, dim: u32, vectors: Vec<f32>, top_k: u32) -> Search {
    Search {
        collection: collection.into(),
        dim,
        vectors,
        top_k,
        params: SearchParams::default(),
        output_fields: Vec::new(),
        consistency: Consistency::default(),
        filter: String::new(),
        partitions: Vec::new(),
    }
}

/// A query for rows matching `filter` (empty = every row, then give a limit).
pub fn query(collection: &str, filter: &str, output_fields: &[&str], limit: u64) -> Query {
    Query {
        collection: collection.into(),
        filter: filter.into(),
        output_fields: output_fields.iter().map(|f| f.to_string()).collect(),
        limit,
        offset: 0,
        consistency: Consistency::default(),
        partitions: Vec::new(),
    }
}

/// Rows `[start, end)` of a batch.
pub fn slice_rows(rows: &RowBatch, start: usize, end: usize) -> RowBatch {
    let d = rows.dim as usize;
    RowBatch {
        pks: if rows.pks.is_empty() { Vec::new() } else { rows.pks[start..end].to_vec() },
        dim: rows.dim,
        vectors: rows.vectors[start * d..end * d].to_vec(),
        columns: rows
            .columns
            .iter()
            .map(|c| Column { name: c.name.clone(), values: c.values[start..end].to_vec() })
            .collect(),
        dynamic: if rows.dynamic.is_empty() { Vec::new() } else { rows.dynamic[start..end].to_vec() },
    }
}
