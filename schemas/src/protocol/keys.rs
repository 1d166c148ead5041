//! Where things live: the metadata bucket's keys and the object store's paths. Every key and
//! path is built here; the coordinator owns the metadata keys (other roles learn what they
//! need from its messages), and object paths are shared by writers and readers.

use crate::types::{CollectionId, SegmentId};

/// A collection's `CollectionInfo`.
pub fn collection(name: &str) -> String {
    format!("collection.{name}")
}

/// Prefix of every collection's `CollectionInfo`.
pub const COLLECTIONS: &str = "collection.";

/// A sealed segment's `SegmentInfo`.
pub fn segment(collection: CollectionId, segment: SegmentId) -> String {
    format!("segment.{collection}.{segment}")
}

/// Prefix of every segment of a collection.
pub fn segments(collection: CollectionId) -> String {
    format!("segment.{collection}.")
}

/// A collection's persisted serving layout.
pub fn layout(collection: CollectionId) -> String {
    format!("layout.{collection}")
}

/// The timestamp oracle's high-water mark.
pub const TSO: &str = "tso";

/// The id allocator's high-water mark.
pub const IDS: &str = "ids";

/// The active coordinator's lease (holder, epoch), renewed while it acts.
pub const COORD_LEASE: &str = "coord.lease";

/// The epoch of the latest coordinator takeover: every write of the active coordinator is
/// fenced on this key's revision.
pub const COORD_EPOCH: &str = "coord.epoch";

/// The scaler's wanted node count of a role (`quiver ctl scale`).
pub fn desired_replicas(role: crate::types::Role) -> String {
    format!("scaling.desired.{}", role.as_str())
}

/// The size every node of a role should have (`quiver ctl scale --cpu/--memory`, the autoscaler).
pub fn role_size(role: crate::types::Role) -> String {
    format!("scaling.size.{}", role.as_str())
}

/// The operator's autoscaling bounds of a role (`quiver ctl autoscale`).
pub fn autoscale_bounds(role: crate::types::Role) -> String {
    format!("autoscaling.bounds.{}", role.as_str())
}

/// A role's metrics window (samples the autoscaler decides on; MISSION S3.3).
pub fn autoscale_window(role: crate::types::Role) -> String {
    format!("autoscaling.window.{}", role.as_str())
}

/// The idling state (awake, idle, waking) and the last measured start-up time.
pub const IDLING: &str = "idling.state";

/// The autoscaler's recent decisions.
pub const AUTOSCALE_DECISIONS: &str = "autoscaling.decisions";

/// The number of the next node process the scaler starts (node ids are never reused).
pub const SCALING_SEQ: &str = "scaling.seq";

/// Object-store paths.
pub mod paths {
    use crate::types::{CollectionId, SegmentId};

    /// A sealed segment's rows (the `rows` segment file format).
    pub fn segment_data(collection: CollectionId, segment: SegmentId) -> String {
        format!("collections/{collection}/segments/{segment}/data")
    }

    /// A sealed segment's serialized faiss index.
    pub fn segment_index(collection: CollectionId, segment: SegmentId) -> String {
        format!("collections/{collection}/segments/{segment}/index")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_nest_under_their_prefixes() {
        assert!(super::collection("docs").starts_with(super::COLLECTIONS));
        assert!(super::segment(3, 9).starts_with(&super::segments(3)));
        assert!(!super::segment(31, 9).starts_with(&super::segments(3)));
        assert_eq!(super::paths::segment_index(3, 9), "collections/3/segments/9/index");
    }
}
