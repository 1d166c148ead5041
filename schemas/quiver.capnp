# Quiver bus schema.
#
# Every message that travels between Quiver nodes over NATS (request/reply subjects, the
# JetStream DML log, registry heartbeats) is one of the root structs below, serialized as an
# unpacked Cap'n Proto message (`capnp::serialize` flat format: segment table + segments).
#
# The structs mirror the plain Rust types in `schemas/src/types.rs` one to one; the
# conversion lives in `schemas/src/codec.rs` (trait `Wire`). Conventions:
#
#  * Rust enums without data become Cap'n Proto enums.
#  * Rust enums with data (ScalarValue, PrimaryKey, DmlEntry) become structs holding an
#    unnamed union.
#  * `Option<T>` becomes a named union `{ none :Void; some :T }` (`none` is the default).
#  * `Vec<f32>` becomes `List(Float32)`, copied in bulk on little-endian targets.
#  * Ids and timestamps keep their Rust widths: CollectionId, SegmentId, Timestamp and Seq
#    are UInt64, ShardId is UInt32. Timestamps are hybrid (physical ms << 18 | logical).
#
# Evolution rules: only append fields (next ordinal), never renumber or change a type.

@0xc1052de8e46fcde5;

# ---------------------------------------------------------------------------------------
# Enums
# ---------------------------------------------------------------------------------------

# Type of a collection field.
enum DataType {
  bool @0;
  int64 @1;
  float @2;
  double @3;
  varChar @4;
  json @5;
  floatVector @6;
}

# Vector distance metric.
enum MetricType {
  l2 @0;
  ip @1;
  cosine @2;
}

# Vector index kind for sealed segments.
enum IndexType {
  flat @0;
  ivfFlat @1;
  ivfSq8 @2;
  ivfPq @3;
  hnsw @4;
}

# Read consistency level of a search or get.
enum Consistency {
  strong @0;
  bounded @1;
  eventually @2;
}

# Lifecycle state of a sealed segment.
enum SegmentState {
  flushed @0;
  indexed @1;
  dropped @2;
}

# Whether a partition's rows are read.
enum PartitionState {
  loaded @0;
  released @1;
  dropped @2;                   # Never read again; the entry stays so its id is never reused.
}

# Role a node process plays in the cluster.
enum Role {
  coordinator @0;
  proxy @1;
  dataNode @2;
  indexNode @3;
  queryNode @4;
}

# ---------------------------------------------------------------------------------------
# Values and keys
# ---------------------------------------------------------------------------------------

# One scalar cell (Rust `ScalarValue`).
struct ScalarValue {
  union {
    null @0 :Void;
    bool @1 :Bool;
    int64 @2 :Int64;
    float @3 :Float32;
    double @4 :Float64;
    varChar @5 :Text;
    json @6 :Text;      # A serialized JSON document.
  }
}

# A primary key (Rust `PrimaryKey`).
struct PrimaryKey {
  union {
    int64 @0 :Int64;
    varChar @1 :Text;
  }
}

# A named column of scalar values, one per row.
struct Column {
  name @0 :Text;
  values @1 :List(ScalarValue);
}

# Rows in columnar form.
struct RowBatch {
  pks @0 :List(PrimaryKey);     # Empty when Quiver allocates ids and the batch comes from a client.
  dim @1 :UInt32;
  vectors @2 :List(Float32);    # rows x dim floats, row-major.
  columns @3 :List(Column);
  dynamic @4 :List(Text);       # Dynamic-field JSON object per row (empty when unused).
}

# ---------------------------------------------------------------------------------------
# Schemas, collections, segments
# ---------------------------------------------------------------------------------------

struct FieldSchema {
  name @0 :Text;
  dataType @1 :DataType;
  isPrimary @2 :Bool;
  autoId @3 :Bool;              # Primary key values allocated by Quiver (int64 keys only).
  dim @4 :UInt32;               # Vector dimension (floatVector only).
  maxLength @5 :UInt32;         # Max bytes (varChar only; 0 = default 65535).
  description @6 :Text;
}

struct CollectionSchema {
  name @0 :Text;
  description @1 :Text;
  fields @2 :List(FieldSchema);
  enableDynamicField @3 :Bool;
  numShards @4 :UInt32;         # 0 = configured default.
  consistency @5 :Consistency = bounded;  # Default read consistency (Milvus clients that name none get this).
}

# How the vectors of sealed segments are indexed.
struct IndexParams {
  indexType @0 :IndexType;
  metric @1 :MetricType;
  nlist @2 :UInt32;             # IVF: number of lists.
  m @3 :UInt32;                 # IVF_PQ: sub-quantizers; HNSW: graph degree M.
  nbits @4 :UInt32;             # IVF_PQ: bits per code.
  efConstruction @5 :UInt32;    # HNSW: efConstruction.
  auto @6 :Bool;                # Asked for as AUTOINDEX (reported so; built as the type above).
  name @7 :Text;                # Index name given by a Milvus client (empty = the field's name).
}

# Kind of index on a scalar field (Milvus' index_type names).
enum ScalarIndexType {
  stlSort @0;
  inverted @1;
  bitmap @2;
  trie @3;
  auto @4;                      # AUTOINDEX on a scalar field.
}

# An index on one scalar field; the query nodes use it to answer filters.
struct ScalarIndex {
  name @0 :Text;
  field @1 :Text;
  indexType @2 :ScalarIndexType;
  paramKeys @3 :List(Text);     # Other parameters as given (e.g. json_cast_type), keys ...
  paramValues @4 :List(Text);   # ... and their values, in the same order.
}

struct CollectionInfo {
  id @0 :UInt64;
  schema @1 :CollectionSchema;
  index :union {                # Rust `Option<IndexParams>`.
    none @2 :Void;
    some @3 :IndexParams;
  }
  createdTs @4 :UInt64;
  scalarIndexes @5 :List(ScalarIndex);  # At most one per scalar field.
  partitions @6 :List(PartitionInfo);   # Every partition ever created; empty = `_default` alone.
}

struct PartitionInfo {
  id @0 :UInt32;                # Unique in the collection, never reused; `_default` is 0.
  name @1 :Text;
  createdTs @2 :UInt64;
  state @3 :PartitionState;
}

# A sealed segment: rows of one shard between two log positions, in the object store.
struct SegmentInfo {
  id @0 :UInt64;
  collection @1 :UInt64;
  shard @2 :UInt32;
  rows @3 :UInt64;
  startSeq @4 :UInt64;          # First stream sequence covered (inclusive).
  endSeq @5 :UInt64;            # Last stream sequence covered (inclusive).
  dataPath @6 :Text;
  indexPath :union {            # Rust `Option<String>`: object-store path of the index.
    none @7 :Void;
    some @8 :Text;
  }
  state @9 :SegmentState;
  memSize @10 :UInt64;          # Approximate bytes in memory when loaded.
  deleteSeq @11 :UInt64;        # Deletes at or below this log position are applied (compaction).
  compactedFrom @12 :List(UInt64);  # The segments this one replaces (empty unless compacted).
  partitions @13 :List(UInt32);     # The partitions its rows are in, ascending (empty = `_default` alone).
}

# Where a sealed segment is served.
struct SegmentPlacement {
  segment @0 :SegmentInfo;
  nodes @1 :List(Text);
}

# Where a shard's growing data is served.
struct ShardPlacement {
  shard @0 :UInt32;
  leader @1 :Text;
  sealedSeq @2 :UInt64;         # Highest sequence covered by a served sealed segment.
  replica @3 :UInt32;           # Replica group whose leader this is (0-based).
}

# One in-memory replica of a collection: the query nodes that together hold a full copy.
struct ReplicaGroup {
  id @0 :UInt32;
  nodes @1 :List(Text);
}

# A shard leader's authoritative list of its shard's served sealed segments (MISSION S2.6).
struct ShardView {
  shard @0 :UInt32;
  version @1 :UInt64;           # Layout version the list was taken from.
  segments @2 :List(UInt64);
}

# The serving layout of one collection (coordinator's view).
struct Distribution {
  collection @0 :CollectionInfo;
  shards @1 :List(ShardPlacement);
  segments @2 :List(SegmentPlacement);
  version @3 :UInt64;           # Bumped on every change.
  released @4 :Bool;            # Released (not served) until loaded again.
  replicas @5 :List(ReplicaGroup);  # The in-memory replicas (replica_number of them when enough nodes).
  unserved @6 :List(SegmentInfo);   # Flushed segments past their shard's served position (not read yet).
}

# Serve a collection from query nodes (again), with this many in-memory replicas.
struct LoadCollection {
  name @0 :Text;
  replicas @1 :UInt32;          # 0 = 1.
}

# What a node publishes in the registry with every heartbeat.
struct NodeStatus {
  nodeId @0 :Text;
  role @1 :Role;
  host @2 :Text;
  pid @3 :UInt32;
  healthy @4 :Bool;
  memUsed @5 :UInt64;           # Resident memory, bytes.
  memCapacity @6 :UInt64;       # Memory budget, bytes.
  segments @7 :UInt32;
  restarts @8 :UInt32;
  startedMs @9 :UInt64;
  heartbeatMs @10 :UInt64;
  detail @11 :Text;
  state @12 :NodeState;         # Lifecycle: starting (0 would be an old node: see NodeState).
  cpuCores @13 :Float32;        # CPU cores the process may use (affinity, cgroup quota).
  cpuBusy @14 :Float32;         # Cores' worth of CPU the process used over the last heartbeat.
  hostAgent @15 :Text;          # The host agent that started the process ("" if none).
  faissSimd @16 :Text;          # faiss build searches and builds run on: generic, avx2, avx512 ("" if older).
  memoryRefusals @17 :UInt32;   # Loads refused since start because they would exceed the memory budget (OOM events).
  lastRequestMs @18 :UInt64;    # Proxies: when the last data request arrived (0: none since start).
}

# Where a role is in its life. `serving` is 0 so nodes that predate the field read as serving.
enum NodeState {
  serving @0;
  starting @1;
  draining @2;
  stopped @3;
  standby @4;                   # A coordinator waiting for the active one's lease to lapse.
}

# Search-time knobs; 0 = the index's default.
struct SearchParams {
  nprobe @0 :UInt32;
  ef @1 :UInt32;
}

# One query's hits, best first.
struct Hits {
  pks @0 :List(PrimaryKey);
  scores @1 :List(Float32);
  columns @2 :List(Column);     # Requested output fields, one value per hit.
}

# ---------------------------------------------------------------------------------------
# API messages (client <-> proxy)
# ---------------------------------------------------------------------------------------

struct CreateCollection {
  schema @0 :CollectionSchema;
}

struct CollectionName {
  name @0 :Text;
}

struct Empty {}

struct CollectionList {
  names @0 :List(Text);
}

struct CollectionDescription {
  info @0 :CollectionInfo;
  numRows @1 :UInt64;
  sealedSegments @2 :UInt32;
}

struct CreateIndex {
  collection @0 :Text;
  params @1 :IndexParams;
}

struct CreateScalarIndex {
  collection @0 :Text;
  index @1 :ScalarIndex;
}

struct DropScalarIndex {
  collection @0 :Text;
  name @1 :Text;
}

struct Insert {
  collection @0 :Text;
  rows @1 :RowBatch;
  partition @2 :Text;           # Empty = `_default`.
}

struct Delete {
  collection @0 :Text;
  pks @1 :List(PrimaryKey);
  filter @2 :Text;              # Milvus boolean expression: delete every matching row (with `pks` empty).
  partition @3 :Text;           # Delete only rows of this partition (empty = every partition).
}

struct MutationResult {
  pks @0 :List(PrimaryKey);     # Keys written (inserts) or targeted (deletes); empty for a delete by filter.
  timestamp @1 :UInt64;
  count @2 :UInt64;             # Rows written or deleted (a delete by filter lists no keys); 0 from older proxies: count the keys.
}

struct Get {
  collection @0 :Text;
  pks @1 :List(PrimaryKey);
  outputFields @2 :List(Text);
  consistency @3 :Consistency = bounded;
}

struct Search {
  collection @0 :Text;
  dim @1 :UInt32;
  vectors @2 :List(Float32);    # nq x dim floats, row-major.
  topK @3 :UInt32;
  params @4 :SearchParams;
  outputFields @5 :List(Text);
  consistency @6 :Consistency = bounded;
  filter @7 :Text;              # Milvus boolean expression; only matching rows are searched (pre-filter).
  partitions @8 :List(Text);    # Search only these partitions (empty = every loaded one).
}

# Rows matching a filter, or the count of them (output field `count(*)`).
struct Query {
  collection @0 :Text;
  filter @1 :Text;              # Milvus boolean expression; empty = every row (then `limit` is required).
  outputFields @2 :List(Text);  # Field names, `*` for all scalar fields, or exactly `count(*)`.
  limit @3 :UInt64;             # 0 = no limit.
  offset @4 :UInt64;            # Rows to skip, in primary-key order.
  consistency @5 :Consistency = bounded;
  partitions @6 :List(Text);    # Read only these partitions (empty = every loaded one).
}

# Partitions of a collection to create, drop, load or release.
struct PartitionRequest {
  collection @0 :Text;
  names @1 :List(Text);
  replicas @2 :UInt32;          # Loading: replica groups (0 = as loaded, else 1).
}

# Query answer: matching rows in primary-key order (`rows.pks`), or one `count(*)` column.
struct QueryResults {
  rows @0 :RowBatch;
}

struct SearchResults {
  results @0 :List(Hits);
}

# Query node -> proxy: one node's share of a search, plus what keeps the proxy's cache and
# routing current.
struct NodeSearchResults {
  results @0 :List(Hits);
  shards @1 :List(ShardView);   # For each shard of the request this node leads (S2.6).
  inFlight @2 :UInt32;          # Requests the node was serving when it answered, from all proxies (S2.7).
  rowsSearched @3 :UInt64;      # Rows of the segments and growing parts searched (for traces).
}

struct FlushResult {
  segments @0 :List(UInt64);
}

struct ClusterStatus {
  cluster @0 :Text;
  nodes @1 :List(NodeStatus);
  roles @2 :List(RoleScaling);  # Wanted vs actual node count per role (the scaler's view).
  hosts @3 :List(HostStatus);
  notes @4 :List(Text);         # Parts that could not be read, and why.
}

# Scaling (MISSION S0, S3.1): `quiver ctl scale`, answered by the coordinator's scaler.
# `role` is text so that an unknown name gets an error naming it, not a decoding failure.
struct ScaleRequest {
  role @0 :Text;
  replicas @1 :UInt32;          # 0 with a size: keep the count.
  cpuMillis @2 :UInt32;         # A new size for every node of the role (0 and 0: keep the size).
  memoryBytes @3 :UInt64;
}

struct ScaleReply {
  role @0 :Role;
  replicas @1 :UInt32;
  previous @2 :UInt32;          # The count wanted before (0: none was set).
  warning @3 :Text;
  cpuMillis @4 :UInt32;         # The size wanted now (0 and 0: unsized, the nodes use their host).
  memoryBytes @5 :UInt64;
  previousCpuMillis @6 :UInt32;
  previousMemoryBytes @7 :UInt64;
}

# One role's wanted and actual node count.
struct RoleScaling {
  role @0 :Role;
  desired @1 :UInt32;           # 0: no count set, the role is not scaled.
  serving @2 :UInt32;
  starting @3 :UInt32;
  draining @4 :UInt32;
  converged @5 :Bool;
  activity @6 :Text;            # What the scaler is doing for the role, for people.
  cpuMillis @7 :UInt32;         # The size every node of the role should have (0 and 0: unsized).
  memoryBytes @8 :UInt64;
  resizing @9 :UInt32;          # Serving nodes of another size, still to be replaced (make-before-break).
}

# A host agent and the node processes it runs.
struct HostStatus {
  hostId @0 :Text;
  hostname @1 :Text;
  pid @2 :UInt32;
  cpus @3 :UInt32;
  memTotal @4 :UInt64;
  memAvailable @5 :UInt64;
  maxNodes @6 :UInt32;
  nodes @7 :List(HostedNode);
  startedMs @8 :UInt64;
  heartbeatMs @9 :UInt64;
  enforcement @10 :Text;        # How node sizes are enforced here: cgroup-v2, cgroup-v1, affinity, none.
}

struct HostedNode {
  nodeId @0 :Text;
  roles @1 :List(Role);
  pid @2 :UInt32;               # 0: not running (restarting).
  restarts @3 :UInt32;
  managed @4 :Bool;             # Started by the scaler (not from a cluster file).
  stopping @5 :Bool;
  lastExit @6 :Text;
  cpuMillis @7 :UInt32;         # The size it was started with (0 and 0: unsized).
  memoryBytes @8 :UInt64;
  oomKills @9 :UInt32;          # Times the kernel killed it for exceeding its memory limit.
}

struct ScalingStatus {
  roles @0 :List(RoleScaling);
  hosts @1 :List(HostStatus);
}

# One step the scaler took.
struct ScalingEvent {
  atMs @0 :UInt64;
  role @1 :Role;
  nodeId @2 :Text;
  action @3 :Text;
  detail @4 :Text;
}

# MISSION S1.4's sealedSegmentChangeInfo, published on quiver.<c>.querychannel.<collection>.
struct SegmentChangeInfo {
  collection @0 :UInt64;
  onlineNodeId @1 :Text;
  onlineSegmentIds @2 :List(UInt64);
  offlineNodeId @3 :Text;
  offlineSegmentIds @4 :List(UInt64);
  reason @5 :Text;              # balance, scale-in, drain, failover, replicas.
  atMs @6 :UInt64;
  releasedMs @7 :UInt64;        # When the offline node confirmed the release (0: not yet).
}

struct ClusterEvents {
  handoffs @0 :List(SegmentChangeInfo);
  scaling @1 :List(ScalingEvent);
}

# Operator bounds of a role's autoscaling (`quiver ctl autoscale`): min = max pins the size
# and turns autoscaling off for the role (MISSION S3.4).
struct AutoscaleRequest {
  role @0 :Text;
  minMemoryBytes @1 :UInt64;    # 0: keep.
  maxMemoryBytes @2 :UInt64;    # 0: keep.
  reset @3 :Bool;               # Back to the configured bounds (autoscaling.min/max_memory_mb).
}

# One decision of the autoscaler (every `autoscaling.interval`, per role).
struct AutoscaleDecision {
  atMs @0 :UInt64;
  role @1 :Role;
  fromCpuMillis @2 :UInt32;
  fromMemoryBytes @3 :UInt64;
  toCpuMillis @4 :UInt32;
  toMemoryBytes @5 :UInt64;
  reason @6 :Text;              # The plugin's reason, then the coordinator's note.
  plugin @7 :Text;              # The autoscaler that answered (name@version; "(native fallback)").
  action @8 :Text;              # resize, keep, held, refused, failed.
}

struct RoleAutoscale {
  role @0 :Role;
  enabled @1 :Bool;             # Sized by the autoscaler (autoscaling.enabled, the role listed, min < max).
  minMemoryBytes @2 :UInt64;
  maxMemoryBytes @3 :UInt64;
  cpuMillis @4 :UInt32;         # The role's size now (0 and 0: unsized).
  memoryBytes @5 :UInt64;
  samples @6 :UInt32;           # Samples in the window.
  peakCpuPercent @7 :Float64;   # Highest CPU use in the window, in percent of the current size.
  peakMemoryBytes @8 :UInt64;
  ooms @9 :UInt32;              # Samples with an out-of-memory event.
  heldUntilMs @10 :UInt64;      # An operator's size is not shrunk before then (0: not held).
}

struct AutoscaleStatus {
  enabled @0 :Bool;
  intervalMs @1 :UInt64;
  windowMs @2 :UInt64;
  roles @3 :List(RoleAutoscale);
  decisions @4 :List(AutoscaleDecision);   # Oldest first.
}

# Automatic idling (MISSION S3.6, S3.7): `api.idling`, `coord.idling`, `coord.wake`.
struct IdlingStatus {
  enabled @0 :Bool;
  state @1 :Text;               # awake, idle, waking.
  sinceMs @2 :UInt64;           # When the cluster entered that state.
  lastRequestMs @3 :UInt64;     # The last data request any proxy saw.
  afterMs @4 :UInt64;           # idling.after, as configured.
  timeoutMs @5 :UInt64;         # The timeout in force (grown with the measured start-up time).
  lastStartupMs @6 :UInt64;     # How long the last wake took until the cluster served (0: none yet).
  blocked @7 :Text;             # Why the cluster may not idle now ("" if nothing keeps it awake).
  stopped @8 :UInt32;           # Node processes stopped for idling.
}

# Coordinator -> host agent.
struct StartNode {
  nodeId @0 :Text;
  role @1 :Role;
  cpuMillis @2 :UInt32;         # Its size (0 and 0: unsized, it may use the whole host).
  memoryBytes @3 :UInt64;
}

struct StopNode {
  nodeId @0 :Text;
}

# Plugin administration (`quiver ctl plugin ...`), answered by the coordinator.
# A plugin binary to validate and add to the cluster's catalog.
struct PluginUpload {
  kind @0 :Text;
  name @1 :Text;
  wasm @2 :Data;
}

# Make `name@version` the active plugin of its kind (version "builtin" for bundled ones).
struct PluginActivate {
  name @0 :Text;
  version @1 :Text;
}

# Go back to the previously active plugin of `kind`.
struct PluginRollback {
  kind @0 :Text;
}

# The coordinator's answer: a JSON document of the runtime's plugin catalog types (the same
# documents the catalog stores in NATS KV), printed by `quiver ctl plugin`.
struct PluginReport {
  json @0 :Text;
}

# ---------------------------------------------------------------------------------------
# Internal messages (between nodes)
# ---------------------------------------------------------------------------------------

# Request for `count` ids or timestamps.
struct Alloc {
  count @0 :UInt64;
}

# `count` consecutive values starting at `start`.
struct AllocRange {
  start @0 :UInt64;
  count @1 :UInt64;
}

# A DML log entry (one JetStream message on a shard subject).
struct DmlEntry {
  union {
    insert :group {
      timestamp @0 :UInt64;
      rows @1 :RowBatch;
      partition @4 :UInt32;     # The partition the rows belong to (`_default` = 0).
    }
    delete :group {
      timestamp @2 :UInt64;
      pks @3 :List(PrimaryKey);
    }
  }
}

# Data node -> coordinator: a segment was sealed and written to the object store.
struct SegmentFlushed {
  segment @0 :SegmentInfo;
}

# Coordinator -> index node: build the index of one segment.
struct BuildIndex {
  segment @0 :SegmentInfo;
  params @1 :IndexParams;
  dim @2 :UInt32;
}

# Index node -> coordinator: an index is built and stored.
struct IndexBuilt {
  segment @0 :UInt64;
  collection @1 :UInt64;
  indexPath @2 :Text;
  buildMs @3 :UInt64;
}

# Coordinator -> data node: merge `inputs` (consecutive segments of one shard, in log order)
# into segment `output`, dropping the rows that deletes up to `deleteTo` hide.
struct CompactTask {
  collection @0 :CollectionInfo;
  shard @1 :UInt32;
  plan @2 :UInt64;
  inputs @3 :List(SegmentInfo);
  output @4 :UInt64;            # Id of the merged segment.
  deleteFrom @5 :UInt64;        # Deletes after this position may hide input rows ...
  deleteTo @6 :UInt64;          # ... up to this one (inclusive) are applied.
  minDropped @7 :UInt64;        # One input losing fewer rows is kept as it is (`unchanged`).
}

# Data node -> coordinator: what a compaction task wrote.
struct CompactOutcome {
  plan @0 :UInt64;
  output :union {               # Rust `Option<SegmentInfo>`: none when no row is left, or
    none @1 :Void;              # when the one input lost no row (`unchanged`).
    some @2 :SegmentInfo;
  }
  droppedRows @3 :UInt64;       # Input rows left out (deleted).
  unchanged @4 :Bool;           # One input, nothing to drop: only its deleteSeq moves.
}

# One compaction plan of a job (Milvus' CompactionMergeInfo plus its state).
struct CompactionPlan {
  id @0 :UInt64;
  shard @1 :UInt32;
  sources @2 :List(UInt64);
  target @3 :UInt64;            # 0 when the sources were rewritten in place or emptied.
  kind @4 :Text;                # "merge" (small segments) or "delete" (deleted rows dropped).
  state @5 :Text;               # "executing", "completed" or "failed".
  error @6 :Text;
}

# A compaction job: the plans one `compact` request (or one background round) made.
struct CompactionState {
  id @0 :UInt64;
  collection @1 :Text;
  state @2 :Text;               # "executing" while a plan runs, then "completed".
  plans @3 :List(CompactionPlan);
}

struct CompactionJobId {
  id @0 :UInt64;
}

# A `compact` request. Field @0 is `CollectionName`'s, so a bare `CollectionName` (older
# clients) reads as a plain compaction.
struct CompactRequest {
  name @0 :Text;
  force @1 :Bool;           # Force merge: every segment of a shard merged up to targetRows.
  targetRows @2 :UInt64;    # With force: rows per merged segment at most (0 = no limit).
}

# Coordinator -> query node: serve these sealed segments and lead these shards.
struct LoadSegments {
  collection @0 :CollectionInfo;
  segments @1 :List(SegmentInfo);
  leadShards @2 :List(ShardPlacement);
  shardViews @3 :List(ShardView);   # For each lead shard: its served sealed segments.
  deleteFloors @4 :List(ShardSeq);  # Per shard: the log position its deletes are read after.
}

# A log position of one shard.
struct ShardSeq {
  shard @0 :UInt32;
  seq @1 :UInt64;
}

# Coordinator -> query node: stop serving these segments (and shards).
struct ReleaseSegments {
  collection @0 :UInt64;
  segments @1 :List(UInt64);
  all @2 :Bool;                 # Release the whole collection, growing data included.
}

# Proxy -> query node: one node's share of a search.
struct NodeSearch {
  collection @0 :UInt64;
  search @1 :Search;
  segments @2 :List(UInt64);
  growing @3 :List(ShardPlacement);
  guaranteeTs @4 :UInt64;       # Wait until applied up to this timestamp (0 = no wait).
  filter @5 :Text;              # The search's filter parsed by the proxy (expr::Expr as JSON); empty = none.
}

# Proxy -> query node: one node's share of a query (answered with GetResults).
struct NodeQuery {
  collection @0 :UInt64;
  query @1 :Query;
  segments @2 :List(UInt64);
  growing @3 :List(ShardPlacement);
  guaranteeTs @4 :UInt64;
  filter @5 :Text;              # The query's filter parsed by the proxy (expr::Expr as JSON); empty = every row.
}

# Proxy -> query node: one node's share of a get-by-key.
struct NodeGet {
  collection @0 :UInt64;
  get @1 :Get;
  segments @2 :List(UInt64);
  growing @3 :List(ShardPlacement);
  guaranteeTs @4 :UInt64;
  partitions @5 :List(UInt32);  # Only rows of these partitions (empty = all).
}

# A get-by-key answer: rows found, in columnar form, primary keys in `rows.pks`.
struct GetResults {
  rows @0 :RowBatch;
  # Log position that wrote each row, so a proxy keeps the latest version of a key.
  seqs @1 :List(UInt64);
}

# One shard a data node consumes, and where to resume if it is not consuming it yet.
struct ChannelAssignment {
  collection @0 :CollectionInfo;
  shard @1 :UInt32;
  checkpoint @2 :UInt64;        # Log position up to which the shard's rows are in flushed segments.
}

# Coordinator -> data node: the full set of shards the node consumes (applied idempotently).
struct WatchChannels {
  channels @0 :List(ChannelAssignment);
}

# Tests only (fault injection): a node's reads wait `millis` before starting.
struct Stall {
  millis @0 :UInt64;
}
