//! A data node's side of compaction: merge consecutive sealed segments of one shard into one,
//! leaving out the rows that the shard's deletes hide, and store the result. The coordinator
//! plans the task and commits the outcome (`coordinator/compaction.rs`); until it does, the
//! merged segment is an unreferenced object and the inputs stay what readers see.

use std::collections::HashMap;
use std::time::Duration;

use quiver_runtime::{Error, Result};
use quiver_schemas::protocol::keys;
use quiver_schemas::{
    CompactOutcome, CompactTask, DmlEntry, PartitionId, PartitionState, PrimaryKey, SegmentInfo, SegmentState, Seq,
};

use crate::dml::{self, ShardLog};
use crate::node::Node;
use crate::rows::{decode_segment, encode_segment, RowStore};

/// How long reading the deletes of a task may wait for the next log entry before giving up.
const LOG_WAIT: Duration = Duration::from_secs(30);

/// The merged segment and its file (none when nothing is left or the input is kept), rows
/// dropped, and whether the one input is kept as it is.
type Merged = (Option<(SegmentInfo, Vec<u8>)>, u64, bool);

/// Runs one compaction task: reads the deletes and the inputs, merges, stores the result.
pub(super) async fn run(node: &Node, task: CompactTask) -> Result<CompactOutcome> {
    check(&task)?;
    let deletes = read_deletes(node, &task).await?;
    let objects = &node.shared.objects;
    let mut inputs = Vec::with_capacity(task.inputs.len());
    for seg in &task.inputs {
        inputs.push(objects.get(&seg.data_path).await?);
    }
    let dim = task.collection.dim() as usize;
    let (plan, output, collection, delete_to) = (task.plan, task.output, task.collection.id, task.delete_to);
    let min_dropped = task.min_dropped;
    let gone: Vec<PartitionId> =
        task.collection.partitions.iter().filter(|p| p.state == PartitionState::Dropped).map(|p| p.id).collect();
    let infos = task.inputs.clone();
    let merged = tokio::task::spawn_blocking(move || -> Result<Merged> {
        let mut rows = RowStore::new(dim);
        let mut dropped = 0u64;
        for bytes in &inputs {
            let (_, input) = decode_segment(bytes)?;
            let keep = kept_rows(&input, &deletes, &gone);
            dropped += (input.len() - keep.len()) as u64;
            rows.extend_from(&input, &keep);
        }
        if infos.len() == 1 && (dropped == 0 || dropped < min_dropped) {
            return Ok((None, dropped, true));
        }
        if rows.is_empty() {
            return Ok((None, dropped, false));
        }
        let info = merged_info(&infos, output, collection, delete_to, &rows);
        let bytes = encode_segment(&info, &rows)?;
        Ok((Some((info, bytes)), dropped, false))
    })
    .await
    .map_err(Error::internal)??;
    let (stored, dropped_rows, unchanged) = merged;
    let output = match stored {
        Some((info, bytes)) => {
            objects.put(&info.data_path, bytes.into()).await?;
            Some(info)
        }
        None => None,
    };
    tracing::info!(plan, collection, shard = task.shard, inputs = ?task.inputs.iter().map(|s| s.id).collect::<Vec<_>>(),
        output = ?output.as_ref().map(|s| (s.id, s.rows)), dropped_rows, unchanged, "compaction task done");
    metrics::counter!("quiver_compaction_rows_dropped_total").increment(dropped_rows);
    Ok(CompactOutcome { plan, output, dropped_rows, unchanged })
}

/// Refuses a task that cannot be what the coordinator meant.
fn check(task: &CompactTask) -> Result<()> {
    let Some(first) = task.inputs.first() else {
        return Err(Error::InvalidArgument(format!("compaction plan {} has no input segment", task.plan)));
    };
    if let Some(s) = task.inputs.iter().find(|s| s.collection != task.collection.id || s.shard != task.shard) {
        return Err(Error::InvalidArgument(format!(
            "compaction plan {}: segment {} is not of collection {} shard {}",
            task.plan, s.id, task.collection.id, task.shard
        )));
    }
    if task.inputs.windows(2).any(|w| w[0].end_seq >= w[1].start_seq) {
        return Err(Error::InvalidArgument(format!(
            "compaction plan {}: input segments are not in log order (first {})",
            task.plan, first.id
        )));
    }
    Ok(())
}

/// The latest delete position of every key deleted in `(delete_from, delete_to]` of the
/// task's shard (inserts are skipped undecoded).
async fn read_deletes(node: &Node, task: &CompactTask) -> Result<HashMap<PrimaryKey, Seq>> {
    let mut deletes = HashMap::new();
    let bus = &node.shared.bus;
    let last = dml::last_seq(bus, task.collection.id, task.shard).await?;
    if last < task.delete_to {
        return Err(Error::Internal(format!(
            "compaction plan {} applies deletes up to log position {} but shard {}'s log ends at {last}",
            task.plan, task.delete_to, task.shard
        )));
    }
    let target = task.delete_to;
    if target <= task.delete_from {
        return Ok(deletes);
    }
    let mut log = ShardLog::open(bus, &task.collection, task.shard, task.delete_from, target, None).await?;
    loop {
        let entry = tokio::time::timeout(LOG_WAIT, log.next())
            .await
            .map_err(|_| Error::Unavailable(format!("shard {} log stalled below {target}", task.shard)))?
            .ok_or_else(|| Error::Unavailable("DML consumer ended".into()))??;
        if entry.seq > target {
            break;
        }
        if let Some(DmlEntry::Delete { pks, .. }) = entry.entry {
            for pk in pks {
                let at = deletes.entry(pk).or_insert(0);
                *at = entry.seq.max(*at);
            }
        }
        if entry.seq >= target {
            break;
        }
    }
    Ok(deletes)
}

/// Rows of `input` that no delete hides (a delete hides the rows written before it) and that
/// are not in one of the `dropped` partitions.
fn kept_rows(input: &RowStore, deletes: &HashMap<PrimaryKey, Seq>, dropped: &[PartitionId]) -> Vec<usize> {
    (0..input.len())
        .filter(|&r| deletes.get(&input.pks[r]).is_none_or(|&d| d <= input.seqs[r]))
        .filter(|&r| dropped.is_empty() || !dropped.contains(&input.partition(r)))
        .collect()
}

/// The merged segment's record: the inputs' log range, deletes applied up to `delete_to`.
fn merged_info(inputs: &[SegmentInfo], id: u64, collection: u64, delete_to: Seq, rows: &RowStore) -> SegmentInfo {
    let start_seq = inputs.iter().map(|s| s.start_seq).min().unwrap_or(0);
    let end_seq = inputs.iter().map(|s| s.end_seq).max().unwrap_or(0);
    SegmentInfo {
        id,
        collection,
        shard: inputs.first().map_or(0, |s| s.shard),
        rows: rows.len() as u64,
        start_seq,
        end_seq,
        data_path: keys::paths::segment_data(collection, id),
        index_path: None,
        state: SegmentState::Flushed,
        mem_size: rows.mem_bytes(),
        delete_seq: delete_to,
        compacted_from: inputs.iter().map(|s| s.id).collect(),
        partitions: rows.partition_set(),
    }
}

#[cfg(test)]
mod tests {
    use quiver_schemas::{Column, RowBatch, ScalarValue};

    use super::*;

    fn rows(seq: Seq, keys: std::ops::Range<i64>) -> RowStore {
        let mut store = RowStore::new(2);
        let batch = RowBatch {
            pks: keys.clone().map(PrimaryKey::Int64).collect(),
            dim: 2,
            vectors: keys.clone().flat_map(|k| [k as f32, 1.0]).collect(),
            columns: vec![Column { name: "n".into(), values: keys.map(ScalarValue::Int64).collect() }],
            dynamic: Vec::new(),
        };
        store.append(&batch, seq, 0);
        store
    }

    #[test]
    fn a_delete_hides_only_rows_written_before_it() {
        let input = rows(10, 0..4);
        // key 0 deleted after it was written; key 1 deleted before (then written again at 10).
        let deletes: HashMap<PrimaryKey, Seq> = [(PrimaryKey::Int64(0), 11), (PrimaryKey::Int64(1), 9)].into();
        assert_eq!(kept_rows(&input, &deletes, &[]), [1, 2, 3]);
    }

    #[test]
    fn merged_rows_keep_their_sequences_values_and_vectors() {
        let (a, b) = (rows(10, 0..3), rows(20, 3..5));
        let mut out = RowStore::new(2);
        out.extend_from(&a, &[0, 2]);
        out.extend_from(&b, &[1]);
        assert_eq!(out.pks, [0, 2, 4].map(PrimaryKey::Int64));
        assert_eq!(out.seqs, [10, 10, 20]);
        assert_eq!(out.vectors, [0.0, 1.0, 2.0, 1.0, 4.0, 1.0]);
        assert_eq!(out.columns[0].values, [0, 2, 4].map(ScalarValue::Int64));
        let segs = |id, start, end| SegmentInfo {
            partitions: Default::default(),
            id,
            collection: 7,
            shard: 1,
            rows: 0,
            start_seq: start,
            end_seq: end,
            data_path: String::new(),
            index_path: None,
            state: SegmentState::Indexed,
            mem_size: 0,
            delete_seq: 0,
            compacted_from: Vec::new(),
        };
        let info = merged_info(&[segs(1, 10, 12), segs(2, 20, 25)], 9, 7, 30, &out);
        assert_eq!((info.id, info.shard, info.rows, info.start_seq, info.end_seq), (9, 1, 3, 10, 25));
        assert_eq!(
            (info.delete_seq, info.compacted_from.as_slice(), info.state),
            (30, &[1, 2][..], SegmentState::Flushed)
        );
        assert_eq!(info.data_path, "collections/7/segments/9/data");
    }

    #[test]
    fn tasks_out_of_order_or_of_another_shard_are_refused() {
        let info = |id, shard, start, end| SegmentInfo {
            partitions: Default::default(),
            id,
            collection: 7,
            shard,
            rows: 1,
            start_seq: start,
            end_seq: end,
            data_path: String::new(),
            index_path: None,
            state: SegmentState::Flushed,
            mem_size: 0,
            delete_seq: 0,
            compacted_from: Vec::new(),
        };
        let schema = quiver_schemas::CollectionSchema {
            name: "c".into(),
            description: String::new(),
            fields: Vec::new(),
            enable_dynamic_field: false,
            num_shards: 1,
            consistency: quiver_schemas::Consistency::Bounded,
        };
        let collection = quiver_schemas::CollectionInfo {
            partitions: Default::default(),
            id: 7,
            schema,
            index: None,
            created_ts: 0,
            scalar_indexes: Vec::new(),
        };
        let task = |inputs| CompactTask {
            collection: collection.clone(),
            shard: 0,
            plan: 1,
            inputs,
            output: 9,
            delete_from: 0,
            delete_to: 5,
            min_dropped: 0,
        };
        assert!(check(&task(vec![info(1, 0, 1, 2), info(2, 0, 3, 4)])).is_ok());
        assert!(check(&task(vec![])).is_err());
        assert!(check(&task(vec![info(2, 0, 3, 4), info(1, 0, 1, 2)])).is_err(), "out of order");
        assert!(check(&task(vec![info(1, 1, 1, 2)])).is_err(), "another shard");
    }
}
