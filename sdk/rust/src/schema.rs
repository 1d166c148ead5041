//! Helpers to build schemas, rows and searches.

use quiver_schemas::{
    CollectionSchema, Column, Consistency, DataType, FieldSchema, IndexParams, IndexType, MetricType, PrimaryKey,
    Query, RowBatch, Search, SearchParams,
};

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
