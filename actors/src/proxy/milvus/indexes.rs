//! Index definitions as Milvus shows them: a collection's vector index and its scalar-field
//! indexes (`STL_SORT`, `INVERTED`, `BITMAP`, `Trie`, `AUTOINDEX`), one per field, each with
//! a name. pymilvus' `describe_index`, `list_indexes`, `get_index_state`,
//! `get_index_build_progress` and the wait after `create_index` all read `DescribeIndex`.

use quiver_runtime::{Error, Result};
use quiver_schemas::{Distribution, FieldSchema, ScalarIndex, ScalarIndexType, SegmentState};

use super::convert::{self, kv};
use super::proto::common::{IndexState, KeyValuePair};
use super::proto::milvus::IndexDescription;
use super::service::node_number;

/// Index types Milvus builds only on vector fields.
const VECTOR_TYPES: &[&str] = &[
    "FLAT",
    "IVF_FLAT",
    "IVF_SQ8",
    "IVF_PQ",
    "HNSW",
    "DISKANN",
    "SCANN",
    "BIN_FLAT",
    "BIN_IVF_FLAT",
    "GPU_CAGRA",
    "GPU_IVF_FLAT",
    "GPU_IVF_PQ",
    "GPU_BRUTE_FORCE",
    "SPARSE_INVERTED_INDEX",
    "SPARSE_WAND",
    "HNSW_SQ",
    "HNSW_PQ",
    "HNSW_PRQ",
    "IVF_RABITQ",
];

/// The `index_type` of a `CreateIndexRequest` (top level or inside its `params` JSON).
fn requested_type(pairs: &[KeyValuePair]) -> Option<String> {
    if let Some(p) = pairs.iter().find(|p| p.key.eq_ignore_ascii_case("index_type")) {
        return Some(p.value.trim().to_string());
    }
    let params = pairs.iter().find(|p| p.key == "params")?;
    let json: serde_json::Value = serde_json::from_str(&params.value).ok()?;
    json.get("index_type").and_then(|v| v.as_str()).map(|s| s.trim().to_string())
}

/// Whether a `CreateIndexRequest` on the vector field names a scalar index type (refused with
/// Milvus' own message for that type).
pub(super) fn check_vector_request(field: &FieldSchema, pairs: &[KeyValuePair]) -> Result<()> {
    let Some(t) = requested_type(pairs).and_then(|t| ScalarIndexType::from_milvus(&t)) else { return Ok(()) };
    if t == ScalarIndexType::Auto {
        return Ok(());
    }
    t.check_field(field, &[]).map_err(Error::InvalidArgument)
}

/// The scalar index a `CreateIndexRequest` on scalar field `field` asks for: `index_name`
/// (default: the field's name), the type (default AUTOINDEX), the other pairs kept as given.
pub(super) fn scalar_index_from(field: &FieldSchema, index_name: &str, pairs: &[KeyValuePair]) -> Result<ScalarIndex> {
    let requested = requested_type(pairs).unwrap_or_default();
    let index_type = if requested.is_empty() {
        ScalarIndexType::Auto
    } else if let Some(t) = ScalarIndexType::from_milvus(&requested) {
        t
    } else if VECTOR_TYPES.iter().any(|v| v.eq_ignore_ascii_case(&requested)) {
        return Err(Error::InvalidArgument(format!(
            "data type {} can't build with this index {requested} (field {:?}; scalar fields take STL_SORT, \
             INVERTED, BITMAP, Trie or AUTOINDEX)",
            field.data_type.milvus_name(),
            field.name
        )));
    } else {
        return Err(Error::InvalidArgument(format!(
            "invalid index type: {requested} (field {:?}; scalar fields take STL_SORT, INVERTED, BITMAP, Trie or \
             AUTOINDEX)",
            field.name
        )));
    };
    let mut params: Vec<(String, String)> = Vec::new();
    for p in pairs.iter().filter(|p| !p.key.eq_ignore_ascii_case("index_type")) {
        if p.key == "params" {
            // pymilvus nests the type's parameters in a JSON object; keep them flat.
            let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&p.value) else {
                return Err(Error::InvalidArgument(format!("params {:?} is not a JSON object", p.value)));
            };
            for (k, v) in map.into_iter().filter(|(k, _)| k != "index_type") {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                params.push((k, text));
            }
        } else {
            params.push((p.key.clone(), p.value.clone()));
        }
    }
    let name = if index_name.is_empty() { field.name.clone() } else { index_name.to_string() };
    Ok(ScalarIndex { name, field: field.name.clone(), index_type, params })
}

/// Which index a `DropIndexRequest` names.
pub(super) enum DropTarget {
    Vector,
    Scalar(String),
    /// No index by that name (dropping it succeeds, as in Milvus).
    Nothing,
}

/// Resolves a `DropIndexRequest`: by index name, else by field name, else the collection's
/// only index (Milvus refuses to guess among several).
pub(super) fn drop_target(dist: &Distribution, index_name: &str, field_name: &str) -> Result<DropTarget> {
    let info = &dist.collection;
    let vector_field = info.vector_field().map(|f| f.name.clone()).unwrap_or_default();
    let vector_name =
        info.index.as_ref().map(|i| if i.name.is_empty() { vector_field.clone() } else { i.name.clone() });
    if !index_name.is_empty() {
        if let Some(s) = info.scalar_indexes.iter().find(|s| s.name == index_name) {
            return Ok(DropTarget::Scalar(s.name.clone()));
        }
        // The vector index answers to its name; with none defined, the vector path reports it.
        let vector = vector_name.as_deref().is_none_or(|n| n == index_name);
        return Ok(if vector { DropTarget::Vector } else { DropTarget::Nothing });
    }
    if !field_name.is_empty() {
        if let Some(s) = info.scalar_index_on(field_name) {
            return Ok(DropTarget::Scalar(s.name.clone()));
        }
        return Ok(if field_name == vector_field { DropTarget::Vector } else { DropTarget::Nothing });
    }
    match (vector_name.is_some(), info.scalar_indexes.as_slice()) {
        (false, [only]) => Ok(DropTarget::Scalar(only.name.clone())),
        (_, []) => Ok(DropTarget::Vector),
        _ => Err(Error::InvalidArgument(format!(
            "there are multiple indexes, please specify the index_name (collection {:?})",
            info.schema.name
        ))),
    }
}

/// Every index of the collection as `DescribeIndex` lists them: the vector index first, then
/// the scalar indexes in the order they were defined.
pub(super) fn descriptions(dist: &Distribution) -> Vec<IndexDescription> {
    let info = &dist.collection;
    // Every flushed segment, served already or not yet (a segment just flushed is pending
    // until its index is built: tools wait for `pending_index_rows == 0` before they compact).
    let flushed: Vec<&quiver_schemas::SegmentInfo> = dist
        .segments
        .iter()
        .map(|p| &p.segment)
        .chain(dist.unserved.iter().filter(|s| s.state != SegmentState::Dropped))
        .collect();
    let total: u64 = flushed.iter().map(|s| s.rows).sum();
    let mut out = Vec::new();
    if let Some(index) = &info.index {
        let vector = info.vector_field().map(|f| f.name.clone()).unwrap_or_default();
        let indexed: u64 = flushed.iter().filter(|s| s.state == SegmentState::Indexed).map(|s| s.rows).sum();
        out.push(IndexDescription {
            index_name: if index.name.is_empty() { vector.clone() } else { index.name.clone() },
            index_id: info.id as i64,
            params: convert::index_to(index),
            field_name: vector,
            indexed_rows: indexed as i64,
            total_rows: total as i64,
            pending_index_rows: total.saturating_sub(indexed) as i64,
            // Rows not indexed yet are searched exactly, so the index is usable at once.
            state: IndexState::Finished as i32,
            ..Default::default()
        });
    }
    for s in &info.scalar_indexes {
        let mut params = vec![kv("index_type", s.index_type.milvus_name())];
        params.extend(s.params.iter().map(|(k, v)| kv(k, v)));
        out.push(IndexDescription {
            index_name: s.name.clone(),
            index_id: node_number(&format!("{}/{}", info.id, s.name)),
            params,
            field_name: s.field.clone(),
            // Built by each query node as it loads a segment; a filter is answered the same
            // with or without it, so the index is usable at once.
            indexed_rows: total as i64,
            total_rows: total as i64,
            pending_index_rows: 0,
            state: IndexState::Finished as i32,
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use quiver_schemas::DataType;

    use super::*;

    fn field(name: &str, data_type: DataType, is_primary: bool) -> FieldSchema {
        FieldSchema {
            name: name.into(),
            data_type,
            is_primary,
            auto_id: false,
            dim: 0,
            max_length: 0,
            description: String::new(),
        }
    }

    #[test]
    fn scalar_requests_follow_milvus_rules() {
        let id = field("id", DataType::Int64, true);
        let tag = field("tag", DataType::VarChar, false);
        let t = |v: &str| vec![kv("index_type", v)];
        let i = scalar_index_from(&id, "id_sort_idx", &t("STL_SORT")).unwrap();
        assert_eq!((i.name.as_str(), i.index_type), ("id_sort_idx", ScalarIndexType::StlSort));
        let i = scalar_index_from(&tag, "", &[kv("params", "{\"index_type\": \"Trie\"}")]).unwrap();
        assert_eq!((i.name.as_str(), i.index_type), ("tag", ScalarIndexType::Trie));
        assert_eq!(scalar_index_from(&tag, "", &[]).unwrap().index_type, ScalarIndexType::Auto);
        let e = scalar_index_from(&id, "", &t("HNSW")).unwrap_err().to_string();
        assert!(e.contains("data type Int64 can't build with this index HNSW"), "{e}");
        let e = scalar_index_from(&id, "", &t("NOPE")).unwrap_err().to_string();
        assert!(e.contains("invalid index type: NOPE"), "{e}");
        let e = ScalarIndexType::Bitmap.check_field(&id, &[]).unwrap_err();
        assert_eq!(e, "create bitmap index on primary key not supported");
        let e = ScalarIndexType::Trie.check_field(&id, &[]).unwrap_err();
        assert_eq!(e, "TRIE are only supported on varchar field");
        let v = field("v", DataType::FloatVector, false);
        assert!(check_vector_request(&v, &t("STL_SORT")).unwrap_err().to_string().contains("STL_SORT are only"));
        assert!(check_vector_request(&v, &t("HNSW")).is_ok());
    }
}
