//! Plain Rust types carried on the bus. Actors work on these; `codec` turns them into
//! Cap'n Proto bytes and back. Metadata stored in NATS KV uses their serde form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub type CollectionId = u64;
pub type SegmentId = u64;
pub type ShardId = u32;
/// A partition's id, unique within its collection and never reused; `_default` is 0.
pub type PartitionId = u32;
/// Hybrid timestamp from the coordinator's TSO: physical milliseconds << 18 | logical counter.
pub type Timestamp = u64;
/// JetStream stream sequence of a DML message within its shard stream.
pub type Seq = u64;

/// Bits reserved for the logical part of a hybrid timestamp.
pub const TS_LOGICAL_BITS: u32 = 18;

/// The physical (wall clock, ms since the epoch) part of a hybrid timestamp.
pub fn ts_physical_ms(ts: Timestamp) -> u64 {
    ts >> TS_LOGICAL_BITS
}

/// Builds a hybrid timestamp from wall-clock milliseconds and a logical counter.
pub fn ts_compose(physical_ms: u64, logical: u64) -> Timestamp {
    (physical_ms << TS_LOGICAL_BITS) | (logical & ((1 << TS_LOGICAL_BITS) - 1))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataType {
    Bool,
    Int64,
    Float,
    Double,
    VarChar,
    Json,
    FloatVector,
}

impl DataType {
    /// The type's name as Milvus writes it in its error messages (`Int64`, `VarChar`, `JSON`).
    pub fn milvus_name(self) -> &'static str {
        match self {
            DataType::Bool => "Bool",
            DataType::Int64 => "Int64",
            DataType::Float => "Float",
            DataType::Double => "Double",
            DataType::VarChar => "VarChar",
            DataType::Json => "JSON",
            DataType::FloatVector => "FloatVector",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSchema {
    pub name: String,
    pub data_type: DataType,
    pub is_primary: bool,
    /// Primary key values are allocated by Quiver (int64 keys only).
    pub auto_id: bool,
    /// Vector dimension (FloatVector only).
    pub dim: u32,
    /// Maximum length in bytes (VarChar only; 0 = default 65535).
    pub max_length: u32,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionSchema {
    pub name: String,
    pub description: String,
    pub fields: Vec<FieldSchema>,
    /// Keys not in the schema are kept in a dynamic JSON field.
    pub enable_dynamic_field: bool,
    /// Number of shards (DML channels); 0 means the configured default.
    pub num_shards: u32,
    /// Default read consistency, for Milvus clients that do not name one per request.
    #[serde(default)]
    pub consistency: Consistency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricType {
    L2,
    Ip,
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexType {
    Flat,
    IvfFlat,
    IvfSq8,
    IvfPq,
    Hnsw,
}

/// How the vectors of sealed segments are indexed. Unused parameters are ignored by the type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexParams {
    pub index_type: IndexType,
    pub metric: MetricType,
    /// IVF: number of lists.
    pub nlist: u32,
    /// IVF_PQ: number of sub-quantizers; HNSW: graph degree M.
    pub m: u32,
    /// IVF_PQ: bits per code.
    pub nbits: u32,
    /// HNSW: efConstruction.
    pub ef_construction: u32,
    /// Asked for as AUTOINDEX: reported so to Milvus clients, built as `index_type`.
    #[serde(default)]
    pub auto: bool,
    /// Index name given by a Milvus client (empty = the vector field's name).
    #[serde(default)]
    pub name: String,
}

/// The kinds of scalar-field index Milvus clients can ask for, by their Milvus names. Each is
/// built by the query nodes when a segment loads; `STL_SORT` keeps the rows in value order,
/// the others keep each distinct value's rows (see `actors::filter::index`). Which field types
/// each accepts follows Milvus (`ScalarIndexType::check_field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScalarIndexType {
    StlSort,
    Inverted,
    Bitmap,
    Trie,
    /// AUTOINDEX on a scalar field: reported as asked, built like INVERTED.
    Auto,
}

impl ScalarIndexType {
    /// The `index_type` a Milvus client names it with.
    pub fn milvus_name(self) -> &'static str {
        match self {
            ScalarIndexType::StlSort => "STL_SORT",
            ScalarIndexType::Inverted => "INVERTED",
            ScalarIndexType::Bitmap => "BITMAP",
            ScalarIndexType::Trie => "Trie",
            ScalarIndexType::Auto => "AUTOINDEX",
        }
    }

    /// The kind a Milvus `index_type` names (case-insensitive; `marisa-trie` is Trie's alias).
    pub fn from_milvus(name: &str) -> Option<ScalarIndexType> {
        match name.trim().to_ascii_uppercase().as_str() {
            "STL_SORT" => Some(ScalarIndexType::StlSort),
            "INVERTED" => Some(ScalarIndexType::Inverted),
            "BITMAP" => Some(ScalarIndexType::Bitmap),
            "TRIE" | "MARISA-TRIE" => Some(ScalarIndexType::Trie),
            "AUTOINDEX" => Some(ScalarIndexType::Auto),
            _ => None,
        }
    }

    /// Whether this kind can index `field`; the error is Milvus' own text, so answers match
    /// a Milvus server's. JSON fields need Milvus' `json_cast_type` and `json_path` params.
    pub fn check_field(self, field: &FieldSchema, params: &[(String, String)]) -> Result<(), String> {
        let t = field.data_type;
        let numeric = matches!(t, DataType::Int64 | DataType::Float | DataType::Double);
        let name = DataType::milvus_name;
        let refused = match self {
            ScalarIndexType::StlSort if !(numeric || matches!(t, DataType::VarChar | DataType::Json)) => Some(format!(
                "STL_SORT are only supported on numeric, varchar, timestamptz, date or time field, got {}",
                name(t)
            )),
            ScalarIndexType::Inverted | ScalarIndexType::Auto if t == DataType::FloatVector => {
                Some(format!("INVERTED are not supported on {} field", name(t)))
            }
            ScalarIndexType::Bitmap if field.is_primary => {
                Some("create bitmap index on primary key not supported".into())
            }
            ScalarIndexType::Bitmap
                if !matches!(t, DataType::Bool | DataType::Int64 | DataType::VarChar | DataType::Json) =>
            {
                Some("bitmap index are only supported on bool, int, string and array field".into())
            }
            ScalarIndexType::Trie if t != DataType::VarChar => Some("TRIE are only supported on varchar field".into()),
            _ => None,
        };
        if let Some(e) = refused {
            return Err(e);
        }
        if t == DataType::Json {
            let has = |k: &str| params.iter().any(|(key, _)| key == k);
            if !has("json_cast_type") {
                return Err("param json_cast_type is missing: json index must specify cast type".into());
            }
            if !has("json_path") {
                return Err("param json_path is missing: json index must specify json path".into());
            }
        }
        Ok(())
    }
}

/// An index on one scalar field, as a Milvus client defined it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalarIndex {
    /// The index name (Milvus' default: the field's name).
    pub name: String,
    pub field: String,
    pub index_type: ScalarIndexType,
    /// Other parameters as given (e.g. `json_cast_type`, `json_path`), reported back as given.
    #[serde(default)]
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Consistency {
    /// Sees every write acknowledged before the request.
    Strong,
    /// Sees writes older than the configured staleness bound (the default, as in Milvus).
    #[default]
    Bounded,
    /// Serves whatever the node has.
    Eventually,
}

#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize, Deserialize)]
pub enum ScalarValue {
    Null,
    Bool(bool),
    Int64(i64),
    Float(f32),
    Double(f64),
    VarChar(String),
    /// A JSON document, serialized.
    Json(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PrimaryKey {
    Int64(i64),
    VarChar(String),
}

/// A named column of scalar values, one per row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub values: Vec<ScalarValue>,
}

/// Rows in columnar form. `vectors` is `rows × dim` floats, row-major.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RowBatch {
    /// Empty when the collection allocates ids and the batch comes from a client.
    pub pks: Vec<PrimaryKey>,
    pub dim: u32,
    pub vectors: Vec<f32>,
    pub columns: Vec<Column>,
    /// Dynamic-field JSON object per row (empty when the collection has none).
    pub dynamic: Vec<String>,
}

impl RowBatch {
    /// Number of rows, taken from whichever part is present.
    pub fn num_rows(&self) -> usize {
        if self.dim > 0 && !self.vectors.is_empty() {
            self.vectors.len() / self.dim as usize
        } else {
            self.pks.len()
        }
    }
}

/// The partition every collection has, which rows go to when none is named.
pub const DEFAULT_PARTITION: &str = "_default";
/// Partitions a collection may have at once (Milvus' `rootCoord.maxPartitionNum`), and so the
/// most names one request may carry.
pub const MAX_PARTITIONS: usize = 1024;
/// Longest partition name, in bytes (as for collection names).
pub const MAX_PARTITION_NAME: usize = 255;

/// Refuses a request naming more partitions than a collection can have, or a name longer than
/// any partition's (before it is looked up or echoed in an error).
pub fn check_partition_names<S: AsRef<str>>(names: &[S]) -> Result<(), String> {
    if names.len() > MAX_PARTITIONS {
        return Err(format!("{} partition names; a request names at most {MAX_PARTITIONS}", names.len()));
    }
    match names.iter().map(|n| n.as_ref().len()).max() {
        Some(len) if len > MAX_PARTITION_NAME => {
            Err(format!("a partition name of {len} bytes; partition names have at most {MAX_PARTITION_NAME}"))
        }
        _ => Ok(()),
    }
}

/// Whether a partition's rows are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionState {
    /// Read by searches and queries that name it or no partition.
    #[default]
    Loaded,
    /// Kept and written to, but not read until it is loaded again.
    Released,
    /// Gone: its rows are never read again, and compaction removes them. The entry stays so
    /// its id is never reused.
    Dropped,
}

/// A partition of a collection (Milvus' partitions: a named subset of its rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub id: PartitionId,
    pub name: String,
    pub created_ts: Timestamp,
    pub state: PartitionState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionInfo {
    pub id: CollectionId,
    pub schema: CollectionSchema,
    pub index: Option<IndexParams>,
    pub created_ts: Timestamp,
    /// Indexes on scalar fields (at most one per field), used by the query nodes to answer
    /// filters without a pass over every row.
    #[serde(default)]
    pub scalar_indexes: Vec<ScalarIndex>,
    /// Every partition ever created, dropped ones included, by id; empty until the first one
    /// beside `_default` is created (then `_default` is the first entry).
    #[serde(default)]
    pub partitions: Vec<PartitionInfo>,
}

impl CollectionInfo {
    /// The collection's partitions, dropped ones included: `_default` alone when none was
    /// ever created.
    pub fn partition_list(&self) -> Vec<PartitionInfo> {
        if self.partitions.is_empty() {
            vec![PartitionInfo {
                id: 0,
                name: DEFAULT_PARTITION.into(),
                created_ts: self.created_ts,
                state: PartitionState::Loaded,
            }]
        } else {
            self.partitions.clone()
        }
    }

    /// The partition named `name` (not dropped); an empty name is `_default`.
    pub fn partition(&self, name: &str) -> Option<PartitionInfo> {
        let name = if name.is_empty() { DEFAULT_PARTITION } else { name };
        if self.partitions.is_empty() {
            return self.partition_list().into_iter().find(|p| p.name == name);
        }
        self.partitions.iter().find(|p| p.name == name && p.state != PartitionState::Dropped).cloned()
    }

    /// Why a request naming partition `name`, which the collection lacks, is refused (Milvus'
    /// wording first).
    pub fn missing_partition(&self, name: &str) -> String {
        format!("partition not found[partition={name}]: collection {:?} has no partition {name:?}", self.schema.name)
    }

    /// The collection's index on scalar field `field`, if any.
    pub fn scalar_index_on(&self, field: &str) -> Option<&ScalarIndex> {
        self.scalar_indexes.iter().find(|i| i.field == field)
    }
    pub fn vector_field(&self) -> Option<&FieldSchema> {
        self.schema.fields.iter().find(|f| f.data_type == DataType::FloatVector)
    }
    pub fn primary_field(&self) -> Option<&FieldSchema> {
        self.schema.fields.iter().find(|f| f.is_primary)
    }
    pub fn dim(&self) -> u32 {
        self.vector_field().map(|f| f.dim).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentState {
    /// Flushed to the object store, no index yet (served by brute force).
    Flushed,
    /// Flushed and indexed.
    Indexed,
    /// Replaced or dropped; kept for reference until garbage-collected.
    Dropped,
}

/// A sealed segment: rows of one shard between two log positions, stored in the object store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub id: SegmentId,
    pub collection: CollectionId,
    pub shard: ShardId,
    pub rows: u64,
    /// First and last stream sequence covered (inclusive).
    pub start_seq: Seq,
    pub end_seq: Seq,
    /// Object-store path of the segment data.
    pub data_path: String,
    /// Object-store path of the index, once built.
    pub index_path: Option<String>,
    pub state: SegmentState,
    /// Approximate bytes in memory when loaded.
    pub mem_size: u64,
    /// Deletes at or below this log position are applied: the segment holds no row they hide
    /// (set by compaction; 0 for a segment as flushed).
    #[serde(default)]
    pub delete_seq: Seq,
    /// The segments this one replaces (compaction's inputs; empty for a flushed segment).
    #[serde(default)]
    pub compacted_from: Vec<SegmentId>,
    /// The partitions its rows are in, ascending (empty = `_default` alone): reads of other
    /// partitions skip the segment, and compaction rewrites it once one of them is dropped.
    #[serde(default)]
    pub partitions: Vec<PartitionId>,
}

impl SegmentInfo {
    /// Whether the segment may hold rows of a partition in `ids`.
    pub fn holds_any(&self, ids: &[PartitionId]) -> bool {
        self.partition_ids().iter().any(|p| ids.contains(p))
    }

    /// Whether every row of the segment is in a partition of `ids`.
    pub fn within(&self, ids: &[PartitionId]) -> bool {
        self.partition_ids().iter().all(|p| ids.contains(p))
    }

    /// The partitions its rows are in (`_default`'s id when none is recorded).
    fn partition_ids(&self) -> &[PartitionId] {
        if self.partitions.is_empty() {
            &[0]
        } else {
            &self.partitions
        }
    }
}

impl SegmentInfo {
    /// The log position up to which no delete can hide a row of this segment any more:
    /// [`Self::delete_seq`], and at least the position before its first row (a delete hides
    /// only rows written before it).
    pub fn deletes_applied(&self) -> Seq {
        self.delete_seq.max(self.start_seq.saturating_sub(1))
    }
}

/// Where a sealed segment is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentPlacement {
    pub segment: SegmentInfo,
    pub nodes: Vec<String>,
}

/// Where a shard's growing data is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlacement {
    pub shard: ShardId,
    pub leader: String,
    /// Highest sequence covered by a sealed segment that is being served.
    pub sealed_seq: Seq,
    /// The replica group whose leader this is (0-based).
    #[serde(default)]
    pub replica: u32,
}

/// One in-memory replica of a collection: the query nodes that together hold a full copy
/// (each sealed segment on one of them, each shard led by one of them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaGroup {
    pub id: u32,
    pub nodes: Vec<String>,
}

/// A shard leader's authoritative list of its shard's served sealed segments (MISSION S2.6):
/// sent to the leader with its load, returned with every search it answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardView {
    pub shard: ShardId,
    /// Layout version the list was taken from.
    pub version: u64,
    pub segments: Vec<SegmentId>,
}

/// The serving layout of one collection, as the coordinator knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub collection: CollectionInfo,
    pub shards: Vec<ShardPlacement>,
    pub segments: Vec<SegmentPlacement>,
    /// Bumped on every change, so caches can tell they are stale.
    pub version: u64,
    /// Released: no query node serves it until it is loaded again (reads are refused).
    #[serde(default)]
    pub released: bool,
    /// The in-memory replicas and their query nodes.
    #[serde(default)]
    pub replicas: Vec<ReplicaGroup>,
    /// Flushed segments past their shard's served position: not read yet (their rows are
    /// still served as growing rows), listed for clients that show every flushed segment.
    #[serde(default)]
    pub unserved: Vec<SegmentInfo>,
}

impl Distribution {
    /// The leaders of `shard`, one per replica group that has one.
    pub fn leaders_of(&self, shard: ShardId) -> impl Iterator<Item = &ShardPlacement> {
        self.shards.iter().filter(move |s| s.shard == shard && !s.leader.is_empty())
    }
}

/// Serve a collection from query nodes (again), with `replicas` in-memory replicas (0 = 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadCollection {
    pub name: String,
    pub replicas: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Coordinator,
    Proxy,
    DataNode,
    IndexNode,
    QueryNode,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Coordinator, Role::Proxy, Role::DataNode, Role::IndexNode, Role::QueryNode];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Proxy => "proxy",
            Role::DataNode => "datanode",
            Role::IndexNode => "indexnode",
            Role::QueryNode => "querynode",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Where a role is in its life: `Starting` until it serves, `Serving`, then `Draining` (takes
/// no new work, finishes or hands off what it holds), then `Stopped`. A coordinator that is not
/// the active one is `Standby` until it takes over (then `Starting`, `Serving`).
///
/// ```text
///   Starting ──ready──▶ Serving ──drain (SIGTERM, scale-in, ctl)──▶ Draining ──held work gone──▶ Stopped
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NodeState {
    Starting,
    #[default]
    Serving,
    Draining,
    Stopped,
    Standby,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::Serving => "serving",
            NodeState::Draining => "draining",
            NodeState::Stopped => "stopped",
            NodeState::Standby => "standby",
        }
    }
}

/// Published (JSON, on [`Subjects::memory_events`](crate::Subjects::memory_events)) by a
/// query node the moment its resident memory crosses its high-water mark, either way: proxies
/// refuse inserts into its collections meanwhile without waiting for its next heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryMarkEvent {
    pub node_id: String,
    /// Above the mark (else back under it).
    pub over: bool,
    /// Resident memory, bytes.
    pub used: u64,
    /// Memory budget, bytes.
    pub budget: u64,
    /// When it was measured, on the node's clock (as `NodeStatus::heartbeat_ms`).
    pub at_ms: u64,
}

/// What a node publishes in the registry with every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub role: Role,
    pub host: String,
    pub pid: u32,
    pub healthy: bool,
    /// Resident memory of the process, bytes.
    pub mem_used: u64,
    /// Memory budget for this node, bytes.
    pub mem_capacity: u64,
    pub segments: u32,
    pub restarts: u32,
    pub started_ms: u64,
    pub heartbeat_ms: u64,
    pub detail: String,
    /// Lifecycle state (nodes from before it was reported count as serving).
    #[serde(default)]
    pub state: NodeState,
    /// CPU cores the process may use (its affinity mask, or its cgroup's quota if smaller).
    #[serde(default)]
    pub cpu_cores: f32,
    /// Cores' worth of CPU the process used over the last heartbeat interval.
    #[serde(default)]
    pub cpu_busy: f32,
    /// The host agent that started the process; empty when none did.
    #[serde(default)]
    pub host_agent: String,
    /// The faiss SIMD build the process runs (`generic`, `avx2`, `avx512`); empty from nodes
    /// that predate it.
    #[serde(default)]
    pub faiss_simd: String,
    /// Loads this node refused since it started because they would have taken it past its
    /// memory budget: out-of-memory events for the autoscaler (MISSION S3.3).
    #[serde(default)]
    pub memory_refusals: u32,
    /// Proxies: when the last data request arrived (0: none since the process started); the
    /// coordinator idles the cluster after `idling.after` without one (MISSION S3.6).
    #[serde(default)]
    pub last_request_ms: u64,
}

/// Search-time knobs. Zero means the index's default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SearchParams {
    pub nprobe: u32,
    pub ef: u32,
}

/// One query's hits, best first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Hits {
    pub pks: Vec<PrimaryKey>,
    pub scores: Vec<f32>,
    /// Requested output fields, one value per hit.
    pub columns: Vec<Column>,
}

// ---- API (client → proxy) ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateCollection {
    pub schema: CollectionSchema,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionName {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionList {
    pub names: Vec<String>,
}

/// Partitions of a collection to create, drop, load or release (Milvus' partition calls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionRequest {
    pub collection: String,
    pub names: Vec<String>,
    /// Loading: replica groups, as for the collection (0 = as loaded, else 1).
    #[serde(default)]
    pub replicas: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionDescription {
    pub info: CollectionInfo,
    pub num_rows: u64,
    pub sealed_segments: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateIndex {
    pub collection: String,
    pub params: IndexParams,
}

/// Defines an index on a scalar field of `collection`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateScalarIndex {
    pub collection: String,
    pub index: ScalarIndex,
}

/// Drops scalar index `name` of `collection`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropScalarIndex {
    pub collection: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insert {
    pub collection: String,
    pub rows: RowBatch,
    /// The partition the rows go to (empty = `_default`).
    #[serde(default)]
    pub partition: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delete {
    pub collection: String,
    pub pks: Vec<PrimaryKey>,
    /// Milvus boolean expression: delete every row it matches (with `pks` empty).
    #[serde(default)]
    pub filter: String,
    /// Delete only rows of this partition (empty = every partition).
    #[serde(default)]
    pub partition: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MutationResult {
    /// Primary keys written (inserts) or targeted (deletes by key); empty for a delete by
    /// filter, which can match any number of rows (as in Milvus).
    pub pks: Vec<PrimaryKey>,
    pub timestamp: Timestamp,
    /// Rows written or deleted.
    #[serde(default)]
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Get {
    pub collection: String,
    pub pks: Vec<PrimaryKey>,
    pub output_fields: Vec<String>,
    pub consistency: Consistency,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    pub collection: String,
    pub dim: u32,
    /// `nq × dim` floats.
    pub vectors: Vec<f32>,
    pub top_k: u32,
    pub params: SearchParams,
    pub output_fields: Vec<String>,
    pub consistency: Consistency,
    /// Milvus boolean expression; only matching rows are searched (empty = all).
    #[serde(default)]
    pub filter: String,
    /// Search only these partitions (empty = every loaded one).
    #[serde(default)]
    pub partitions: Vec<String>,
}

/// The output field that turns a query into a count.
pub const COUNT_STAR: &str = "count(*)";

/// Rows matching a filter (or their count, with the output field [`COUNT_STAR`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub collection: String,
    /// Milvus boolean expression; empty = every row (then `limit` is required).
    pub filter: String,
    /// Field names, `*` for every scalar field, or exactly `count(*)`.
    pub output_fields: Vec<String>,
    /// At most this many rows (0 = no limit).
    pub limit: u64,
    /// Rows to skip, in primary-key order.
    pub offset: u64,
    pub consistency: Consistency,
    /// Read only these partitions (empty = every loaded one).
    #[serde(default)]
    pub partitions: Vec<String>,
}

/// Matching rows in primary-key order, or one `count(*)` column with a single value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueryResults {
    pub rows: RowBatch,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SearchResults {
    pub results: Vec<Hits>,
}

/// Query node → proxy: one node's share of a search, plus what keeps the proxy's cache and
/// routing current.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeSearchResults {
    pub results: Vec<Hits>,
    /// For each shard of the request this node leads: its authoritative segment list (S2.6).
    pub shards: Vec<ShardView>,
    /// Requests the node was serving when it answered, from all proxies (S2.7).
    pub in_flight: u32,
    /// Rows of the segments and growing parts searched (deleted ones included).
    #[serde(default)]
    pub rows_searched: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlushResult {
    pub segments: Vec<SegmentId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub nodes: Vec<NodeStatus>,
    /// Wanted vs actual node count per role.
    #[serde(default)]
    pub roles: Vec<RoleScaling>,
    #[serde(default)]
    pub hosts: Vec<HostStatus>,
    /// Parts of the status that could not be read, and why.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `api.scale`: run `replicas` nodes of `role` (MISSION S0.3, S3.1). The role is a name, so
/// that an unknown one is refused with a message naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub role: String,
    /// 0 with a size: keep the count.
    pub replicas: u32,
    /// A new size for every node of the role (unsized: keep the size).
    #[serde(default)]
    pub size: NodeSize,
}

/// The size of a node (MISSION S3.3): CPU and memory, which the autoscaler moves together (1 CPU
/// : 4 GiB by default). Zero CPU and zero memory is "unsized": the node may use its whole host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeSize {
    /// Thousandths of a core.
    pub cpu_millis: u32,
    pub memory_bytes: u64,
}

impl NodeSize {
    /// No size: the node may use its whole host.
    pub const UNSIZED: NodeSize = NodeSize { cpu_millis: 0, memory_bytes: 0 };

    pub fn is_unsized(&self) -> bool {
        *self == NodeSize::UNSIZED
    }
}

impl std::fmt::Display for NodeSize {
    /// `2 CPU / 8 GiB`, `0.5 CPU / 512 MiB`, or `unsized`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_unsized() {
            return f.write_str("unsized");
        }
        const GIB: u64 = 1 << 30;
        const MIB: u64 = 1 << 20;
        let cpus = f64::from(self.cpu_millis) / 1000.0;
        let m = self.memory_bytes;
        if m >= GIB && (u128::from(m) * 10) % u128::from(GIB) == 0 || m >= 10 * GIB {
            write!(f, "{cpus} CPU / {} GiB", (m as f64 / GIB as f64 * 10.0).round() / 10.0)
        } else {
            write!(f, "{cpus} CPU / {} MiB", (m as f64 / MIB as f64).round())
        }
    }
}

/// What a scale request changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleReply {
    pub role: Role,
    pub replicas: u32,
    /// The count wanted before (0: none was set).
    pub previous: u32,
    /// Set when the request is accepted with a caveat (one node: no availability on failure).
    pub warning: String,
    /// The size wanted now, and before.
    #[serde(default)]
    pub size: NodeSize,
    #[serde(default)]
    pub previous_size: NodeSize,
}

/// One role's wanted and actual node count, as the scaler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleScaling {
    pub role: Role,
    /// 0: no count was ever set; the role is not scaled.
    pub desired: u32,
    /// Nodes that serve (registered, alive, not draining).
    pub serving: u32,
    /// Nodes started for the role that do not serve yet.
    pub starting: u32,
    pub draining: u32,
    /// Serving equals desired and nothing is starting or draining.
    pub converged: bool,
    /// What the scaler is doing for the role, for people.
    pub activity: String,
    /// The size every node of the role should have.
    #[serde(default)]
    pub size: NodeSize,
    /// Serving nodes of another size, still to be replaced (make-before-break).
    #[serde(default)]
    pub resizing: u32,
}

/// A host agent: a machine's (or pod's) capacity and the node processes it runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HostStatus {
    pub host_id: String,
    pub hostname: String,
    pub pid: u32,
    pub cpus: u32,
    pub mem_total: u64,
    pub mem_available: u64,
    /// Most node processes the agent runs.
    pub max_nodes: u32,
    pub nodes: Vec<HostedNode>,
    pub started_ms: u64,
    pub heartbeat_ms: u64,
    /// How node sizes are enforced on this host: `cgroup-v2`, `cgroup-v1`, `affinity` (CPU
    /// affinity and thread counts, memory by the node's own budget) or `none`.
    #[serde(default)]
    pub enforcement: String,
}

/// One node process of a host agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HostedNode {
    /// The process's node id (its roles register as `<node_id>-<role>`).
    pub node_id: String,
    pub roles: Vec<Role>,
    /// 0 while it is not running (waiting to be restarted).
    pub pid: u32,
    pub restarts: u32,
    /// Started by the scaler (rather than listed in a cluster file).
    pub managed: bool,
    /// Told to stop: it drains, exits and is not restarted.
    pub stopping: bool,
    pub last_exit: String,
    /// The size it was started with.
    #[serde(default)]
    pub size: NodeSize,
    /// Times the kernel killed it for exceeding its memory limit (cgroup enforcement).
    #[serde(default)]
    pub oom_kills: u32,
}

/// `api.scaling`: every role's count and every host agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ScalingStatus {
    pub roles: Vec<RoleScaling>,
    pub hosts: Vec<HostStatus>,
}

/// One step the scaler took (start, drain, stop, ...), for `quiver ctl events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingEvent {
    pub at_ms: u64,
    pub role: Role,
    pub node_id: String,
    pub action: String,
    pub detail: String,
}

/// Automatic idling (MISSION S3.6, S3.7): whether the compute nodes are stopped for want of
/// requests, and what decides when they will be.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IdlingStatus {
    pub enabled: bool,
    /// `awake`, `idle` (compute nodes stopped) or `waking` (starting them again).
    pub state: String,
    /// When the cluster entered that state.
    pub since_ms: u64,
    /// The last data request any proxy saw.
    pub last_request_ms: u64,
    /// `idling.after`, as configured.
    pub after_ms: u64,
    /// The timeout in force: `after`, grown with the measured start-up time (S3.7).
    pub timeout_ms: u64,
    /// How long the last wake took until the cluster served (0: none yet).
    pub last_startup_ms: u64,
    /// Why the cluster may not idle now (too many segments, a compaction running), or empty.
    pub blocked: String,
    /// Node processes stopped when the cluster last went idle.
    pub stopped: u32,
}

/// `api.autoscale`: the operator's bounds on a role's size (`quiver ctl autoscale`); min = max
/// pins the size and turns autoscaling off for the role (MISSION S3.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleRequest {
    pub role: String,
    /// 0: keep.
    pub min_memory_bytes: u64,
    /// 0: keep.
    pub max_memory_bytes: u64,
    /// Back to the configured bounds.
    pub reset: bool,
}

/// One decision of the autoscaler, for `quiver ctl autoscale history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleDecision {
    pub at_ms: u64,
    pub role: Role,
    pub from: NodeSize,
    pub to: NodeSize,
    /// The plugin's reason, then the coordinator's note.
    pub reason: String,
    /// The autoscaler that answered (`name@version`, or the native fallback).
    pub plugin: String,
    /// `resize`, `keep`, `held` (an operator's size kept), `refused` (an answer out of bounds or
    /// nonsense), `failed` (the plugin failed).
    pub action: String,
}

/// One role's autoscaling: its bounds, size and what the metrics window holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleAutoscale {
    pub role: Role,
    /// Sized by the autoscaler: `autoscaling.enabled`, the role in `autoscaling.roles`, min < max.
    pub enabled: bool,
    pub min_memory_bytes: u64,
    pub max_memory_bytes: u64,
    pub size: NodeSize,
    pub samples: u32,
    /// Highest CPU use in the window, in percent of the current size.
    pub peak_cpu_percent: f64,
    pub peak_memory_bytes: u64,
    /// Samples with an out-of-memory event.
    pub ooms: u32,
    /// An operator's size is not shrunk before then (0: not held).
    pub held_until_ms: u64,
}

/// `api.autoscaling`: the autoscaler's settings, every role's window and the last decisions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AutoscaleStatus {
    pub enabled: bool,
    pub interval_ms: u64,
    pub window_ms: u64,
    pub roles: Vec<RoleAutoscale>,
    /// Oldest first.
    pub decisions: Vec<AutoscaleDecision>,
}

/// MISSION S1.4's `sealedSegmentChangeInfo`: segments moved from `offline_node_id` to
/// `online_node_id`, published on `quiver.<c>.querychannel.<collection>` once the online node
/// serves them; the offline node releases them when it receives it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SegmentChangeInfo {
    pub collection: CollectionId,
    pub online_node_id: String,
    pub online_segment_ids: Vec<SegmentId>,
    pub offline_node_id: String,
    pub offline_segment_ids: Vec<SegmentId>,
    /// Why: `balance`, `drain`, `failover`, `replicas`.
    pub reason: String,
    pub at_ms: u64,
    /// When the offline node had released them (0: not yet, or it is gone).
    pub released_ms: u64,
}

/// `api.events`: recent hand-offs and scaling steps, oldest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterEvents {
    pub handoffs: Vec<SegmentChangeInfo>,
    pub scaling: Vec<ScalingEvent>,
}

/// Coordinator → host agent: start a node process with one role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartNode {
    pub node_id: String,
    pub role: Role,
    /// Its size; unsized: it may use the whole host.
    #[serde(default)]
    pub size: NodeSize,
}

/// Coordinator → host agent: drain and stop a node process for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopNode {
    pub node_id: String,
}

/// A plugin binary to validate and add to the cluster's catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginUpload {
    pub kind: String,
    pub name: String,
    pub wasm: Vec<u8>,
}

/// Make `name@version` the active plugin of its kind (`version` "builtin" for bundled ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginActivate {
    pub name: String,
    pub version: String,
}

/// Go back to the previously active plugin of `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRollback {
    pub kind: String,
}

/// A JSON document of the runtime's plugin catalog types (as stored in NATS KV).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginReport {
    pub json: String,
}

// ---- internal ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alloc {
    pub count: u64,
}

/// `count` consecutive values starting at `start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocRange {
    pub start: u64,
    pub count: u64,
}

/// A DML log entry (one JetStream message on a shard subject).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DmlEntry {
    Insert {
        timestamp: Timestamp,
        rows: RowBatch,
        /// The partition the rows belong to.
        #[serde(default)]
        partition: PartitionId,
    },
    Delete {
        timestamp: Timestamp,
        pks: Vec<PrimaryKey>,
    },
}

/// Data node → coordinator: a segment was sealed and written to the object store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentFlushed {
    pub segment: SegmentInfo,
}

/// Coordinator → index node: build the index of one segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildIndex {
    pub segment: SegmentInfo,
    pub params: IndexParams,
    pub dim: u32,
}

/// Index node → coordinator: an index is built and stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexBuilt {
    pub segment: SegmentId,
    pub collection: CollectionId,
    pub index_path: String,
    pub build_ms: u64,
}

/// Coordinator → data node: merge `inputs` (consecutive segments of one shard, in log order)
/// into segment `output`, dropping the rows that deletes in `(delete_from, delete_to]` hide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactTask {
    pub collection: CollectionInfo,
    pub shard: ShardId,
    pub plan: u64,
    pub inputs: Vec<SegmentInfo>,
    /// Id of the merged segment.
    pub output: SegmentId,
    pub delete_from: Seq,
    pub delete_to: Seq,
    /// A task with one input that would lose fewer rows keeps it as it is (`unchanged`):
    /// rewriting a large segment (and its index) for a few deleted rows is not worth it.
    pub min_dropped: u64,
}

/// Data node → coordinator: what a compaction task wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactOutcome {
    pub plan: u64,
    /// The merged segment, stored; `None` when no row is left or when `unchanged`.
    pub output: Option<SegmentInfo>,
    /// Input rows left out because a delete hides them.
    pub dropped_rows: u64,
    /// One input that lost no row: it is kept, only its `delete_seq` moves.
    pub unchanged: bool,
}

/// One plan of a compaction job (Milvus' `CompactionMergeInfo`, with its state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompactionPlan {
    pub id: u64,
    pub shard: ShardId,
    pub sources: Vec<SegmentId>,
    /// The merged segment; 0 when the source was rewritten in place or nothing was left.
    pub target: SegmentId,
    /// `merge` (small segments) or `delete` (deleted rows dropped).
    pub kind: String,
    /// `executing`, `completed` or `failed`.
    pub state: String,
    pub error: String,
}

/// A compaction job: the plans one `compact` request (or one background round) made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompactionState {
    pub id: u64,
    pub collection: String,
    /// `executing` while a plan runs, then `completed`.
    pub state: String,
    pub plans: Vec<CompactionPlan>,
}

impl CompactionState {
    /// A plan or job still running.
    pub const EXECUTING: &'static str = "executing";
    /// A plan that finished (its result committed), or a job whose plans all ended.
    pub const COMPLETED: &'static str = "completed";
    /// A plan that failed (its error says why); its inputs stay as they were.
    pub const FAILED: &'static str = "failed";

    /// Whether every plan of the job has ended.
    pub fn is_done(&self) -> bool {
        self.state != Self::EXECUTING
    }
}

/// A `compact` request: merge small segments and drop deleted rows, or with `force` merge
/// every segment of each shard into as few as `target_rows` allows (Milvus 2.6's force merge,
/// `compact(target_size=...)`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactRequest {
    pub name: String,
    pub force: bool,
    /// With `force`: rows per merged segment at most (0 = no limit: one segment per shard).
    pub target_rows: u64,
}

/// Names a compaction job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionJobId {
    pub id: u64,
}

/// Coordinator → query node: serve these sealed segments and lead these shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSegments {
    pub collection: CollectionInfo,
    pub segments: Vec<SegmentInfo>,
    /// Shards whose growing data this node serves, with the sealed position to stream after.
    pub lead_shards: Vec<ShardPlacement>,
    /// For each lead shard: its served sealed segments, which the leader returns with every
    /// search so proxies can check their cached layout (MISSION S2.6).
    #[serde(default)]
    pub shard_views: Vec<ShardView>,
    /// Per shard of the load: the log position its deletes are read after (every delete at or
    /// below it is applied in the shard's segments, compaction's doing).
    #[serde(default)]
    pub delete_floors: Vec<ShardSeq>,
}

/// A log position of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSeq {
    pub shard: ShardId,
    pub seq: Seq,
}

/// Coordinator → query node: stop serving these segments (and shards).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseSegments {
    pub collection: CollectionId,
    pub segments: Vec<SegmentId>,
    /// Release the whole collection, growing data included.
    pub all: bool,
}

/// Proxy → query node: one node's share of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSearch {
    pub collection: CollectionId,
    pub search: Search,
    pub segments: Vec<SegmentId>,
    /// Shards whose growing rows (after the given sealed sequence) this node must search.
    pub growing: Vec<ShardPlacement>,
    /// The node must have applied every log entry with a timestamp ≤ this before searching (0 = no wait).
    pub guarantee_ts: Timestamp,
    /// The search's filter as parsed by the proxy (`expr::Expr` as JSON); empty = none.
    pub filter: String,
}

/// Proxy → query node: one node's share of a query (answered with [`GetResults`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeQuery {
    pub collection: CollectionId,
    pub query: Query,
    pub segments: Vec<SegmentId>,
    pub growing: Vec<ShardPlacement>,
    pub guarantee_ts: Timestamp,
    /// The query's filter as parsed by the proxy (`expr::Expr` as JSON); empty = every row.
    pub filter: String,
}

/// Proxy → query node: one node's share of a get-by-key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeGet {
    pub collection: CollectionId,
    pub get: Get,
    pub segments: Vec<SegmentId>,
    pub growing: Vec<ShardPlacement>,
    pub guarantee_ts: Timestamp,
    /// Only rows of these partitions (empty = all).
    #[serde(default)]
    pub partitions: Vec<PartitionId>,
}

/// A get-by-key answer: rows found, in columnar form, primary keys in `rows.pks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetResults {
    pub rows: RowBatch,
    /// Log position that wrote each row (so the latest version of a key wins).
    pub seqs: Vec<Seq>,
}

/// One shard a data node consumes, and where to resume when it starts consuming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelAssignment {
    pub collection: CollectionInfo,
    pub shard: ShardId,
    /// Log position up to which the shard's rows are in flushed segments (resume after it).
    pub checkpoint: Seq,
}

/// Coordinator → data node: the full set of shards the node consumes (applied idempotently;
/// shards left out are flushed and released before the node answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchChannels {
    pub channels: Vec<ChannelAssignment>,
}

/// Tests only (fault injection): a node's reads wait `millis` before starting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    pub millis: u64,
}

/// Parameters by name, for the CLI and error messages.
pub type Params = BTreeMap<String, String>;
