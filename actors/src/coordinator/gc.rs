//! Garbage collection of the object store, as Milvus' data coordinator does it: every
//! `storage.gc_interval` the active coordinator lists `collections/` and deletes the objects
//! that no segment of the catalog names and that are older than `storage.gc_tolerance`.
//!
//! Deletes elsewhere (a dropped collection, the inputs of a compaction, a dropped index) run
//! after the catalog change and may not happen: the store fails them, or the coordinator dies
//! in between. Other objects are never named at all: a flush refused because its collection was
//! dropped or its data node lost the shard, an index finished for a segment merged or dropped
//! meanwhile. The sweep finds them all by the one rule. What is being written is not named
//! yet: a segment being flushed is protected by the tolerance, and a segment being indexed or
//! written by a compaction whatever its age.

use std::collections::HashSet;

use quiver_runtime::bus::now_ms;
use quiver_runtime::Result;
use quiver_schemas::protocol::keys;
use quiver_schemas::SegmentInfo;

use super::Coordinator;

/// What one sweep found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Objects named by a segment.
    pub named: u64,
    /// Objects no segment names, younger than the tolerance or being written: kept for now.
    pub waiting: u64,
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Deletes the store refused (tried again next sweep).
    pub failed: u64,
}

/// The folder swept: segments and indexes of every collection (plugins and the start-up check
/// live beside it).
const SWEPT: &str = "collections/";

impl Coordinator {
    pub(super) async fn gc_loop(self: std::rc::Rc<Self>) -> Result<()> {
        let interval = self.node.shared.config.storage.gc_interval;
        if interval.is_zero() {
            return Ok(());
        }
        loop {
            tokio::time::sleep(interval).await;
            match self.collect_garbage().await {
                Ok(swept) if swept.deleted > 0 || swept.failed > 0 => tracing::info!(
                    deleted = swept.deleted,
                    bytes = swept.deleted_bytes,
                    failed = swept.failed,
                    named = swept.named,
                    waiting = swept.waiting,
                    "object store swept"
                ),
                Ok(swept) => tracing::debug!(named = swept.named, waiting = swept.waiting, "object store swept"),
                Err(e) => {
                    metrics::counter!("quiver_gc_sweeps_total", "outcome" => "failed").increment(1);
                    tracing::warn!(error = %e, "object store sweep failed; will retry");
                }
            }
        }
    }

    /// One sweep (see the module's documentation).
    pub(super) async fn collect_garbage(&self) -> Result<Swept> {
        let objects = &self.node.shared.objects;
        let tolerance_ms = self.node.shared.config.storage.gc_tolerance.as_millis() as u64;
        let listed = objects.list(SWEPT).await?;
        // The catalog as it is after the listing: whatever was named by then is kept.
        let named: HashSet<String> = {
            let catalog = self.catalog.lock().await;
            catalog
                .segments
                .values()
                .flat_map(|segments| segments.values())
                .flat_map(|s| std::iter::once(s.data_path.clone()).chain(s.index_path.clone()))
                .collect()
        };
        let now = now_ms();
        let mut swept = Swept::default();
        for object in listed {
            if named.contains(&object.path) {
                swept.named += 1;
                continue;
            }
            let segment = segment_of(&object.path);
            let writing = segment
                .is_some_and(|(_, id)| self.building.borrow().contains(&id) || self.compactions.borrow().busy(id));
            let age_ms = now.saturating_sub(object.modified_ms);
            if writing || age_ms < tolerance_ms {
                swept.waiting += 1;
                continue;
            }
            // The catalog in memory is what the metadata holds; the metadata is asked again
            // before anything is deleted for good.
            if let Some((collection, id)) = segment {
                let stored: Option<SegmentInfo> = self.meta.get(&keys::segment(collection, id)).await?;
                if stored.is_some_and(|s| s.data_path == object.path || s.index_path.as_ref() == Some(&object.path)) {
                    tracing::warn!(path = %object.path, "kept an object the catalog lacks and the metadata names");
                    swept.named += 1;
                    continue;
                }
            }
            match objects.delete(&object.path).await {
                Ok(()) => {
                    tracing::info!(path = %object.path, bytes = object.size, age_s = age_ms / 1000,
                        "deleted an object no segment names");
                    swept.deleted += 1;
                    swept.deleted_bytes += object.size;
                }
                Err(e) => {
                    tracing::warn!(path = %object.path, error = %e, "could not delete an object no segment names");
                    swept.failed += 1;
                }
            }
        }
        metrics::counter!("quiver_gc_sweeps_total", "outcome" => "done").increment(1);
        metrics::counter!("quiver_gc_objects_deleted_total").increment(swept.deleted);
        metrics::counter!("quiver_gc_bytes_deleted_total").increment(swept.deleted_bytes);
        metrics::gauge!("quiver_gc_objects_waiting").set(swept.waiting as f64);
        Ok(swept)
    }
}

/// The (collection, segment) of an object at `collections/<cid>/segments/<sid>/…`.
fn segment_of(path: &str) -> Option<(u64, u64)> {
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("collections"), Some(c), Some("segments"), Some(s)) => Some((c.parse().ok()?, s.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use quiver_schemas::protocol::keys::paths;

    #[test]
    fn an_objects_segment_is_read_from_its_path() {
        assert_eq!(super::segment_of(&paths::segment_data(3, 17)), Some((3, 17)));
        assert_eq!(super::segment_of(&paths::segment_index(3, 18)), Some((3, 18)));
        assert_eq!(super::segment_of("collections/3/segments/x/data"), None);
        assert_eq!(super::segment_of("collections/3/other/4/data"), None);
        assert_eq!(super::segment_of("plugins/router/r/1.wasm"), None);
    }
}
