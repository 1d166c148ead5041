//! The coordinator: collection metadata, timestamp (TSO) and id allocation, the segment
//! lifecycle (flushed → indexed), placement of sealed segments and shard leaders on query
//! nodes, channel assignment to data nodes, and index-build tasks. One active instance per
//! cluster; all state lives in the metadata KV bucket, so a restarted coordinator resumes.
//!
//! - `catalog.rs`: schema validation, DML streams, metadata keys and the persisted `Layout`.
//! - `tso.rs`: the timestamp oracle and id allocator.
//! - `placement.rs`: reconciliation of the desired layout with live nodes; index builds.
//! - `channels.rs`: each shard's data node, pushed to data nodes; shard hand-over.
//! - `membership.rs`: who is alive, suspect or dead (discovery policy).
//! - `balance.rs`: periodic move plans over query nodes (balancer policy) and hand-offs.
//! - `plugins.rs`: plugin administration (load, activate, roll back, list).
//! - `compaction.rs`: merging small segments and dropping deleted rows (planned here, run by
//!   data nodes), the switch of readers to the result, and each shard's delete floor.
//! - `scaler.rs`: wanted node counts and sizes per role, converged on through host agents
//!   (scale-out, gradual scale-in, make-before-break resizes), and the event lists (scaling
//!   steps, hand-offs).
//! - `autoscale.rs`: the metrics window per role and the autoscaler plugin's size decisions.
//! - `idling.rs`: stopping the compute nodes after a time without requests, and waking them.
//! - `gc.rs`: deleting objects no segment names (the object store's garbage collection).
//!
//! Policies (balancer, discovery, autoscaler) are Wasm plugins run through the runtime's
//! plugin host, with the built-in algorithms as fallback (`crate::policies`).

mod autoscale;
mod balance;
pub(crate) mod catalog;
mod channels;
mod compaction;
mod gc;
mod idling;
mod lease;
mod membership;
mod partitions;
mod placement;
mod plugins;
mod scaler;
mod tso;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use quiver_runtime::bus::{now_ms, RequestContext};
use quiver_runtime::retry::{retry, Backoff};
use quiver_runtime::{Error, Result, RoleContext};
use quiver_schemas::protocol::{datanode, keys, CoordRequest};
use quiver_schemas::{
    Alloc, AllocRange, CollectionDescription, CollectionInfo, CollectionList, CollectionName, CreateCollection,
    CreateIndex, CreateScalarIndex, Distribution, DropScalarIndex, Empty, FlushResult, LoadCollection, Role,
    SegmentFlushed, SegmentInfo, SegmentState,
};
use tokio::sync::{Mutex, Notify};

pub use catalog::validate_schema;
use catalog::Layout;

use crate::node::{start_role, Node, RoleHandler};

/// The coordinator's in-memory view of the metadata bucket.
#[derive(Default)]
struct Catalog {
    collections: BTreeMap<String, CollectionInfo>,
    segments: BTreeMap<u64, BTreeMap<u64, SegmentInfo>>,
    layouts: BTreeMap<u64, Layout>,
}

impl Catalog {
    fn by_name(&self, name: &str) -> Result<&CollectionInfo> {
        self.collections.get(name).ok_or_else(|| not_found(name))
    }
}

/// Most in-memory replica groups a collection can have.
pub const MAX_REPLICAS: u32 = 20;

/// Most shards a collection can have.
pub const MAX_SHARDS: u32 = 64;

/// Longest a flush or a load waits for the nodes it needs (a caller without a deadline).
const NODE_WAIT: Duration = Duration::from_secs(30);

/// What a request waiting for nodes keeps of its caller's budget to answer in time.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// For this long after its coordinator started, a cluster without any query node is taken
/// for one still starting: a load waits for its first query nodes.
const STARTING_GRACE: Duration = Duration::from_secs(60);

/// How long a request may wait for nodes: `NODE_WAIT`, or less to answer within its budget.
fn node_wait(ctx: &RequestContext) -> Duration {
    ctx.remaining().map_or(NODE_WAIT, |left| left.saturating_sub(ANSWER_MARGIN).min(NODE_WAIT))
}

pub(crate) fn not_found(name: &str) -> Error {
    Error::collection_not_found(name)
}

pub struct Coordinator {
    node: Node,
    /// The lease this coordinator acts under (`lease.rs`).
    leadership: lease::Leadership,
    /// The metadata bucket, every write fenced on this coordinator's epoch.
    meta: quiver_runtime::JsonBucket,
    catalog: Mutex<Catalog>,
    tso: Mutex<tso::Tso>,
    ids: Mutex<tso::IdAllocator>,
    /// Wakes the reconcile loop early (after a flush, an index build, a new collection).
    reconcile: Notify,
    /// Per (node, collection): what was last sent, and the node incarnation it was sent to.
    sent: std::cell::RefCell<HashMap<(String, u64), placement::Sent>>,
    building: std::cell::RefCell<HashSet<u64>>,
    /// Per data node: the incarnation and channel set last pushed to it.
    channels_sent: std::cell::RefCell<HashMap<String, channels::SentChannels>>,
    /// Data node incarnations (id, `started_ms`) with a channel push in flight.
    pushing: std::cell::RefCell<HashSet<(String, u64)>>,
    /// (collection, shard) → its move between two alive data nodes, while it happens.
    moving_channels: std::cell::RefCell<BTreeMap<(u64, u32), channels::ChannelMove>>,
    membership: membership::Membership,
    policies: crate::policies::CoordinatorPolicies,
    scaler: scaler::Scaler,
    autoscaler: autoscale::Autoscaler,
    idler: idling::Idler,
    /// (collection, segment) → the node that held it when it died or restarted, until another
    /// node serves it (then announced as a fail-over hand-off).
    lost: std::cell::RefCell<HashMap<(u64, u64), String>>,
    compactions: std::cell::RefCell<compaction::Compactions>,
}

/// Starts the coordinator role on the current arbiter.
pub fn start(rc: RoleContext) {
    start_role(rc, Box::new(|node| Box::pin(Coordinator::load(node))));
}

impl Coordinator {
    async fn load(node: Node) -> Result<Coordinator> {
        let leadership = lease::acquire(&node).await?;
        node.health.set_state(quiver_schemas::NodeState::Starting);
        let node_for_policies = node.clone();
        let meta = &leadership.meta;
        let mut catalog = Catalog::default();
        for info in meta.values::<CollectionInfo>("collection.").await? {
            let segments: Vec<SegmentInfo> = meta.values(&keys::segments(info.id)).await?;
            catalog.segments.insert(info.id, segments.into_iter().map(|s| (s.id, s)).collect());
            let mut layout: Layout = meta.get(&keys::layout(info.id)).await?.unwrap_or_default();
            layout.migrate();
            catalog.layouts.insert(info.id, layout);
            catalog.collections.insert(info.schema.name.clone(), info);
        }
        tracing::info!(collections = catalog.collections.len(), "coordinator loaded metadata");
        for info in catalog.collections.values() {
            catalog::create_streams(&node.shared.bus, info, node.shared.config.nats.replicas).await?;
        }
        let tso = tso::Tso::load(meta).await?;
        let ids = tso::IdAllocator::load(meta).await?;
        let scaler = scaler::Scaler::load(meta).await?;
        let autoscaler = autoscale::Autoscaler::load(meta).await?;
        let idler = idling::Idler::load(meta).await?;
        Ok(Coordinator {
            node,
            meta: leadership.meta.clone(),
            leadership,
            catalog: Mutex::new(catalog),
            tso: Mutex::new(tso),
            ids: Mutex::new(ids),
            reconcile: Notify::new(),
            sent: Default::default(),
            building: Default::default(),
            channels_sent: Default::default(),
            pushing: Default::default(),
            moving_channels: Default::default(),
            membership: Default::default(),
            policies: crate::policies::CoordinatorPolicies::start(&node_for_policies).await?,
            scaler,
            autoscaler,
            idler,
            lost: Default::default(),
            compactions: Default::default(),
        })
    }

    async fn alloc_ts(&self, count: u64) -> Result<u64> {
        self.tso.lock().await.alloc(&self.meta, count).await
    }

    async fn alloc_ids(&self, count: u64) -> Result<u64> {
        self.ids.lock().await.alloc(&self.meta, count).await
    }

    async fn create_collection(&self, req: CreateCollection) -> Result<Empty> {
        let config = &self.node.shared.config;
        let schema = validate_schema(req.schema, config.coordinator.default_shards, &config.limits)?;
        let mut catalog = self.catalog.lock().await;
        if let Some(existing) = catalog.collections.get(&schema.name) {
            if existing.schema == schema {
                return Ok(Empty {});
            }
            return Err(Error::AlreadyExists(format!(
                "collection {:?} already exists with a different schema",
                schema.name
            )));
        }
        let id = self.alloc_ids(1).await?;
        let created_ts = self.alloc_ts(1).await?;
        let info =
            CollectionInfo { id, schema, index: None, created_ts, scalar_indexes: Vec::new(), partitions: Vec::new() };
        catalog::create_streams(&self.node.shared.bus, &info, config.nats.replicas).await?;
        let layout = Layout::new(info.schema.num_shards);
        let meta = &self.meta;
        meta.put(&keys::layout(id), &layout).await?;
        meta.put(&keys::collection(&info.schema.name), &info).await?;
        tracing::info!(collection = %info.schema.name, id, shards = info.schema.num_shards, "collection created");
        catalog.layouts.insert(id, layout);
        catalog.segments.insert(id, BTreeMap::new());
        catalog.collections.insert(info.schema.name.clone(), info);
        drop(catalog);
        self.reconcile.notify_one();
        Ok(Empty {})
    }

    async fn drop_collection(&self, req: CollectionName) -> Result<Empty> {
        let mut catalog = self.catalog.lock().await;
        let info = catalog.by_name(&req.name)?.clone();
        let meta = &self.meta;
        meta.delete(&keys::collection(&info.schema.name)).await?;
        catalog.collections.remove(&info.schema.name);
        let segments = catalog.segments.remove(&info.id).unwrap_or_default();
        catalog.layouts.remove(&info.id);
        drop(catalog);
        meta.delete(&keys::layout(info.id)).await?;
        for seg in segments.values() {
            meta.delete(&keys::segment(info.id, seg.id)).await?;
            let _ = self.node.shared.objects.delete(&seg.data_path).await;
            if let Some(p) = &seg.index_path {
                let _ = self.node.shared.objects.delete(p).await;
            }
        }
        self.release_everywhere(info.id).await;
        catalog::delete_streams(&self.node.shared.bus, &info).await;
        self.publish_change(info.id).await;
        tracing::info!(collection = %info.schema.name, "collection dropped");
        Ok(Empty {})
    }

    /// Serves a collection from `replicas` in-memory replica groups (shard leaders and segments
    /// are placed by the next reconcile round; `GetLoadingProgress` follows it). Loading a loaded
    /// collection with another replica number adds or removes groups.
    ///
    /// Replicas are on disjoint query nodes. With too few alive, the load waits for more within
    /// the caller's budget (at most `NODE_WAIT`) while more are on their way: started and not
    /// serving yet, silent for a moment (suspect), or, in a cluster still starting, the first
    /// ones. Otherwise it is refused at once, as in Milvus.
    /// Serves the collection, every partition of it.
    async fn load_collection(&self, req: LoadCollection, ctx: &RequestContext) -> Result<Empty> {
        self.load_every_partition(&req.name).await?;
        self.load_layout(req, ctx).await
    }

    /// Serves the collection from `req.replicas` replica groups (its partitions' states stay).
    async fn load_layout(&self, req: LoadCollection, ctx: &RequestContext) -> Result<Empty> {
        let replicas = req.replicas.max(1);
        if replicas > MAX_REPLICAS {
            return Err(Error::InvalidArgument(format!(
                "replica_number {replicas} is too large (at most {MAX_REPLICAS})"
            )));
        }
        let until = Instant::now() + node_wait(ctx);
        let poll = Duration::from_millis(250);
        loop {
            let (alive, coming) = self.query_nodes().await?;
            if alive.len() >= replicas as usize {
                break;
            }
            if coming && Instant::now() + poll < until {
                tracing::debug!(collection = %req.name, replicas, alive = alive.len(), "load waits for query nodes");
                tokio::time::sleep(poll).await;
                continue;
            }
            return Err(Error::InvalidArgument(format!(
                "replica_number {replicas} needs at least {replicas} query nodes (replicas are on disjoint nodes), \
                 but {} {} alive{}",
                alive.len(),
                if alive.len() == 1 { "is" } else { "are" },
                if alive.is_empty() { String::new() } else { format!(": {}", alive.join(", ")) }
            )));
        }
        self.update_layout(&req.name, |layout| {
            let changed = layout.released || layout.wanted_replicas() != replicas as usize;
            layout.released = false;
            layout.replica_number = replicas;
            changed
        })
        .await?;
        tracing::info!(collection = %req.name, replicas, "collection loaded");
        Ok(Empty {})
    }

    /// The alive query nodes, sorted, and whether more may serve soon: nodes started and not
    /// serving yet, suspect ones, or none at all in a cluster still starting.
    async fn query_nodes(&self) -> Result<(Vec<String>, bool)> {
        let verdicts = self.membership.refresh(&self.node, &self.policies.discovery).await?;
        let hosts = self.node.shared.registry.hosts().await?;
        let starting = !self.role_counts(&verdicts, Role::QueryNode, &hosts).starting.is_empty();
        let members = verdicts.members(Role::QueryNode);
        let mut alive: Vec<String> = members.alive.into_iter().map(|n| n.node_id).collect();
        alive.sort();
        let young = now_ms().saturating_sub(self.node.started_ms) < STARTING_GRACE.as_millis() as u64;
        let coming = starting || !members.suspect.is_empty() || (alive.is_empty() && young);
        Ok((alive, coming))
    }

    /// Stops serving a collection from query nodes (inserts are still accepted).
    async fn release_collection(&self, req: CollectionName) -> Result<Empty> {
        self.update_layout(&req.name, |layout| !std::mem::replace(&mut layout.released, true)).await?;
        tracing::info!(collection = %req.name, "collection released");
        Ok(Empty {})
    }

    /// Applies `change` to a collection's layout; when it reports a change, the layout is
    /// persisted with a new version, proxies are told and placement runs.
    async fn update_layout(&self, name: &str, change: impl FnOnce(&mut Layout) -> bool) -> Result<()> {
        let mut catalog = self.catalog.lock().await;
        let id = catalog.by_name(name)?.id;
        let Some(layout) = catalog.layouts.get_mut(&id) else {
            return Err(Error::Internal(format!("collection {name:?} has no layout")));
        };
        if !change(layout) {
            return Ok(());
        }
        layout.version += 1;
        self.meta.put(&keys::layout(id), layout).await?;
        drop(catalog);
        self.publish_change(id).await;
        self.reconcile.notify_one();
        Ok(())
    }

    /// Drops a released collection's vector index: segments are searched exactly until a new
    /// index is created (Milvus' rule: release first).
    async fn drop_index(&self, req: CollectionName) -> Result<Empty> {
        let mut catalog = self.catalog.lock().await;
        let info = catalog.by_name(&req.name)?.clone();
        if catalog.layouts.get(&info.id).is_some_and(|l| !l.released) {
            return Err(Error::InvalidArgument(format!(
                "index cannot be dropped, collection {:?} is loaded, please release it first",
                req.name
            )));
        }
        if info.index.is_none() {
            return Err(Error::index_not_found(&req.name));
        }
        let meta = &self.meta;
        let updated = CollectionInfo { index: None, ..info.clone() };
        meta.put(&keys::collection(&info.schema.name), &updated).await?;
        catalog.collections.insert(info.schema.name.clone(), updated);
        let mut stale = Vec::new();
        if let Some(segments) = catalog.segments.get_mut(&info.id) {
            for seg in segments.values_mut().filter(|s| s.index_path.is_some()) {
                stale.extend(seg.index_path.take());
                seg.state = SegmentState::Flushed;
                meta.put(&keys::segment(info.id, seg.id), &*seg).await?;
            }
        }
        drop(catalog);
        for path in stale {
            let _ = self.node.shared.objects.delete(&path).await;
        }
        self.publish_change(info.id).await;
        tracing::info!(collection = %req.name, "index dropped");
        Ok(Empty {})
    }

    async fn describe(&self, req: CollectionName) -> Result<CollectionDescription> {
        let catalog = self.catalog.lock().await;
        let info = catalog.by_name(&req.name)?.clone();
        let segments = catalog.segments.get(&info.id).cloned().unwrap_or_default();
        Ok(CollectionDescription {
            info,
            num_rows: catalog::sealed_rows(&segments),
            sealed_segments: segments.len() as u32,
        })
    }

    async fn list(&self) -> Result<CollectionList> {
        Ok(CollectionList { names: self.catalog.lock().await.collections.keys().cloned().collect() })
    }

    async fn create_index(&self, req: CreateIndex) -> Result<Empty> {
        let mut catalog = self.catalog.lock().await;
        let info = catalog.by_name(&req.collection)?.clone();
        catalog::validate_index(&req.params, info.dim())?;
        let name = match (&req.params.name, info.vector_field()) {
            (n, _) if !n.is_empty() => n.clone(),
            (_, Some(f)) => f.name.clone(),
            _ => String::new(),
        };
        if info.scalar_indexes.iter().any(|i| i.name == name) {
            return Err(Error::InvalidArgument(format!(
                "CreateIndex failed: at most one distinct index is allowed per field (index name {name:?} is \
                 a scalar field's index of collection {:?})",
                req.collection
            )));
        }
        match &info.index {
            Some(existing) if *existing == req.params => return Ok(Empty {}),
            Some(_) => {
                return Err(Error::AlreadyExists(format!(
                    "collection {:?} already has a different index; drop it first",
                    req.collection
                )))
            }
            None => {}
        }
        let mut updated = info.clone();
        updated.index = Some(req.params);
        self.meta.put(&keys::collection(&req.collection), &updated).await?;
        catalog.collections.insert(req.collection.clone(), updated);
        drop(catalog);
        tracing::info!(collection = %req.collection, "index defined; building for sealed segments");
        self.reconcile.notify_one();
        Ok(Empty {})
    }

    /// Defines an index on a scalar field: persisted with the collection, so every query node
    /// that serves it (now or after a restart) builds it for its segments.
    async fn create_scalar_index(&self, req: CreateScalarIndex) -> Result<Empty> {
        let mut catalog = self.catalog.lock().await;
        let info = catalog.by_name(&req.collection)?.clone();
        let Some(updated) = catalog::with_scalar_index(&info, req.index)? else {
            return Ok(Empty {});
        };
        self.meta.put(&keys::collection(&req.collection), &updated).await?;
        catalog.collections.insert(req.collection.clone(), updated);
        drop(catalog);
        tracing::info!(collection = %req.collection, "scalar index defined; query nodes build it as they load");
        self.publish_change(info.id).await;
        self.reconcile.notify_one();
        Ok(Empty {})
    }

    /// Drops a released collection's scalar index `name` (Milvus' rule: release first).
    async fn drop_scalar_index(&self, req: DropScalarIndex) -> Result<Empty> {
        let mut catalog = self.catalog.lock().await;
        let info = catalog.by_name(&req.collection)?.clone();
        if catalog.layouts.get(&info.id).is_some_and(|l| !l.released) {
            return Err(Error::InvalidArgument(format!(
                "index cannot be dropped, collection is loaded, please release it first (collection {:?})",
                req.collection
            )));
        }
        let mut updated = info.clone();
        updated.scalar_indexes.retain(|i| i.name != req.name);
        if updated.scalar_indexes.len() == info.scalar_indexes.len() {
            return Ok(Empty {});
        }
        self.meta.put(&keys::collection(&req.collection), &updated).await?;
        catalog.collections.insert(req.collection.clone(), updated);
        drop(catalog);
        tracing::info!(collection = %req.collection, index = %req.name, "scalar index dropped");
        self.publish_change(info.id).await;
        Ok(Empty {})
    }

    async fn segment_flushed(&self, req: SegmentFlushed) -> Result<Empty> {
        let seg = req.segment;
        let mut catalog = self.catalog.lock().await;
        let Some(existing) = catalog.segments.get(&seg.collection) else {
            return Err(Error::CollectionNotFound(format!("collection id {} no longer exists", seg.collection)));
        };
        // Rows are never written twice: a segment overlapping another of its shard in log
        // positions comes from a data node that lost its shard (a hand-over raced with it).
        if let Some(other) = existing.values().find(|s| {
            s.id != seg.id && s.shard == seg.shard && s.start_seq <= seg.end_seq && seg.start_seq <= s.end_seq
        }) {
            tracing::warn!(
                segment = seg.id,
                other = other.id,
                shard = seg.shard,
                "refused a flushed segment overlapping an existing one"
            );
            return Err(Error::Stale(format!(
                "segment {} covers log positions {}..={} of shard {}, which segment {} already holds; \
                 this data node no longer owns the shard",
                seg.id, seg.start_seq, seg.end_seq, seg.shard, other.id
            )));
        }
        self.meta.put(&keys::segment(seg.collection, seg.id), &seg).await?;
        tracing::info!(segment = seg.id, collection = seg.collection, shard = seg.shard, rows = seg.rows,
            seqs = ?(seg.start_seq, seg.end_seq), "segment flushed");
        catalog.segments.entry(seg.collection).or_default().insert(seg.id, seg);
        drop(catalog);
        self.reconcile.notify_one();
        Ok(Empty {})
    }

    /// Seals what each shard of the collection holds. A shard with no data node consuming it
    /// yet (a collection created moments ago, a cluster still starting, an owner that just died
    /// and is being replaced) is waited for within the caller's budget, at most
    /// `NODE_WAIT`: a flush is safe to repeat, and "retry shortly" is the answer only once
    /// that budget is spent.
    async fn flush(&self, req: CollectionName, ctx: &RequestContext) -> Result<FlushResult> {
        let backoff = Backoff::within(node_wait(ctx), Duration::from_millis(100), Duration::from_millis(500));
        retry(
            backoff,
            |e| {
                let again = matches!(e, Error::Unavailable(_));
                if again {
                    tracing::debug!(collection = %req.name, error = %e, "flush waits for the shard's data node");
                }
                again
            },
            || self.flush_once(&req, ctx),
        )
        .await
    }

    async fn flush_once(&self, req: &CollectionName, ctx: &RequestContext) -> Result<FlushResult> {
        let (info, owners) = {
            let catalog = self.catalog.lock().await;
            let info = catalog.by_name(&req.name)?.clone();
            let owners: HashSet<String> = catalog
                .layouts
                .get(&info.id)
                .map(|l| l.shards.iter().map(|s| s.channel_owner.clone()).collect())
                .unwrap_or_default();
            (info, owners)
        };
        if owners.iter().any(String::is_empty) {
            return Err(Error::Unavailable(format!(
                "collection {:?} has a shard with no data node yet; retry shortly",
                info.schema.name
            )));
        }
        let mut segments = Vec::new();
        let bus = &self.node.shared.bus;
        for owner in owners {
            let opts = ctx.try_options(bus.default_timeout(), "flushing the next shard")?;
            let res = bus.call_node::<datanode::Flush>(owner.as_str(), req, &opts).await?;
            segments.extend(res.segments);
        }
        Ok(FlushResult { segments })
    }

    async fn distribution(&self, req: CollectionName) -> Result<Distribution> {
        let catalog = self.catalog.lock().await;
        let info = catalog.by_name(&req.name)?.clone();
        Ok(placement::distribution(&catalog, &info))
    }
}

impl Coordinator {
    /// Answers one request.
    async fn dispatch(self: &Rc<Self>, req: CoordRequest, ctx: &RequestContext) -> Result<Vec<u8>> {
        self.leadership.check(&self.node)?;
        match req {
            CoordRequest::CreateCollection(r) => r.serve(|r| self.create_collection(r)).await,
            CoordRequest::DropCollection(r) => r.serve(|r| self.drop_collection(r)).await,
            CoordRequest::DescribeCollection(r) => r.serve(|r| self.describe(r)).await,
            CoordRequest::ListCollections(r) => r.serve(|_| self.list()).await,
            CoordRequest::CreateIndex(r) => r.serve(|r| self.create_index(r)).await,
            CoordRequest::DropIndex(r) => r.serve(|r| self.drop_index(r)).await,
            CoordRequest::CreateScalarIndex(r) => r.serve(|r| self.create_scalar_index(r)).await,
            CoordRequest::DropScalarIndex(r) => r.serve(|r| self.drop_scalar_index(r)).await,
            CoordRequest::LoadCollection(r) => r.serve(|r| self.load_collection(r, ctx)).await,
            CoordRequest::ReleaseCollection(r) => r.serve(|r| self.release_collection(r)).await,
            CoordRequest::CreatePartition(r) => r.serve(|r| self.create_partition(r)).await,
            CoordRequest::DropPartition(r) => r.serve(|r| self.drop_partition(r)).await,
            CoordRequest::LoadPartitions(r) => r.serve(|r| self.load_partitions(r, ctx)).await,
            CoordRequest::ReleasePartitions(r) => r.serve(|r| self.release_partitions(r)).await,
            CoordRequest::Flush(r) => r.serve(|r| self.flush(r, ctx)).await,
            CoordRequest::GetDistribution(r) => r.serve(|r| self.distribution(r)).await,
            CoordRequest::AllocTs(r) => {
                r.serve(
                    |r: Alloc| async move { Ok(AllocRange { start: self.alloc_ts(r.count).await?, count: r.count }) },
                )
                .await
            }
            CoordRequest::AllocIds(r) => {
                r.serve(|r: Alloc| async move {
                    if r.count == 0 || r.count > 10_000_000 {
                        return Err(Error::InvalidArgument(format!("cannot allocate {} ids", r.count)));
                    }
                    Ok(AllocRange { start: self.alloc_ids(r.count).await?, count: r.count })
                })
                .await
            }
            CoordRequest::SegmentFlushed(r) => r.serve(|r| self.segment_flushed(r)).await,
            CoordRequest::PluginLoad(r) => r.serve(|r| self.plugin_load(r)).await,
            CoordRequest::PluginActivate(r) => r.serve(|r| self.plugin_activate(r)).await,
            CoordRequest::PluginRollback(r) => r.serve(|r| self.plugin_rollback(r)).await,
            CoordRequest::PluginList(r) => r.serve(|_| self.plugin_list()).await,
            CoordRequest::Scale(r) => r.serve(|r| self.scale(r)).await,
            CoordRequest::Scaling(r) => r.serve(|_| self.scaling_status()).await,
            CoordRequest::Events(r) => r.serve(|_| async { Ok(self.scaler.events()) }).await,
            CoordRequest::Autoscale(r) => r.serve(|r| self.autoscale(r)).await,
            CoordRequest::Autoscaling(r) => r.serve(|_| self.autoscaling_status()).await,
            CoordRequest::Idling(r) => r.serve(|_| async { Ok(self.idling_status()) }).await,
            CoordRequest::Wake(r) => r.serve(|_| self.wake()).await,
            CoordRequest::Compact(r) => r.serve(|r| self.compact(r)).await,
            CoordRequest::CompactionState(r) => r.serve(|r| async move { self.compaction_state(r) }).await,
        }
    }
}

impl RoleHandler for Coordinator {
    type Request = CoordRequest;

    fn handle(self: Rc<Self>, req: CoordRequest, ctx: RequestContext) -> LocalBoxFuture<'static, Result<Vec<u8>>> {
        Box::pin(async move { self.dispatch(req, &ctx).await })
    }

    fn start(self: Rc<Self>) {
        let me = self.clone();
        self.node.spawn_loop("lease", async move { me.leadership.keep(&me.node).await });
        let me = self.clone();
        self.node.spawn_loop("reconcile", async move { me.reconcile_loop().await });
        let me = self.clone();
        self.node.spawn_loop("balance", async move { me.balance_loop().await });
        let me = self.clone();
        self.node.spawn_loop("scaler", async move { me.scaler_loop().await });
        let me = self.clone();
        self.node.spawn_loop("autoscaler", async move { me.autoscale_loop().await });
        let me = self.clone();
        self.node.spawn_loop("idling", async move { me.idling_loop().await });
        let me = self.clone();
        self.node.spawn_loop("compaction", async move { me.compaction_loop().await });
        let me = self.clone();
        self.node.spawn_loop("gc", async move { me.gc_loop().await });
    }

    fn drain(self: Rc<Self>) -> LocalBoxFuture<'static, ()> {
        Box::pin(async move { self.leadership.release(&self.node).await })
    }

    fn heartbeat(&self) -> (u32, String) {
        match self.catalog.try_lock() {
            Ok(c) => {
                let verdicts = self.membership.verdicts();
                let count = |l| verdicts.values().filter(|&&v| v == l).count();
                let detail = format!(
                    "active (epoch {}); {} collections; members {} alive, {} suspect, {} dead",
                    self.leadership.epoch,
                    c.collections.len(),
                    count(quiver_policy::discovery::Liveness::Alive),
                    count(quiver_policy::discovery::Liveness::Suspect),
                    count(quiver_policy::discovery::Liveness::Dead),
                );
                export_cluster_gauges(&c);
                (c.segments.values().map(|s| s.len() as u32).sum(), detail)
            }
            Err(_) => (0, String::new()),
        }
    }
}

/// The cluster-wide gauges only the active coordinator knows (a standby exports zeros, so
/// `max` over coordinators is the active one's): replica groups wanted, formed and degraded,
/// and the index backlog.
///
/// A group is degraded when a sealed segment of its collection has no confirmed holder among
/// the group's nodes, or one of its shards has no confirmed leader; groups wanted but not
/// formed (too few query nodes) count as degraded too.
fn export_cluster_gauges(c: &Catalog) {
    let (mut wanted, mut formed, mut degraded) = (0usize, 0usize, 0usize);
    for (collection, layout) in &c.layouts {
        if layout.released {
            continue;
        }
        let want = layout.replica_number.max(1) as usize;
        wanted += want;
        formed += layout.replicas.len();
        degraded += want.saturating_sub(layout.replicas.len());
        let sealed: Vec<u64> = c
            .segments
            .get(collection)
            .map(|s| s.values().filter(|s| s.state != SegmentState::Dropped).map(|s| s.id).collect())
            .unwrap_or_default();
        for group in &layout.replicas {
            let held = |segment: &u64| {
                layout.holders.get(segment).is_some_and(|holders| holders.iter().any(|h| group.nodes.contains(h)))
            };
            let leaders_ok = group.leaders.iter().all(|l| !l.node.is_empty() && l.confirmed);
            if !leaders_ok || !sealed.iter().all(held) {
                degraded += 1;
            }
        }
    }
    let indexed: HashSet<u64> = c.collections.values().filter(|i| i.index.is_some()).map(|i| i.id).collect();
    let backlog = c
        .segments
        .iter()
        .filter(|(collection, _)| indexed.contains(collection))
        .flat_map(|(_, segments)| segments.values())
        .filter(|s| s.state == SegmentState::Flushed)
        .count();
    set_cluster_gauges(wanted as f64, formed as f64, degraded as f64, backlog as f64);
}

/// Sets the active coordinator's cluster gauges (zeros from a standby).
pub(crate) fn set_cluster_gauges(wanted: f64, formed: f64, degraded: f64, backlog: f64) {
    metrics::gauge!("quiver_replica_groups_wanted").set(wanted);
    metrics::gauge!("quiver_replica_groups").set(formed);
    metrics::gauge!("quiver_replica_groups_degraded").set(degraded);
    metrics::gauge!("quiver_index_backlog_segments").set(backlog);
}
