//! Segment listings as Milvus shows them, from the collection's serving layout (the
//! coordinator's catalog of sealed segments and where each is loaded):
//! `GetPersistentSegmentInfo` (pymilvus `list_persistent_segments`) lists every sealed
//! segment, `GetQuerySegmentInfo` (`list_loaded_segments`) the ones query nodes serve.
//!
//! Quiver's sealed segments are Milvus' flushed L1 segments of one partition. `is_sorted` is
//! always true: Milvus sorts a flushed segment by primary key in a background job so that key
//! lookups need no scan, and clients (VectorDBBench) wait for that before they compact and
//! search; a Quiver segment has no such job pending, its key lookups go through the key index
//! the query node builds as it loads the segment. Growing rows have no segment id in Quiver (a
//! shard leader holds them until a data node seals them) and are not listed.

use quiver_schemas::{Distribution, SegmentInfo, SegmentState};

use super::proto::common::{SegmentLevel, SegmentState as MilvusState};
use super::proto::milvus::{PersistentSegmentInfo, QuerySegmentInfo};
use super::service::node_number;

/// The id reported for the only partition (`_default`) of collection `id`.
pub(super) fn default_partition(collection: u64) -> i64 {
    collection as i64 + 1
}

fn live(s: &SegmentInfo) -> bool {
    s.state != SegmentState::Dropped
}

/// Every sealed segment of the collection, flushed (with its index or not yet), served or
/// not yet.
pub(super) fn persistent(dist: &Distribution) -> Vec<PersistentSegmentInfo> {
    dist.segments
        .iter()
        .map(|p| &p.segment)
        .chain(&dist.unserved)
        .filter(|s| live(s))
        .map(|s| PersistentSegmentInfo {
            segment_id: s.id as i64,
            collection_id: s.collection as i64,
            partition_id: default_partition(s.collection),
            num_rows: s.rows as i64,
            state: MilvusState::Flushed as i32,
            level: SegmentLevel::L1 as i32,
            is_sorted: true,
            // Milvus' binlog format version (2.6): Quiver's segment objects are not binlogs.
            storage_version: 0,
        })
        .collect()
}

/// Percentage of the flushed segments readers use (`refresh_progress`): a segment flushed
/// after the collection was loaded counts once its shard serves it from the sealed copy.
pub(super) fn refresh_progress(dist: &Distribution, load_progress: i64) -> i64 {
    let pending = dist.unserved.iter().filter(|s| live(s)).count();
    let total = dist.segments.len() + pending;
    if total == 0 || pending == 0 {
        return load_progress;
    }
    load_progress.min((dist.segments.len() * 100 / total) as i64)
}

/// The sealed segments query nodes serve, with the nodes and the vector index each uses.
pub(super) fn loaded(dist: &Distribution) -> Vec<QuerySegmentInfo> {
    let info = &dist.collection;
    let vector_field = info.vector_field().map(|f| f.name.clone()).unwrap_or_default();
    let index_name = info.index.as_ref().map(|i| if i.name.is_empty() { vector_field } else { i.name.clone() });
    dist.segments
        .iter()
        .filter(|p| !p.nodes.is_empty() && live(&p.segment))
        .map(|p| {
            let s = &p.segment;
            let node_ids: Vec<i64> = p.nodes.iter().map(|n| node_number(n)).collect();
            let indexed = s.state == SegmentState::Indexed;
            QuerySegmentInfo {
                segment_id: s.id as i64,
                collection_id: s.collection as i64,
                partition_id: default_partition(s.collection),
                mem_size: s.mem_size as i64,
                num_rows: s.rows as i64,
                index_name: if indexed { index_name.clone().unwrap_or_default() } else { String::new() },
                index_id: if indexed { info.id as i64 } else { 0 },
                #[allow(deprecated)]
                node_id: node_ids.first().copied().unwrap_or(0),
                state: MilvusState::Sealed as i32,
                node_ids,
                level: SegmentLevel::L1 as i32,
                is_sorted: true,
                storage_version: 0,
            }
        })
        .collect()
}
