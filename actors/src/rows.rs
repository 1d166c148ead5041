//! Row storage shared by growing data (data node, query node) and sealed segments, and the
//! segment file format in the object store.

use std::collections::HashMap;

use quiver_runtime::{Error, Result};
use quiver_schemas::{Column, PartitionId, PrimaryKey, RowBatch, ScalarValue, SegmentInfo, Seq};
use serde::{Deserialize, Serialize};

/// Rows in columnar form, each with the log sequence that wrote it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RowStore {
    pub dim: usize,
    pub pks: Vec<PrimaryKey>,
    pub seqs: Vec<Seq>,
    /// Kept out of the JSON header of segment files; stored raw.
    #[serde(skip)]
    pub vectors: Vec<f32>,
    pub columns: Vec<Column>,
    pub dynamic: Vec<String>,
    /// Each row's partition; empty while every row is in `_default` (0), so a collection
    /// without partitions pays nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionId>,
}

impl RowStore {
    pub fn new(dim: usize) -> RowStore {
        RowStore { dim, ..Default::default() }
    }

    pub fn len(&self) -> usize {
        self.pks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pks.is_empty()
    }

    /// The partitions of the rows, ascending; empty when every row is in `_default` (what
    /// [`SegmentInfo::partitions`] records).
    pub fn partition_set(&self) -> Vec<PartitionId> {
        let mut ids: Vec<PartitionId> = self.partitions.clone();
        ids.sort_unstable();
        ids.dedup();
        if ids == [0] {
            ids.clear();
        }
        ids
    }

    /// Row `row`'s partition.
    pub fn partition(&self, row: usize) -> PartitionId {
        self.partitions.get(row).copied().unwrap_or(0)
    }

    /// Appends a validated batch written at `seq` to `partition`.
    pub fn append(&mut self, batch: &RowBatch, seq: Seq, partition: PartitionId) {
        let n = batch.pks.len();
        let before = self.len();
        self.pks.extend(batch.pks.iter().cloned());
        self.seqs.extend(std::iter::repeat_n(seq, n));
        self.vectors.extend_from_slice(&batch.vectors);
        for col in &batch.columns {
            match self.columns.iter_mut().find(|c| c.name == col.name) {
                Some(existing) => existing.values.extend(col.values.iter().cloned()),
                None => {
                    let mut values = vec![ScalarValue::Null; before];
                    values.extend(col.values.iter().cloned());
                    self.columns.push(Column { name: col.name.clone(), values });
                }
            }
        }
        let after = self.len();
        for col in &mut self.columns {
            col.values.resize(after, ScalarValue::Null);
        }
        if !batch.dynamic.is_empty() || !self.dynamic.is_empty() {
            self.dynamic.resize(before, String::new());
            self.dynamic.extend(batch.dynamic.iter().cloned());
            self.dynamic.resize(after, String::new());
        }
        if partition != 0 || !self.partitions.is_empty() {
            self.partitions.resize(before, 0);
            self.partitions.resize(after, partition);
        }
    }

    /// Drops the first `n` rows (growing data that a sealed segment now covers).
    pub fn drain_front(&mut self, n: usize) {
        let n = n.min(self.len());
        self.pks.drain(..n);
        self.seqs.drain(..n);
        self.vectors.drain(..n * self.dim);
        for col in &mut self.columns {
            col.values.drain(..n.min(col.values.len()));
        }
        if !self.dynamic.is_empty() {
            self.dynamic.drain(..n.min(self.dynamic.len()));
        }
        if !self.partitions.is_empty() {
            self.partitions.drain(..n.min(self.partitions.len()));
        }
    }

    /// Rows `[from, to)` as a new store (what a data node seals).
    pub fn slice(&self, from: usize, to: usize) -> RowStore {
        RowStore {
            dim: self.dim,
            pks: self.pks[from..to].to_vec(),
            seqs: self.seqs[from..to].to_vec(),
            vectors: self.vectors[from * self.dim..to * self.dim].to_vec(),
            columns: self
                .columns
                .iter()
                .map(|c| Column { name: c.name.clone(), values: c.values[from..to].to_vec() })
                .collect(),
            dynamic: if self.dynamic.is_empty() { Vec::new() } else { self.dynamic[from..to].to_vec() },
            partitions: if self.partitions.is_empty() { Vec::new() } else { self.partitions[from..to].to_vec() },
        }
    }

    /// Appends rows `keep` of `src` (indices in range), with their own log sequences: what
    /// compaction keeps of an input segment. Columns missing on either side read as null.
    pub fn extend_from(&mut self, src: &RowStore, keep: &[usize]) {
        let before = self.len();
        self.pks.extend(keep.iter().map(|&r| src.pks[r].clone()));
        self.seqs.extend(keep.iter().map(|&r| src.seqs[r]));
        self.vectors.reserve(keep.len() * self.dim);
        for &r in keep {
            self.vectors.extend_from_slice(src.vector(r));
        }
        let after = self.len();
        for col in &src.columns {
            let at = match self.columns.iter().position(|c| c.name == col.name) {
                Some(at) => at,
                None => {
                    self.columns.push(Column { name: col.name.clone(), values: vec![ScalarValue::Null; before] });
                    self.columns.len() - 1
                }
            };
            self.columns[at].values.extend(keep.iter().map(|&r| col.values[r].clone()));
        }
        for col in &mut self.columns {
            col.values.resize(after, ScalarValue::Null);
        }
        if !src.dynamic.is_empty() || !self.dynamic.is_empty() {
            self.dynamic.resize(before, String::new());
            if !src.dynamic.is_empty() {
                self.dynamic.extend(keep.iter().map(|&r| src.dynamic[r].clone()));
            }
            self.dynamic.resize(after, String::new());
        }
        if !src.partitions.is_empty() || !self.partitions.is_empty() {
            self.partitions.resize(before, 0);
            self.partitions.extend(keep.iter().map(|&r| src.partition(r)));
        }
    }

    pub fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dim..(row + 1) * self.dim]
    }

    /// The values of `fields` for `rows`. Names not in the schema are looked up as keys of the
    /// dynamic JSON field; `$meta` returns the whole dynamic object.
    pub fn output_columns(&self, rows: &[usize], fields: &[String]) -> Vec<Column> {
        fields
            .iter()
            .map(|name| {
                let values = if let Some(col) = self.columns.iter().find(|c| &c.name == name) {
                    rows.iter().map(|&r| col.values.get(r).cloned().unwrap_or(ScalarValue::Null)).collect()
                } else if name == "$meta" {
                    rows.iter().map(|&r| self.dynamic_json(r).map_or(ScalarValue::Null, ScalarValue::Json)).collect()
                } else {
                    rows.iter().map(|&r| self.dynamic_key(r, name)).collect()
                };
                Column { name: name.clone(), values }
            })
            .collect()
    }

    fn dynamic_json(&self, row: usize) -> Option<String> {
        self.dynamic.get(row).filter(|s| !s.is_empty()).cloned()
    }

    fn dynamic_key(&self, row: usize, key: &str) -> ScalarValue {
        let Some(text) = self.dynamic.get(row).filter(|s| !s.is_empty()) else { return ScalarValue::Null };
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
            return ScalarValue::Null;
        };
        match map.get(key) {
            None | Some(serde_json::Value::Null) => ScalarValue::Null,
            Some(serde_json::Value::Bool(b)) => ScalarValue::Bool(*b),
            Some(serde_json::Value::Number(n)) if n.is_i64() => ScalarValue::Int64(n.as_i64().unwrap_or(0)),
            Some(serde_json::Value::Number(n)) => ScalarValue::Double(n.as_f64().unwrap_or(0.0)),
            Some(serde_json::Value::String(s)) => ScalarValue::VarChar(s.clone()),
            Some(other) => ScalarValue::Json(other.to_string()),
        }
    }

    /// Selected rows as a batch (get-by-key answers), vectors included.
    pub fn to_batch(&self, rows: &[usize], fields: &[String]) -> RowBatch {
        let mut vectors = Vec::with_capacity(rows.len() * self.dim);
        for &r in rows {
            vectors.extend_from_slice(self.vector(r));
        }
        RowBatch {
            pks: rows.iter().map(|&r| self.pks[r].clone()).collect(),
            dim: self.dim as u32,
            vectors,
            columns: self.output_columns(rows, fields),
            dynamic: Vec::new(),
        }
    }

    /// Map from primary key to the row offsets holding it.
    pub fn pk_index(&self) -> HashMap<PrimaryKey, Vec<u32>> {
        let mut map: HashMap<PrimaryKey, Vec<u32>> = HashMap::with_capacity(self.len());
        for (i, pk) in self.pks.iter().enumerate() {
            map.entry(pk.clone()).or_default().push(i as u32);
        }
        map
    }

    /// Approximate bytes in memory.
    pub fn mem_bytes(&self) -> u64 {
        (self.vectors.len() * 4 + self.pks.len() * 40 + self.columns.len() * self.len() * 24) as u64
    }
}

const MAGIC: &[u8; 8] = b"QVSEG001";

#[derive(Serialize, Deserialize)]
struct Header {
    info: SegmentInfo,
    rows: RowStore,
}

/// Encodes a sealed segment: magic, header length, JSON header (info, keys, scalars), raw
/// little-endian vectors.
pub fn encode_segment(info: &SegmentInfo, rows: &RowStore) -> Result<Vec<u8>> {
    let header = serde_json::to_vec(&Header { info: info.clone(), rows: rows.clone_without_vectors() })
        .map_err(Error::internal)?;
    let mut out = Vec::with_capacity(16 + header.len() + rows.vectors.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for v in &rows.vectors {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Decodes a segment written by [`encode_segment`]. The bytes come from the object store and
/// are not trusted: a segment whose parts disagree (keys, sequences, columns, dynamic values
/// and vectors must all cover the same rows) is refused here rather than panicking whoever
/// reads its rows later.
pub fn decode_segment(bytes: &[u8]) -> Result<(SegmentInfo, RowStore)> {
    let corrupt = |why: &str| Error::Internal(format!("corrupt segment file: {why}"));
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[8..16]);
    let header_end = usize::try_from(u64::from_le_bytes(len))
        .ok()
        .and_then(|n| n.checked_add(16))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| corrupt("truncated header"))?;
    let header: Header = serde_json::from_slice(&bytes[16..header_end]).map_err(|e| corrupt(&e.to_string()))?;
    let raw = &bytes[header_end..];
    let mut rows = header.rows;
    let n = rows.len();
    if rows.seqs.len() != n {
        return Err(corrupt(&format!("{} sequence numbers for {n} rows", rows.seqs.len())));
    }
    if let Some(c) = rows.columns.iter().find(|c| c.values.len() != n) {
        return Err(corrupt(&format!("column {:?} has {} values for {n} rows", c.name, c.values.len())));
    }
    if !rows.dynamic.is_empty() && rows.dynamic.len() != n {
        return Err(corrupt(&format!("{} dynamic values for {n} rows", rows.dynamic.len())));
    }
    if !rows.partitions.is_empty() && rows.partitions.len() != n {
        return Err(corrupt(&format!("{} partition ids for {n} rows", rows.partitions.len())));
    }
    if n.checked_mul(rows.dim).and_then(|v| v.checked_mul(4)) != Some(raw.len()) {
        return Err(corrupt("vector data length does not match row count"));
    }
    rows.vectors = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((header.info, rows))
}

impl RowStore {
    fn clone_without_vectors(&self) -> RowStore {
        RowStore {
            dim: self.dim,
            pks: self.pks.clone(),
            seqs: self.seqs.clone(),
            vectors: Vec::new(),
            columns: self.columns.clone(),
            dynamic: self.dynamic.clone(),
            partitions: self.partitions.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quiver_schemas::SegmentState;

    fn batch(start: i64, n: usize, dim: usize) -> RowBatch {
        RowBatch {
            pks: (start..start + n as i64).map(PrimaryKey::Int64).collect(),
            dim: dim as u32,
            vectors: (0..n * dim).map(|i| i as f32).collect(),
            columns: vec![Column { name: "a".into(), values: (0..n).map(|i| ScalarValue::Int64(i as i64)).collect() }],
            dynamic: (0..n).map(|i| format!("{{\"k\":{i}}}")).collect(),
        }
    }

    #[test]
    fn append_drain_and_segment_round_trip() {
        let mut rows = RowStore::new(2);
        rows.append(&batch(0, 3, 2), 1, 0);
        assert!(rows.partitions.is_empty(), "rows of _default alone cost nothing");
        rows.append(&batch(3, 2, 2), 2, 4);
        assert_eq!(rows.len(), 5);
        assert_eq!(rows.partitions, [0, 0, 0, 4, 4]);
        let cols = rows.output_columns(&[4], &["a".into(), "k".into()]);
        assert_eq!(cols[0].values[0], ScalarValue::Int64(1));
        assert_eq!(cols[1].values[0], ScalarValue::Int64(1));
        let info = SegmentInfo {
            partitions: Default::default(),
            id: 7,
            collection: 1,
            shard: 0,
            rows: 5,
            start_seq: 1,
            end_seq: 2,
            data_path: "x".into(),
            index_path: None,
            state: SegmentState::Flushed,
            mem_size: 0,
            delete_seq: 0,
            compacted_from: Vec::new(),
        };
        let bytes = encode_segment(&info, &rows).unwrap();
        let (info2, rows2) = decode_segment(&bytes).unwrap();
        assert_eq!(info2, info);
        assert_eq!(rows2.vectors, rows.vectors);
        assert_eq!(rows2.seqs, rows.seqs);
        assert_eq!(rows2.partitions, rows.partitions);
        assert_eq!(rows.slice(1, 4).partitions, [0, 0, 4]);
        let mut merged = RowStore::new(2);
        merged.append(&batch(9, 1, 2), 3, 0);
        merged.extend_from(&rows, &[0, 4]);
        assert_eq!(merged.partitions, [0, 0, 4]);
        rows.drain_front(3);
        assert_eq!(rows.partitions, [4, 4]);
        assert_eq!(rows.pks[0], PrimaryKey::Int64(3));
        assert_eq!(rows.vectors.len(), 4);
        assert!(decode_segment(b"garbage").is_err());
    }

    /// What the `segment_decode` fuzz target checks: a header length near `u64::MAX` overflowed
    /// `16 + len`, a huge `dim` overflowed `rows × dim × 4` (and could match an empty vector
    /// section), and parts of different lengths decoded fine, then panicked whoever indexed
    /// the rows (`slice`, `vector`, `to_batch`).
    #[test]
    fn inconsistent_or_overflowing_segments_are_refused() {
        let mut rows = RowStore::new(2);
        rows.append(&batch(0, 3, 2), 1, 2);
        let info = SegmentInfo {
            partitions: Default::default(),
            id: 1,
            collection: 1,
            shard: 0,
            rows: 3,
            start_seq: 1,
            end_seq: 1,
            data_path: "x".into(),
            index_path: None,
            state: SegmentState::Flushed,
            mem_size: 0,
            delete_seq: 0,
            compacted_from: Vec::new(),
        };
        let mut huge = encode_segment(&info, &rows).unwrap();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_segment(&huge).unwrap_err().to_string().contains("truncated header"));

        let damaged = |f: &dyn Fn(&mut RowStore)| {
            let mut r = rows.clone();
            f(&mut r);
            decode_segment(&encode_segment(&info, &r).unwrap()).unwrap_err().to_string()
        };
        assert!(damaged(&|r| {
            r.seqs.pop();
        })
        .contains("sequence numbers"));
        assert!(damaged(&|r| r.columns[0].values.push(ScalarValue::Null)).contains("column \"a\""));
        assert!(damaged(&|r| r.dynamic.truncate(1)).contains("dynamic values"));
        assert!(damaged(&|r| r.partitions.truncate(1)).contains("partition ids"));
        assert!(damaged(&|r| r.vectors.truncate(2)).contains("vector data length"));
        // 3 rows × 2^62 dims × 4 bytes wraps to 0: must not pass for an empty vector section.
        assert!(damaged(&|r| {
            r.dim = 1 << 62;
            r.vectors.clear();
        })
        .contains("vector data length"));
        assert!(decode_segment(&encode_segment(&info, &rows).unwrap()).is_ok());
    }
}
