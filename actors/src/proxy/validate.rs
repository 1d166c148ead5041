//! Request validation at the proxy: every error names the field or value that was wrong.

use std::collections::HashSet;

use quiver_runtime::{Error, Result};
use quiver_schemas::{CollectionInfo, DataType, PrimaryKey, RowBatch, ScalarValue, Search};

use crate::dml::value_fits;
use crate::limits::{check_vectors, ReadLimits};
use quiver_runtime::config::LimitsConfig;

fn bad(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

fn dim_mismatch(info: &CollectionInfo, got: u32) -> Error {
    bad(format!(
        "dimension mismatch: collection {:?} stores {}-dimensional vectors, got {got}",
        info.schema.name,
        info.dim()
    ))
}

/// Checks a primary key against the schema.
pub fn check_pk(info: &CollectionInfo, pk: &PrimaryKey) -> Result<()> {
    let Some(field) = info.primary_field() else {
        return Err(Error::Internal("collection without primary key".into()));
    };
    match (field.data_type, pk) {
        (DataType::Int64, PrimaryKey::Int64(_)) => Ok(()),
        (DataType::VarChar, PrimaryKey::VarChar(s)) if s.len() <= field.max_length as usize => Ok(()),
        (DataType::VarChar, PrimaryKey::VarChar(s)) => Err(bad(format!(
            "primary key {:?} is {} bytes, longer than max_length {}",
            field.name,
            s.len(),
            field.max_length
        ))),
        (t, _) => Err(bad(format!("primary key {:?} is {t:?}; got a key of another type", field.name))),
    }
}

/// Coerces numbers to the field's type (an int into a float field, say).
fn coerce(t: DataType, v: ScalarValue) -> ScalarValue {
    match (t, v) {
        (DataType::Float, ScalarValue::Double(d)) => ScalarValue::Float(d as f32),
        (DataType::Float, ScalarValue::Int64(i)) => ScalarValue::Float(i as f32),
        (DataType::Double, ScalarValue::Float(f)) => ScalarValue::Double(f64::from(f)),
        (DataType::Double, ScalarValue::Int64(i)) => ScalarValue::Double(i as f64),
        (_, v) => v,
    }
}

/// Checks (and normalises) an insert batch against the schema and the size limits. Returns
/// the row count.
pub fn check_insert(
    info: &CollectionInfo,
    rows: &mut RowBatch,
    max_rows: usize,
    limits: &LimitsConfig,
) -> Result<usize> {
    let name = &info.schema.name;
    if rows.vectors.is_empty() {
        return Err(bad(format!("empty batch: an insert into {name:?} needs at least one row")));
    }
    if rows.dim != info.dim() {
        return Err(dim_mismatch(info, rows.dim));
    }
    let n = check_vectors(&rows.vectors, info.dim() as usize, "insert")?;
    if n > max_rows {
        return Err(bad(format!("insert of {n} rows exceeds the limit of {max_rows} rows per request; split it")));
    }
    let pk_field = info.primary_field().ok_or_else(|| Error::Internal("collection without primary key".into()))?;
    if pk_field.auto_id {
        if !rows.pks.is_empty() {
            return Err(bad(format!("primary key {:?} is auto_id: do not supply it", pk_field.name)));
        }
    } else {
        if rows.pks.len() != n {
            return Err(bad(format!("primary key {:?}: got {} values for {n} rows", pk_field.name, rows.pks.len())));
        }
        for pk in &rows.pks {
            check_pk(info, pk)?;
        }
    }
    let scalar_fields: Vec<_> =
        info.schema.fields.iter().filter(|f| !f.is_primary && f.data_type != DataType::FloatVector).collect();
    let mut seen = HashSet::new();
    for col in &mut rows.columns {
        let Some(field) = scalar_fields.iter().find(|f| f.name == col.name) else {
            return Err(bad(format!("field {:?} is not in the schema of {name:?}", col.name)));
        };
        if !seen.insert(col.name.clone()) {
            return Err(bad(format!("field {:?} is given twice", col.name)));
        }
        if col.values.len() != n {
            return Err(bad(format!("field {:?}: got {} values for {n} rows", col.name, col.values.len())));
        }
        for (i, v) in col.values.iter().enumerate() {
            if matches!(v, ScalarValue::Null) || !value_fits(field.data_type, v) {
                return Err(bad(format!("field {:?} is {:?}; row {i} has {v:?}", col.name, field.data_type)));
            }
            match (field.data_type, v) {
                (DataType::VarChar, ScalarValue::VarChar(s)) if s.len() > field.max_length as usize => {
                    return Err(bad(format!(
                        "field {:?}: row {i} is {} bytes, over max_length {}",
                        col.name,
                        s.len(),
                        field.max_length
                    )));
                }
                (DataType::Json, ScalarValue::Json(s)) => check_json(s, &col.name, i, limits)?,
                (DataType::Float, ScalarValue::Double(d)) if !(*d as f32).is_finite() => {
                    return Err(bad(format!("field {:?} is Float; row {i} has {d:?}, out of its range", col.name)));
                }
                _ => {}
            }
        }
        let t = field.data_type;
        col.values = std::mem::take(&mut col.values).into_iter().map(|v| coerce(t, v)).collect();
    }
    if let Some(missing) = scalar_fields.iter().find(|f| !seen.contains(&f.name)) {
        return Err(bad(format!("field {:?} is missing from the insert", missing.name)));
    }
    if !rows.dynamic.is_empty() {
        if !info.schema.enable_dynamic_field {
            return Err(bad(format!("collection {name:?} has no dynamic field; remove the extra keys")));
        }
        if rows.dynamic.len() != n {
            return Err(bad(format!("dynamic field: got {} objects for {n} rows", rows.dynamic.len())));
        }
        for (i, d) in rows.dynamic.iter().enumerate() {
            if d.is_empty() {
                continue;
            }
            if d.len() > limits.max_json_bytes {
                return Err(bad(format!(
                    "dynamic field of row {i} is {} bytes of JSON, over the limit of {} (limits.max_json_bytes)",
                    d.len(),
                    limits.max_json_bytes
                )));
            }
            match serde_json::from_str::<serde_json::Value>(d) {
                Ok(serde_json::Value::Object(_)) => {}
                _ => return Err(bad(format!("dynamic field of row {i} is not a JSON object"))),
            }
        }
    }
    Ok(n)
}

/// Checks one JSON field value: its size, and that it parses as a value filters can read
/// (serde_json bounds nesting at 128 levels: a deeper value is refused here rather than
/// stored and then unreadable to every filter).
fn check_json(text: &str, field: &str, row: usize, limits: &LimitsConfig) -> Result<()> {
    if text.len() > limits.max_json_bytes {
        return Err(bad(format!(
            "field {field:?}: row {row} is {} bytes of JSON, over the limit of {} (limits.max_json_bytes)",
            text.len(),
            limits.max_json_bytes
        )));
    }
    serde_json::from_str::<serde_json::Value>(text)
        .map_err(|e| bad(format!("field {field:?}: row {row} is not valid JSON: {e}")))?;
    Ok(())
}

/// Checks a search against the limits and expands `*` in its output fields.
pub fn check_search(info: &CollectionInfo, search: &mut Search, limits: &ReadLimits) -> Result<usize> {
    let nq = limits.check_search(search, info.dim())?;
    search.output_fields = check_output_fields(info, &search.output_fields)?;
    Ok(nq)
}

/// Validates output field names; `*` means every scalar field (and the dynamic field).
pub fn check_output_fields(info: &CollectionInfo, fields: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in fields {
        if f == "*" {
            for field in &info.schema.fields {
                if !field.is_primary && field.data_type != DataType::FloatVector && !out.contains(&field.name) {
                    out.push(field.name.clone());
                }
            }
            if info.schema.enable_dynamic_field && !out.iter().any(|o| o == "$meta") {
                out.push("$meta".into());
            }
            continue;
        }
        let known = info.schema.fields.iter().any(|x| &x.name == f && x.data_type != DataType::FloatVector);
        let vector = info.schema.fields.iter().any(|x| &x.name == f && x.data_type == DataType::FloatVector);
        if vector {
            return Err(bad(format!(
                "output field {f:?} is the vector field; vectors are returned by get, not by search"
            )));
        }
        if !known && !info.schema.enable_dynamic_field {
            return Err(bad(format!("output field {f:?} does not exist in collection {:?}", info.schema.name)));
        }
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    Ok(out)
}

/// Rows `indices` of a batch. The batch is consistent (checked, or merged from checked node
/// replies) and the indices are in range; should either not hold, a missing part is left out
/// (a missing value is `Null`) instead of panicking.
pub fn select_rows(rows: &RowBatch, indices: &[usize]) -> RowBatch {
    let dim = rows.dim as usize;
    let mut vectors = Vec::new();
    // Query results carry no vectors unless asked for.
    if !rows.vectors.is_empty() {
        vectors.reserve(indices.len().saturating_mul(dim));
        for &i in indices {
            if let Some(v) = rows.vectors.get(i.saturating_mul(dim)..i.saturating_add(1).saturating_mul(dim)) {
                vectors.extend_from_slice(v);
            }
        }
    }
    RowBatch {
        pks: indices.iter().filter_map(|&i| rows.pks.get(i).cloned()).collect(),
        dim: rows.dim,
        vectors,
        columns: rows
            .columns
            .iter()
            .map(|c| quiver_schemas::Column {
                name: c.name.clone(),
                values: indices.iter().map(|&i| c.values.get(i).cloned().unwrap_or(ScalarValue::Null)).collect(),
            })
            .collect(),
        dynamic: if rows.dynamic.is_empty() {
            Vec::new()
        } else {
            indices.iter().map(|&i| rows.dynamic.get(i).cloned().unwrap_or_default()).collect()
        },
    }
}

/// The shard a primary key belongs to.
pub fn shard_of(pk: &PrimaryKey, shards: u32) -> u32 {
    let h = match pk {
        PrimaryKey::Int64(v) => quiver_policy::fnv1a(&v.to_le_bytes()),
        PrimaryKey::VarChar(s) => quiver_policy::fnv1a(s.as_bytes()),
    };
    (h % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests;
