//! The services of Quiver's roles. Each `service!` block is the whole contract of one role:
//! adding a method here is the only way to make a role serve it, and the compiler then asks
//! every `match` on the request enum to handle it.

use super::{service, Call, NodeCall, ProtocolError, QueueCall, Request, Service, ServiceRequest};
use crate::types::*;

service! {
    /// The public API (`quiver.<cluster>.api.<method>`), served by every proxy in the queue
    /// group `proxy`; the SDKs and `quiver ctl` call it.
    Api (QueueCall), enum ApiRequest, mod api {
        CreateCollection = "create_collection" (CreateCollection) -> Empty;
        DropCollection = "drop_collection" (CollectionName) -> Empty;
        DescribeCollection = "describe_collection" (CollectionName) -> CollectionDescription;
        ListCollections = "list_collections" (Empty) -> CollectionList;
        CreateIndex = "create_index" (CreateIndex) -> Empty;
        DropIndex = "drop_index" (CollectionName) -> Empty;
        /// Serve a collection from `replicas` in-memory replica groups.
        LoadCollection = "load_collection" (LoadCollection) -> Empty;
        ReleaseCollection = "release_collection" (CollectionName) -> Empty;
        /// Partitions (Milvus'): listed by `describe_collection`.
        CreatePartition = "create_partition" (PartitionRequest) -> Empty;
        DropPartition = "drop_partition" (PartitionRequest) -> Empty;
        LoadPartitions = "load_partitions" (PartitionRequest) -> Empty;
        ReleasePartitions = "release_partitions" (PartitionRequest) -> Empty;
        /// Seal every growing segment of the collection now.
        Flush = "flush" (CollectionName) -> FlushResult;
        /// The collection's serving layout (segments, replicas, shard leaders).
        Distribution = "distribution" (CollectionName) -> Distribution;
        Insert = "insert" (Insert) -> MutationResult;
        Delete = "delete" (Delete) -> MutationResult;
        Upsert = "upsert" (Insert) -> MutationResult;
        Query = "query" (Query) -> QueryResults;
        Get = "get" (Get) -> GetResults;
        Search = "search" (Search) -> SearchResults;
        /// Every node of the cluster with its heartbeat.
        Status = "status" (Empty) -> ClusterStatus;
        PluginLoad = "plugin_load" (PluginUpload) -> PluginReport;
        PluginActivate = "plugin_activate" (PluginActivate) -> PluginReport;
        PluginRollback = "plugin_rollback" (PluginRollback) -> PluginReport;
        PluginList = "plugin_list" (Empty) -> PluginReport;
        /// Run this many nodes of a role (MISSION S3.1); the cluster converges on the last request.
        Scale = "scale" (ScaleRequest) -> ScaleReply;
        /// Wanted vs actual node count per role, and the host agents.
        Scaling = "scaling" (Empty) -> ScalingStatus;
        /// Recent hand-offs (sealedSegmentChangeInfo) and scaling steps.
        Events = "events" (Empty) -> ClusterEvents;
        /// Set a role's autoscaling bounds (min = max pins its size, MISSION S3.4).
        Autoscale = "autoscale" (AutoscaleRequest) -> AutoscaleStatus;
        /// The autoscaler's settings, every role's metrics window and its recent decisions.
        Autoscaling = "autoscaling" (Empty) -> AutoscaleStatus;
        /// Whether the cluster is idle (compute nodes stopped), and when it will be.
        Idling = "idling" (Empty) -> IdlingStatus;
        /// Compact the collection's sealed segments now (Milvus' ManualCompaction): a job id.
        Compact = "compact" (CompactRequest) -> CompactionState;
        /// A compaction job's plans and their state.
        CompactionState = "compaction_state" (CompactionJobId) -> CompactionState;
    }
}

service! {
    /// The coordinator (`quiver.<cluster>.coord.<method>`, queue group `coordinator`):
    /// metadata, timestamps and ids, segment lifecycle, placement.
    Coord (QueueCall), enum CoordRequest, mod coord {
        CreateCollection = "create_collection" (CreateCollection) -> Empty;
        DropCollection = "drop_collection" (CollectionName) -> Empty;
        DescribeCollection = "describe_collection" (CollectionName) -> CollectionDescription;
        ListCollections = "list_collections" (Empty) -> CollectionList;
        CreateIndex = "create_index" (CreateIndex) -> Empty;
        DropIndex = "drop_index" (CollectionName) -> Empty;
        /// Defines an index on a scalar field (the query nodes build it as segments load).
        CreateScalarIndex = "create_scalar_index" (CreateScalarIndex) -> Empty;
        DropScalarIndex = "drop_scalar_index" (DropScalarIndex) -> Empty;
        LoadCollection = "load_collection" (LoadCollection) -> Empty;
        ReleaseCollection = "release_collection" (CollectionName) -> Empty;
        CreatePartition = "create_partition" (PartitionRequest) -> Empty;
        DropPartition = "drop_partition" (PartitionRequest) -> Empty;
        LoadPartitions = "load_partitions" (PartitionRequest) -> Empty;
        ReleasePartitions = "release_partitions" (PartitionRequest) -> Empty;
        /// Asks the data nodes owning the collection's shards to seal now.
        Flush = "flush" (CollectionName) -> FlushResult;
        GetDistribution = "get_distribution" (CollectionName) -> Distribution;
        /// `count` timestamps (hybrid: physical ms << 18 | logical).
        AllocTs = "alloc_ts" (Alloc) -> AllocRange;
        /// `count` unique ids (segments, auto primary keys).
        AllocIds = "alloc_ids" (Alloc) -> AllocRange;
        /// Data node: a segment was sealed and written to the object store.
        SegmentFlushed = "segment_flushed" (SegmentFlushed) -> Empty;
        PluginLoad = "plugin_load" (PluginUpload) -> PluginReport;
        PluginActivate = "plugin_activate" (PluginActivate) -> PluginReport;
        PluginRollback = "plugin_rollback" (PluginRollback) -> PluginReport;
        PluginList = "plugin_list" (Empty) -> PluginReport;
        /// The scaler's wanted node count of a role (persisted; converged on in the background).
        Scale = "scale" (ScaleRequest) -> ScaleReply;
        Scaling = "scaling" (Empty) -> ScalingStatus;
        Autoscale = "autoscale" (AutoscaleRequest) -> AutoscaleStatus;
        Autoscaling = "autoscaling" (Empty) -> AutoscaleStatus;
        Idling = "idling" (Empty) -> IdlingStatus;
        /// A request arrived while the cluster idles: start its compute nodes (idempotent).
        Wake = "wake" (Empty) -> IdlingStatus;
        Events = "events" (Empty) -> ClusterEvents;
        /// Plan and run a compaction of the collection now; answers with the job's plans.
        Compact = "compact" (CompactRequest) -> CompactionState;
        CompactionState = "compaction_state" (CompactionJobId) -> CompactionState;
    }
}

service! {
    /// One query node (`quiver.<cluster>.node.<id>.<method>`).
    QueryNode (NodeCall), enum QueryNodeRequest, mod querynode {
        Search = "search" (NodeSearch) -> NodeSearchResults;
        Get = "get" (NodeGet) -> GetResults;
        Query = "query" (NodeQuery) -> GetResults;
        /// The node's full desired state for one collection (applied idempotently).
        Load = "load" (LoadSegments) -> Empty;
        Release = "release" (ReleaseSegments) -> Empty;
    }
}

service! {
    /// One data node (`quiver.<cluster>.node.<id>.<method>`).
    DataNode (NodeCall), enum DataNodeRequest, mod datanode {
        /// Seal and write the collection's growing segments now.
        Flush = "flush" (CollectionName) -> FlushResult;
        /// The node's full set of shards to consume (pushed by the coordinator whenever it
        /// changes, and to every new incarnation of the node); shards left out are flushed
        /// and released before the node answers, so the next owner resumes where it stopped.
        WatchChannels = "watch_channels" (WatchChannels) -> Empty;
        /// Merge segments of a shard into one, dropping deleted rows; answers once the merged
        /// segment is stored (the coordinator then commits it).
        Compact = "compact" (CompactTask) -> CompactOutcome;
    }
}

service! {
    /// Index nodes (`quiver.<cluster>.index.build`, queue group `indexnode`).
    IndexNode (QueueCall), enum IndexNodeRequest, mod indexnode {
        Build = "build" (BuildIndex) -> IndexBuilt;
    }
}

service! {
    /// What every node answers besides its role's service (`quiver.<cluster>.node.<id>.<method>`).
    NodeControl (NodeCall), enum NodeControlRequest, mod control {
        /// Stop taking work, finish or hand off what the node holds, then stop.
        Drain = "drain" (Empty) -> Empty;
        /// Tests only (`debug.fault_injection`): the role panics.
        DebugPanic = "debug_panic" (Empty) -> Empty;
        /// Tests only (`debug.fault_injection`): the node's reads wait this long first.
        DebugStall = "debug_stall" (Stall) -> Empty;
        /// Tests only (`debug.fault_injection`): requests that reach the node over NATS in the
        /// next `millis` are dropped unanswered, as if lost with a nats-server.
        DebugLose = "debug_lose" (Stall) -> Empty;
    }
}

service! {
    /// A host agent (`quiver.<cluster>.host.<host id>.<method>`): starts and stops node
    /// processes on its machine for the coordinator's scaler.
    Host (NodeCall), enum HostRequest, mod host {
        /// Start a node process with one role (idempotent: a running node of that id is kept).
        StartNode = "start_node" (StartNode) -> Empty;
        /// Drain the node process (SIGTERM), let it exit and do not restart it.
        StopNode = "stop_node" (StopNode) -> Empty;
    }
}
