//! The query node: loads sealed segments and their indexes from the object store, reads the
//! shard logs (deletes always; growing rows for the shards it leads), and answers its share
//! of searches and gets. What it holds is set by the coordinator: every `load` message is the
//! node's full desired state for one collection, applied idempotently.
//!
//! - `shard.rs`: the shard log reader, growing rows, deletes, consistency waits.
//! - `search.rs`: top-k search and get over segments and growing rows.
//! - `pool.rs`: the search pool (`querynode.search_threads`) searches run their pieces on.
//!
//! Searches, gets and queries are served on the process's I/O runtime ([`ConcurrentReads`]),
//! side by side; loads, releases and hand-off events on the actor. A quick search runs in the
//! task serving it; others on a blocking thread that hands its pieces
//! (segments, row ranges, query blocks) to the pool and merges them, so concurrent requests
//! share the pool's threads.

mod pool;
mod search;
mod shard;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::future::{BoxFuture, LocalBoxFuture};
use futures::StreamExt;
use quiver_runtime::bus::{now_ms, RequestContext};
use quiver_runtime::{Error, Result, RoleContext};
use quiver_schemas::protocol::QueryNodeRequest;
use quiver_schemas::{
    CollectionInfo, Empty, GetResults, LoadSegments, MetricType, NodeGet, NodeQuery, NodeSearch, NodeSearchResults,
    ReleaseSegments, ScalarIndex, SegmentInfo, ShardPlacement, ShardView,
};
use tracing::Instrument;

use pool::SearchPool;
use search::Sealed;
use shard::{Shard, ShardData};

use crate::filter::SegmentIndexes;
use crate::limits::ReadLimits;
use crate::node::{start_role, ConcurrentHandler, Node, RoleHandler};
use crate::rows::decode_segment;
use crate::vector::VectorIndex;

/// Segments a loading query node fetches from the object store at once.
const LOAD_CONCURRENCY: usize = 4;

/// The metric a collection's vectors are compared with.
pub fn metric_of(info: &CollectionInfo) -> MetricType {
    info.index.as_ref().map_or(crate::DEFAULT_METRIC, |i| i.metric)
}

/// The scalar index definitions of a collection and its primary key's name, for
/// [`SegmentIndexes::build`].
fn scalar_definitions(info: &CollectionInfo) -> (Vec<ScalarIndex>, String) {
    (info.scalar_indexes.clone(), info.primary_field().map(|f| f.name.clone()).unwrap_or_default())
}

struct Loaded {
    info: CollectionInfo,
    segments: HashMap<u64, Arc<Sealed>>,
    shards: HashMap<u32, Shard>,
    /// For each shard this node leads: the coordinator's list of its served sealed segments,
    /// returned with every search (MISSION S2.6).
    views: HashMap<u32, ShardView>,
}

/// The query node's state, shared by its actor (loads, releases, hand-off events, controls) and
/// the reads (searches, gets, queries), which run on the I/O runtime's threads side by side.
pub struct QueryNode {
    node: Node,
    collections: RwLock<HashMap<u64, Loaded>>,
    /// Searches, gets and queries being served, reported with search replies (S2.7).
    in_flight: AtomicU32,
    /// Serialises `load` per node so concurrent loads never race on the same collection.
    loading: tokio::sync::Mutex<()>,
    /// Where searches run (`querynode.search_threads`).
    pool: Arc<SearchPool>,
}

/// Starts the query node role on the current arbiter.
pub fn start(rc: RoleContext) {
    start_role(
        rc,
        Box::new(|node| {
            Box::pin(async move {
                let config = &node.shared.config.querynode;
                crate::vector::set_faiss_threads(config.faiss_threads.max(1));
                let pool = Arc::new(SearchPool::new(config.search_threads)?);
                tracing::info!(threads = pool.threads(), "search pool started");
                Ok(QueryNodeRole(Arc::new(QueryNode {
                    node,
                    collections: Default::default(),
                    in_flight: Default::default(),
                    loading: Default::default(),
                    pool,
                })))
            })
        }),
    );
}

/// The role's handler: the state, shared with the reads served off the arbiter.
struct QueryNodeRole(Arc<QueryNode>);

impl QueryNode {
    /// The loaded collections, to read (a panic while they were written leaves them as they
    /// were: every write is one step that keeps them consistent).
    fn collections(&self) -> RwLockReadGuard<'_, HashMap<u64, Loaded>> {
        self.collections.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn collections_mut(&self) -> RwLockWriteGuard<'_, HashMap<u64, Loaded>> {
        self.collections.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn fetch_segment(&self, seg: &SegmentInfo, metric: MetricType, info: &CollectionInfo) -> Result<Sealed> {
        let objects = &self.node.shared.objects;
        let data = objects.get(&seg.data_path).await?;
        let index = match &seg.index_path {
            Some(p) => Some(objects.get(p).await?),
            None => None,
        };
        let seg = seg.clone();
        let (defined, pk) = scalar_definitions(info);
        tokio::task::spawn_blocking(move || {
            let (_, rows) = decode_segment(&data)?;
            let index = match index {
                Some(bytes) => Some(VectorIndex::from_bytes(&bytes).map_err(|e| Error::Internal(e.to_string()))?),
                None => None,
            };
            let sealed = Sealed::new(seg, rows, index, metric)?;
            sealed.set_scalar_indexes(SegmentIndexes::build(&sealed.rows, &defined, &pk));
            Ok(sealed)
        })
        .await
        .map_err(Error::internal)?
    }

    /// Applies the node's desired state for one collection. Shards are opened first (a
    /// segment is only served with its shard's deletes), then missing segments are fetched a
    /// few at a time and each is served as soon as it is in: a restarted node with hundreds of
    /// segments to load answers for what it has within seconds instead of refusing the whole
    /// collection until the last one is in (readers fail over to another replica for the rest).
    async fn load(&self, req: LoadSegments) -> Result<Empty> {
        let _serial = self.loading.lock().await;
        let info = req.collection.clone();
        let metric = metric_of(&info);
        let wanted: HashSet<u64> = req.segments.iter().map(|s| s.id).collect();
        let missing: Vec<&SegmentInfo> = {
            let mut collections = self.collections_mut();
            let loaded = collections.entry(info.id).or_insert_with(|| Loaded {
                info: info.clone(),
                segments: HashMap::new(),
                shards: HashMap::new(),
                views: HashMap::new(),
            });
            loaded.info = info.clone();
            loaded.views = req.shard_views.iter().map(|v| (v.shard, v.clone())).collect();
            loaded.segments.retain(|id, _| wanted.contains(id));
            // Shards: every shard we hold (or will hold) a segment of, for deletes, plus the
            // ones we lead.
            let leads: HashMap<u32, &ShardPlacement> = req.lead_shards.iter().map(|l| (l.shard, l)).collect();
            let mut needed: HashSet<u32> = req.segments.iter().map(|s| s.shard).collect();
            needed.extend(leads.keys().copied());
            loaded.shards.retain(|id, s| needed.contains(id) && s.data.leader == leads.contains_key(id));
            for shard in needed {
                let lead = leads.get(&shard);
                match loaded.shards.get(&shard) {
                    Some(existing) => {
                        existing.data.set_metric(metric)?;
                        if let Some(l) = lead {
                            existing.data.advance_sealed(l.sealed_seq)?;
                        }
                    }
                    None => {
                        let sealed = lead.map_or(0, |l| l.sealed_seq);
                        let floor = req.delete_floors.iter().find(|f| f.shard == shard).map_or(0, |f| f.seq);
                        let s = Shard::open(&self.node, &info, shard, metric, lead.is_some(), sealed, floor);
                        loaded.shards.insert(shard, s);
                    }
                }
            }
            // Fetch what is missing or needs its index; a segment searched by brute force
            // must also use the collection's current metric.
            req.segments
                .iter()
                .filter(|seg| {
                    !loaded.segments.get(&seg.id).is_some_and(|s| {
                        s.info.index_path == seg.index_path && s.flat.as_ref().is_none_or(|f| f.metric() == metric)
                    })
                })
                .collect()
        };
        // Segments kept whose scalar indexes were built for other definitions (an index was
        // created or dropped since): rebuilt off the arbiter, served meanwhile as they are.
        let refetched: HashSet<u64> = missing.iter().map(|s| s.id).collect();
        let restale: Vec<Arc<Sealed>> = self
            .collections()
            .get(&info.id)
            .map(|c| {
                c.segments
                    .iter()
                    .filter(|(id, s)| !refetched.contains(id) && !s.scalar_indexes().built_for(&info.scalar_indexes))
                    .map(|(_, s)| s.clone())
                    .collect()
            })
            .unwrap_or_default();
        if !restale.is_empty() {
            let (defined, pk) = scalar_definitions(&info);
            tokio::task::spawn_blocking(move || {
                for seg in restale {
                    seg.set_scalar_indexes(SegmentIndexes::build(&seg.rows, &defined, &pk));
                }
            })
            .await
            .map_err(Error::internal)?;
        }
        // Only what fits in the memory budget (the node's size) is fetched: each segment once
        // it is served (its rows, and a copy of its vectors for brute force or its index: about
        // twice its size) and while it is fetched (the encoded object on top), checked against
        // the memory in use just before it starts. The rest is refused, an out-of-memory event
        // for the autoscaler (MISSION S3.3), once what fits is served.
        let in_flight = std::cell::Cell::new(0u64);
        let refused: std::cell::RefCell<Option<Error>> = std::cell::RefCell::new(None);
        let mut fetches = futures::stream::iter(missing)
            .map(|seg| {
                let (in_flight, refused, info) = (&in_flight, &refused, &info);
                async move {
                    if refused.borrow().is_some() {
                        return Ok(None);
                    }
                    let need = seg.mem_size.saturating_mul(3);
                    let what = format!("loading segment {} of collection {:?}", seg.id, info.schema.name);
                    if let Err(e) = self.node.shared.memory.reserve(&what, need, in_flight.get()) {
                        *refused.borrow_mut() = Some(e);
                        return Ok(None);
                    }
                    in_flight.set(in_flight.get() + need);
                    let fetched = self.fetch_segment(seg, metric, info).await;
                    in_flight.set(in_flight.get() - need);
                    fetched.map(Some)
                }
            })
            .buffer_unordered(LOAD_CONCURRENCY);
        while let Some(fetched) = fetches.next().await {
            let Some(seg) = fetched? else { continue };
            let seg = Arc::new(seg);
            // Released meanwhile: nothing to add it to.
            if let Some(loaded) = self.collections_mut().get_mut(&info.id) {
                loaded.segments.insert(seg.info.id, seg);
            }
        }
        drop(fetches);
        let refused = refused.into_inner();
        let mut collections = self.collections_mut();
        if collections.get(&info.id).is_some_and(|c| c.segments.is_empty() && c.shards.is_empty()) {
            collections.remove(&info.id);
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(Empty {}),
        }
    }

    fn release(&self, req: ReleaseSegments) -> Result<Empty> {
        let mut collections = self.collections_mut();
        if req.all {
            collections.remove(&req.collection);
        } else if let Some(c) = collections.get_mut(&req.collection) {
            for id in &req.segments {
                c.segments.remove(id);
            }
        }
        Ok(Empty {})
    }

    /// Resolves the sources a request names, or explains why this node cannot serve it.
    #[allow(clippy::type_complexity)]
    fn sources(
        &self,
        collection: u64,
        segments: &[u64],
        growing: &[ShardPlacement],
    ) -> Result<(CollectionInfo, Vec<(Arc<Sealed>, Arc<ShardData>)>, Vec<(Arc<ShardData>, u64)>)> {
        let collections = self.collections();
        let loaded = collections
            .get(&collection)
            .ok_or_else(|| Error::Stale(format!("collection {collection} is not loaded on node {}", self.node.id)))?;
        let mut segs = Vec::with_capacity(segments.len());
        for id in segments {
            let seg = loaded
                .segments
                .get(id)
                .ok_or_else(|| Error::Stale(format!("segment {id} is not loaded on node {}", self.node.id)))?;
            let shard = loaded.shards.get(&seg.info.shard).ok_or_else(|| {
                Error::Stale(format!("shard {} is not open on node {}", seg.info.shard, self.node.id))
            })?;
            segs.push((seg.clone(), shard.data.clone()));
        }
        let mut grow = Vec::with_capacity(growing.len());
        for g in growing {
            let shard = loaded.shards.get(&g.shard).filter(|s| s.data.leader).ok_or_else(|| {
                Error::Stale(format!(
                    "node {} does not lead shard {} of collection {collection}",
                    self.node.id, g.shard
                ))
            })?;
            // Checked again under the growing rows' lock once the log is read far enough.
            shard.data.check_view(g.sealed_seq)?;
            grow.push((shard.data.clone(), g.sealed_seq));
        }
        Ok((loaded.info.clone(), segs, grow))
    }

    /// Waits until every shard read has applied the log far enough for the request's
    /// consistency, within the caller's deadline.
    #[allow(clippy::too_many_arguments)]
    async fn wait_shards(
        &self,
        segs: &[(Arc<Sealed>, Arc<ShardData>)],
        grow: &[(Arc<ShardData>, u64)],
        consistency: quiver_schemas::Consistency,
        guarantee_ts: u64,
        arrived: u64,
        ctx: &RequestContext,
    ) -> Result<()> {
        let wait = async {
            let mut seen = HashSet::new();
            let shards = segs.iter().map(|(_, s)| s).chain(grow.iter().map(|(s, _)| s));
            for shard in shards {
                if seen.insert(shard.shard) {
                    shard.wait_consistent(&self.node, consistency, guarantee_ts, arrived).await?;
                }
            }
            Ok(())
        };
        if consistency == quiver_schemas::Consistency::Eventually {
            return ctx.check(format_args!("the read started on {}", self.node.id));
        }
        let span =
            tracing::debug_span!("wait_consistency", consistency = ?consistency, sources = segs.len() + grow.len());
        let started = std::time::Instant::now();
        let waited = ctx.bound("the wait for consistency", wait).instrument(span).await;
        metrics::histogram!("quiver_querynode_consistency_wait_seconds").record(started.elapsed().as_secs_f64());
        waited?;
        // The caller may have given up while we waited: then the search itself is not run.
        ctx.check(format_args!("the read started on {}", self.node.id))
    }

    fn limits(&self) -> ReadLimits {
        ReadLimits::of(&self.node.shared.config)
    }

    async fn search(&self, req: NodeSearch, ctx: &RequestContext) -> Result<NodeSearchResults> {
        let arrived = now_ms();
        self.node.shared.memory.admit_read("a search")?;
        let (info, segments, growing) = self.sources(req.collection, &req.segments, &req.growing)?;
        // Checked again here, before faiss reads `nq × dim` floats or `nq × top_k` results
        // are allocated: the proxy is a peer, not a guarantee.
        self.limits().check_search(&req.search, info.dim())?;
        let shards: Vec<ShardView> = {
            let collections = self.collections();
            let views = collections.get(&req.collection).map(|c| &c.views);
            req.growing.iter().filter_map(|g| views.and_then(|v| v.get(&g.shard)).cloned()).collect()
        };
        self.wait_shards(&segments, &growing, req.search.consistency, req.guarantee_ts, arrived, ctx).await?;
        let filter = search::Filter::from_json(&req.filter)?;
        let mut segments = segments;
        let scope = search::Scope::narrow(&mut segments, filter.as_ref())?;
        let plan = search::SearchPlan {
            dim: req.search.dim as usize,
            k: req.search.top_k as usize,
            params: req.search.params,
            metric: metric_of(&info),
            segments,
            growing,
            output_fields: req.search.output_fields,
            queries: req.search.vectors,
            filter,
            scope,
            deadline: ctx.remaining().map(|left| std::time::Instant::now() + left),
        };
        let pool = self.pool.clone();
        // A quick search (one HNSW segment, a few queries: bounded work, a fraction of a
        // millisecond) runs in the task serving it: the hand-off to a blocking thread and back
        // would cost about as much as the search (measured: `block_in_place`, which moves the
        // thread's other tasks away first, costs ~90 µs of CPU more per search than this). On
        // the I/O runtime (searches arrive there) the other threads keep serving meanwhile; on
        // the actor's arbiter only while the node serves nothing else. Anything bigger runs on a
        // blocking thread and the pool.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let quick = search::is_quick(&plan);
        let (found, rows_searched) = if quick && multi_thread {
            metrics::counter!("quiver_querynode_inline_searches_total").increment(1);
            search::run_search(&plan, &pool)?
        } else if quick && self.in_flight.load(Ordering::Relaxed) <= 1 {
            metrics::counter!("quiver_querynode_inline_searches_total").increment(1);
            search::run_search(&plan, &pool)?
        } else {
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || span.in_scope(|| search::run_search(&plan, &pool)))
                .await
                .map_err(Error::internal)??
        };
        Ok(NodeSearchResults {
            results: found.results,
            shards,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            rows_searched: rows_searched as u64,
        })
    }

    async fn get(&self, req: NodeGet, ctx: &RequestContext) -> Result<GetResults> {
        let arrived = now_ms();
        self.node.shared.memory.admit_read("a get")?;
        let (info, segments, growing) = self.sources(req.collection, &req.segments, &req.growing)?;
        self.limits().check_rows(req.get.pks.len() as u64, Some(info.dim()), "a get")?;
        self.wait_shards(&segments, &growing, req.get.consistency, req.guarantee_ts, arrived, ctx).await?;
        let dim = info.dim() as usize;
        let (rows, seqs) = tokio::task::spawn_blocking(move || {
            search::run_get(&req.get.pks, &req.get.output_fields, &segments, &growing, dim, &req.partitions)
        })
        .await
        .map_err(Error::internal)??;
        Ok(GetResults { rows, seqs })
    }

    async fn query(&self, req: NodeQuery, ctx: &RequestContext) -> Result<GetResults> {
        let arrived = now_ms();
        self.node.shared.memory.admit_read("a query")?;
        let (info, segments, growing) = self.sources(req.collection, &req.segments, &req.growing)?;
        let limits = self.limits();
        limits.check_query(&req.query)?;
        let vector = info.vector_field().map(|f| f.name.as_str()).unwrap_or_default();
        let with_vectors = req.query.output_fields.iter().any(|f| f == vector);
        let count = req.query.output_fields.len() == 1 && req.query.output_fields[0] == quiver_schemas::COUNT_STAR;
        // A row query is bounded even when it names no limit (the proxy always names one).
        let rows = match req.query.limit.saturating_add(req.query.offset) {
            0 if !count => u64::from(limits.max_top_k) + 1,
            rows => rows,
        };
        if !count {
            limits.check_rows(rows, with_vectors.then_some(info.dim()), "a query")?;
        }
        self.wait_shards(&segments, &growing, req.query.consistency, req.guarantee_ts, arrived, ctx).await?;
        let filter = search::Filter::from_json(&req.filter)?;
        let mut segments = segments;
        let scope = search::Scope::narrow(&mut segments, filter.as_ref())?;
        let q = search::QueryPlan {
            filter,
            scope,
            output_fields: req.query.output_fields,
            limit: rows,
            dim: info.dim() as usize,
            vector_field: info.vector_field().map(|f| f.name.clone()).unwrap_or_default(),
            segments,
            growing,
        };
        let (rows, seqs) =
            tokio::task::spawn_blocking(move || search::run_query(&q)).await.map_err(Error::internal)??;
        Ok(GetResults { rows, seqs })
    }
}

/// Counts a request being served until dropped.
struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    fn new(count: &'a AtomicU32) -> InFlight<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl QueryNode {
    /// Serves one request (on the actor).
    async fn serve(&self, req: QueryNodeRequest, ctx: &RequestContext) -> Result<Vec<u8>> {
        match req {
            QueryNodeRequest::Load(r) => r.serve(|r| self.load(r)).await,
            QueryNodeRequest::Release(r) => r.serve(|r| async move { self.release(r) }).await,
            read => self.serve_read(read, ctx).await,
        }
    }

    /// Serves a search, get or query, on the actor or on the I/O runtime. Loads and releases
    /// run only on the actor (they start and stop shard log readers, which run on its arbiter).
    async fn serve_read(&self, req: QueryNodeRequest, ctx: &RequestContext) -> Result<Vec<u8>> {
        let _serving = InFlight::new(&self.in_flight);
        match req {
            QueryNodeRequest::Search(r) => r.serve(|r| self.search(r, ctx)).await,
            QueryNodeRequest::Get(r) => r.serve(|r| self.get(r, ctx)).await,
            QueryNodeRequest::Query(r) => r.serve(|r| self.query(r, ctx)).await,
            QueryNodeRequest::Load(_) | QueryNodeRequest::Release(_) => {
                Err(Error::Internal("loads and releases are served by the query node's actor".into()))
            }
        }
    }
}

/// Searches, gets and queries, served on the I/O runtime where they arrive (in memory from the
/// proxy of this process, or from NATS): the node's state is shared and locked briefly, the
/// search itself runs as [`QueryNode::search`] says.
struct ConcurrentReads(Arc<QueryNode>);

impl ConcurrentHandler<QueryNodeRequest> for ConcurrentReads {
    fn serves(&self, method: &str) -> bool {
        use quiver_schemas::protocol::querynode;
        use quiver_schemas::protocol::Call;
        [querynode::Search::METHOD, querynode::Get::METHOD, querynode::Query::METHOD].contains(&method)
    }

    fn handle(&self, req: QueryNodeRequest, ctx: RequestContext) -> BoxFuture<'static, Result<Vec<u8>>> {
        let qn = self.0.clone();
        Box::pin(async move { qn.serve_read(req, &ctx).await })
    }
}

/// Whether node `me` releases the segments of a hand-off event: it is the offline node, and the
/// event is not a fail-over (whose offline node is gone: `released_ms` is set at once; a node
/// restarted under the same id must keep what it just loaded).
fn releases(change: &quiver_schemas::SegmentChangeInfo, me: &str) -> bool {
    change.offline_node_id == me && change.online_node_id != me && change.released_ms == 0
}

impl RoleHandler for QueryNodeRole {
    type Request = QueryNodeRequest;

    fn concurrent(&self) -> Option<Arc<dyn ConcurrentHandler<QueryNodeRequest>>> {
        Some(Arc::new(ConcurrentReads(self.0.clone())))
    }

    /// MISSION S1.4: the query channels, where the coordinator announces hand-offs.
    fn events(&self, node: &Node) -> Vec<String> {
        vec![node.subjects().query_channels()]
    }

    /// A `sealedSegmentChangeInfo` naming this node as the offline one: the online node serves
    /// the segments now and proxies have moved there, so they are released here at once (the
    /// coordinator's next load for this node says the same; releasing twice is harmless).
    fn event(self: Rc<Self>, msg: async_nats::Message) -> LocalBoxFuture<'static, ()> {
        use quiver_schemas::Wire;
        match quiver_schemas::SegmentChangeInfo::from_bytes(&msg.payload) {
            Ok(change) if releases(&change, &self.0.node.id) => {
                tracing::info!(
                    collection = change.collection,
                    segments = ?change.offline_segment_ids,
                    online = %change.online_node_id,
                    "hand-off complete: releasing"
                );
                let release =
                    ReleaseSegments { collection: change.collection, segments: change.offline_segment_ids, all: false };
                let _ = self.0.release(release);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(subject = %msg.subject, error = %e, "ignored a malformed query channel event"),
        }
        Box::pin(async {})
    }

    fn handle(self: Rc<Self>, req: QueryNodeRequest, ctx: RequestContext) -> LocalBoxFuture<'static, Result<Vec<u8>>> {
        Box::pin(async move { self.0.serve(req, &ctx).await })
    }

    /// The coordinator sees the node draining in its heartbeat and moves its segments and
    /// shard leads to other nodes of its replica group, load first, then release here. Done
    /// when the node holds nothing, or when no other query node serves (nothing to hand to).
    fn drain(self: Rc<Self>) -> LocalBoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                if self.0.collections().is_empty() {
                    tracing::info!(node = %self.0.node.id, "every segment and shard lead handed off");
                    return;
                }
                if !self.0.node.has_serving_peer().await {
                    tracing::warn!(node = %self.0.node.id, "no other query node serves; stopping without a hand-off");
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    }

    fn heartbeat(&self) -> (u32, String) {
        let collections = self.0.collections();
        let segments: usize = collections.values().map(|c| c.segments.len()).sum();
        let growing: usize = collections
            .values()
            .flat_map(|c| c.shards.values())
            .map(|s| s.data.growing.read().map_or(0, |g| g.rows.len()))
            .sum();
        let sealed: usize = collections.values().flat_map(|c| c.segments.values()).map(|s| s.rows.len()).sum();
        metrics::gauge!("quiver_querynode_rows", "kind" => "sealed").set(sealed as f64);
        metrics::gauge!("quiver_querynode_rows", "kind" => "growing").set(growing as f64);
        let leads: usize = collections.values().flat_map(|c| c.shards.values()).filter(|s| s.data.leader).count();
        let mut detail = format!("{} collections, leads {leads} shards, {growing} growing rows", collections.len());
        if let Some(note) = crate::dml::quarantine_note() {
            detail.push_str(&note);
        }
        (segments as u32, detail)
    }
}
