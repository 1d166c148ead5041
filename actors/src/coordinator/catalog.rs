//! Collection metadata: schema validation, creation (with its DML streams), lookup, drop.

use std::collections::BTreeMap;

use async_nats::jetstream::stream;
use quiver_runtime::config::LimitsConfig;
use quiver_runtime::{Bus, Error, Result};
use quiver_schemas::{CollectionInfo, CollectionSchema, DataType, IndexParams, IndexType, ScalarIndex, SegmentInfo};
use serde::{Deserialize, Serialize};

/// Where each shard's DML channel is consumed and served, and which nodes hold which segments.
/// Persisted as `layout.<collection id>` so a restarted coordinator keeps its assignments.
///
/// A loaded collection has `replica_number` replica groups (MISSION S2.2) on disjoint query
/// nodes. Each group has one leader per shard (serving the shard's growing rows) and one target
/// per sealed segment (spread over the group's nodes), so every group is a full copy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub shards: Vec<ShardLayout>,
    /// The replica groups (empty while released).
    #[serde(default)]
    pub replicas: Vec<ReplicaLayout>,
    /// Replica groups wanted (`replica_number`; 0 reads as 1).
    #[serde(default)]
    pub replica_number: u32,
    /// Segment id → query nodes that confirmed they serve it (of any group).
    pub holders: BTreeMap<u64, Vec<String>>,
    /// Incarnation (`started_ms`) of each query node when it last confirmed a load: a holder
    /// whose node restarted since holds nothing any more.
    pub epochs: BTreeMap<String, u64>,
    pub version: u64,
    /// Released by an operator: no query node serves the collection until it is loaded again.
    #[serde(default)]
    pub released: bool,
    /// Before replicas (one implicit group): segment id → query node. Read once by `migrate`.
    #[serde(default, skip_serializing)]
    pub(super) targets: BTreeMap<u64, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardLayout {
    pub shard: u32,
    /// Data node consuming the shard's DML channel.
    pub channel_owner: String,
    /// Log position up to which rows are served from sealed segments (never moves back); the
    /// leaders serve growing rows after it, and inserts before it are purged from the log.
    pub served_seq: u64,
    /// Before replicas: the shard's one leader. Read once by `Layout::migrate`.
    #[serde(default, skip_serializing)]
    pub(super) leader: String,
}

impl ShardLayout {
    fn new(shard: u32) -> ShardLayout {
        ShardLayout { shard, ..Default::default() }
    }
}

/// One replica group of a collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaLayout {
    pub id: u32,
    /// The query nodes of the group (disjoint from the other groups' of the collection).
    pub nodes: Vec<String>,
    /// Per shard, in the order of `Layout::shards`: the group's leader of it.
    pub leaders: Vec<ShardLeader>,
    /// Segment id → the group's node chosen to load it (confirmed or not yet).
    pub targets: BTreeMap<u64, String>,
}

/// A shard's leader in one replica group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardLeader {
    /// Query node id; empty while none can be placed.
    pub node: String,
    /// The node confirmed it serves the shard's growing rows (loaded its desired state).
    pub confirmed: bool,
}

impl Layout {
    /// The layout of a new collection: `shards` shards, one replica, nothing placed yet.
    pub fn new(shards: u32) -> Layout {
        Layout { shards: (0..shards).map(ShardLayout::new).collect(), replica_number: 1, ..Default::default() }
    }

    /// Replica groups wanted (at least 1).
    pub fn wanted_replicas(&self) -> usize {
        self.replica_number.max(1) as usize
    }

    /// The replica group `node` belongs to.
    pub fn group_of(&self, node: &str) -> Option<&ReplicaLayout> {
        self.replicas.iter().find(|g| g.nodes.iter().any(|n| n == node))
    }

    /// Whether `node` is the target of `segment` in its group.
    pub fn is_target(&self, segment: u64, node: &str) -> bool {
        self.replicas.iter().any(|g| g.targets.get(&segment).is_some_and(|t| t == node))
    }

    /// Moves a layout written before replica groups existed into group 0.
    pub fn migrate(&mut self) {
        let legacy_leaders = self.shards.iter().any(|s| !s.leader.is_empty());
        if !self.replicas.is_empty() || (!legacy_leaders && self.targets.is_empty()) {
            return;
        }
        let mut group = ReplicaLayout { id: 0, targets: std::mem::take(&mut self.targets), ..Default::default() };
        for shard in &mut self.shards {
            let node = std::mem::take(&mut shard.leader);
            group.leaders.push(ShardLeader { confirmed: !node.is_empty(), node });
        }
        let mut nodes: Vec<String> =
            group.leaders.iter().map(|l| l.node.clone()).chain(group.targets.values().cloned()).collect();
        nodes.retain(|n| !n.is_empty());
        nodes.sort();
        nodes.dedup();
        group.nodes = nodes;
        self.replicas.push(group);
        self.replica_number = 1;
    }
}

pub(super) fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 255
}

/// Checks a schema, filling in defaults; every error names the offending field.
pub fn validate_schema(
    mut schema: CollectionSchema,
    default_shards: u32,
    limits: &LimitsConfig,
) -> Result<CollectionSchema> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
    if schema.fields.len() > limits.max_fields {
        return bad(format!(
            "the schema has {} fields, more than the limit of {} (limits.max_fields)",
            schema.fields.len(),
            limits.max_fields
        ));
    }
    if schema.description.len() > 65_535 {
        return bad(format!("the collection description is {} bytes, over 65535", schema.description.len()));
    }
    if !valid_identifier(&schema.name) {
        return bad(format!(
            "collection name {:?} is invalid: use 1-255 letters, digits or '_', starting with a letter or '_'",
            schema.name
        ));
    }
    if schema.num_shards == 0 {
        schema.num_shards = default_shards;
    }
    if schema.num_shards > super::MAX_SHARDS {
        return bad(format!("num_shards {} is too large (at most {})", schema.num_shards, super::MAX_SHARDS));
    }
    let mut seen = std::collections::HashSet::new();
    for f in &mut schema.fields {
        if !valid_identifier(&f.name) {
            return bad(format!("field name {:?} is invalid: use letters, digits or '_'", f.name));
        }
        if !seen.insert(f.name.clone()) {
            return bad(format!("field {:?} appears twice", f.name));
        }
        if f.data_type == DataType::VarChar {
            if f.max_length == 0 {
                f.max_length = 65_535;
            }
            if f.max_length > limits.max_varchar_length {
                return bad(format!(
                    "field {:?}: max_length {} exceeds the limit of {} (limits.max_varchar_length)",
                    f.name, f.max_length, limits.max_varchar_length
                ));
            }
        }
    }
    let primaries: Vec<_> = schema.fields.iter().filter(|f| f.is_primary).collect();
    match primaries.as_slice() {
        [pk] => {
            if !matches!(pk.data_type, DataType::Int64 | DataType::VarChar) {
                return bad(format!("primary key {:?} must be Int64 or VarChar", pk.name));
            }
            if pk.auto_id && pk.data_type != DataType::Int64 {
                return bad(format!("auto_id on {:?} needs an Int64 primary key", pk.name));
            }
        }
        [] => return bad("the schema has no primary key field (set is_primary on one Int64 or VarChar field)".into()),
        _ => return bad("the schema has more than one primary key field".into()),
    }
    let vectors: Vec<_> = schema.fields.iter().filter(|f| f.data_type == DataType::FloatVector).collect();
    match vectors.as_slice() {
        [v] if v.dim == 0 || v.dim > limits.max_dim => {
            return bad(format!(
                "vector field {:?}: dim {} must be between 1 and {} (limits.max_dim)",
                v.name, v.dim, limits.max_dim
            ))
        }
        [_] => {}
        [] => return bad("the schema has no FloatVector field".into()),
        _ => return bad("the schema has more than one FloatVector field (one is supported)".into()),
    }
    if schema.fields.iter().any(|f| f.auto_id && !f.is_primary) {
        return bad("auto_id is only valid on the primary key field".into());
    }
    Ok(schema)
}

/// Checks index parameters against the collection's dimension; zero means "default".
pub fn validate_index(p: &IndexParams, dim: u32) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
    if p.nlist > 65_536 {
        return bad(format!("nlist {} is too large (at most 65536)", p.nlist));
    }
    if p.index_type == IndexType::IvfPq {
        // m = 0 lets the build pick the largest divisor of the dimension up to 8.
        if p.m != 0 && !dim.is_multiple_of(p.m) {
            return bad(format!("IVF_PQ: m = {} must divide the dimension {dim}", p.m));
        }
        if p.nbits > 16 {
            return bad(format!("IVF_PQ: nbits {} must be at most 16", p.nbits));
        }
    }
    // M = 1 cannot build a graph; accepting it would leave every index build failing.
    if p.index_type == IndexType::Hnsw && (p.m == 1 || p.m > 2048) {
        return bad(format!("HNSW: M = {} must be between 2 and 2048 (0 = the default 16)", p.m));
    }
    Ok(())
}

/// `info` with scalar index `index` added, or `None` when it has exactly that index already.
/// Milvus' rules: the field must exist, be scalar and suit the index type; a field has at
/// most one index, and an index name is used once (the vector index's included).
pub fn with_scalar_index(info: &CollectionInfo, index: ScalarIndex) -> Result<Option<CollectionInfo>> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
    let Some(field) = info.schema.fields.iter().find(|f| f.name == index.field) else {
        return bad(format!(
            "cannot create index on non-exist field: {} (collection {:?})",
            index.field, info.schema.name
        ));
    };
    if let Err(e) = index.index_type.check_field(field, &index.params) {
        return bad(format!("{e} (field {:?} of collection {:?})", field.name, info.schema.name));
    }
    if info.scalar_indexes.contains(&index) {
        return Ok(None);
    }
    let vector_index_name = info.index.as_ref().map(|i| {
        if i.name.is_empty() {
            info.vector_field().map(|f| f.name.clone()).unwrap_or_default()
        } else {
            i.name.clone()
        }
    });
    let taken = info.scalar_indexes.iter().any(|i| i.field == index.field || i.name == index.name)
        || vector_index_name.is_some_and(|n| n == index.name);
    if taken {
        return bad(format!(
            "CreateIndex failed: at most one distinct index is allowed per field (index {:?} on field {:?}: \
             the field has another index, or the name is another field's; drop it first)",
            index.name, index.field
        ));
    }
    let mut updated = info.clone();
    updated.scalar_indexes.push(index);
    Ok(Some(updated))
}

/// Creates the JetStream stream of each shard (idempotent), and lets streams created by older
/// versions take atomic batches (a shard's share of an upsert is one).
pub async fn create_streams(bus: &Bus, info: &CollectionInfo, replicas: usize) -> Result<()> {
    for shard in 0..info.schema.num_shards {
        let subjects = bus.subjects();
        let config = stream::Config {
            name: subjects.dml_stream(info.id, shard),
            subjects: vec![format!("{}.*", subjects.dml(info.id, shard))],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            max_message_size: -1,
            allow_atomic_publish: true,
            ..Default::default()
        };
        let unavailable = |e: &dyn std::fmt::Display| {
            Error::Unavailable(format!("cannot create DML stream for shard {shard} of {:?}: {e}", info.schema.name))
        };
        let mut stream = bus.jetstream().get_or_create_stream(config).await.map_err(|e| unavailable(&e))?;
        let existing = stream.info().await.map_err(|e| unavailable(&e))?.config.clone();
        if !existing.allow_atomic_publish {
            let upgraded = stream::Config { allow_atomic_publish: true, ..existing };
            bus.jetstream().update_stream(upgraded).await.map_err(|e| unavailable(&e))?;
        }
    }
    Ok(())
}

/// Deletes the DML streams of a collection.
pub async fn delete_streams(bus: &Bus, info: &CollectionInfo) {
    for shard in 0..info.schema.num_shards {
        let name = bus.subjects().dml_stream(info.id, shard);
        if let Err(e) = bus.jetstream().delete_stream(&name).await {
            tracing::warn!(stream = %name, error = %e, "could not delete DML stream");
        }
    }
}

/// Rows in sealed segments (what Milvus reports as `row_count`).
/// Rows in sealed segments, each counted once: the inputs of a merged segment that are still
/// present (compaction has not switched readers yet) are left out for it.
pub fn sealed_rows(segments: &BTreeMap<u64, SegmentInfo>) -> u64 {
    let replaced: std::collections::HashSet<u64> =
        segments.values().flat_map(|s| s.compacted_from.iter().copied()).collect();
    segments.values().filter(|s| !replaced.contains(&s.id)).map(|s| s.rows).sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quiver_schemas::FieldSchema;

    fn field(name: &str, t: DataType) -> FieldSchema {
        FieldSchema {
            name: name.into(),
            data_type: t,
            is_primary: false,
            auto_id: false,
            dim: 0,
            max_length: 0,
            description: String::new(),
        }
    }

    fn schema() -> CollectionSchema {
        let mut pk = field("id", DataType::Int64);
        pk.is_primary = true;
        let mut v = field("v", DataType::FloatVector);
        v.dim = 8;
        CollectionSchema {
            name: "c1".into(),
            description: String::new(),
            fields: vec![pk, v],
            enable_dynamic_field: true,
            num_shards: 0,
            consistency: Default::default(),
        }
    }

    #[test]
    fn accepts_valid_and_fills_defaults() {
        let s = validate_schema(schema(), 2, &LimitsConfig::default()).unwrap();
        assert_eq!(s.num_shards, 2);
    }

    #[test]
    fn rejects_with_named_problems() {
        let mut s = schema();
        s.fields[1].dim = 0;
        assert!(validate_schema(s, 1, &LimitsConfig::default()).unwrap_err().to_string().contains("dim"));
        let mut s = schema();
        s.fields.push(field("id", DataType::Bool));
        assert!(validate_schema(s, 1, &LimitsConfig::default()).unwrap_err().to_string().contains("twice"));
        let mut s = schema();
        s.fields[0].is_primary = false;
        assert!(validate_schema(s, 1, &LimitsConfig::default()).unwrap_err().to_string().contains("primary"));
        let mut s = schema();
        s.name = "bad name".into();
        assert!(validate_schema(s, 1, &LimitsConfig::default()).unwrap_err().to_string().contains("invalid"));
        let mut s = schema();
        s.fields[0].data_type = DataType::VarChar;
        s.fields[0].auto_id = true;
        assert!(validate_schema(s, 1, &LimitsConfig::default()).unwrap_err().to_string().contains("auto_id"));
    }

    #[test]
    fn index_params_that_cannot_build_are_rejected() {
        let hnsw = |m| IndexParams {
            index_type: IndexType::Hnsw,
            metric: quiver_schemas::MetricType::Ip,
            nlist: 0,
            m,
            nbits: 0,
            ef_construction: 0,
            auto: false,
            name: String::new(),
        };
        assert!(validate_index(&hnsw(1), 8).unwrap_err().to_string().contains("M = 1"));
        assert!(validate_index(&hnsw(4096), 8).unwrap_err().to_string().contains("M = 4096"));
        assert!(validate_index(&hnsw(0), 8).is_ok());
        assert!(validate_index(&hnsw(2), 8).is_ok());
        assert!(validate_index(&hnsw(2048), 8).is_ok());
    }
}
