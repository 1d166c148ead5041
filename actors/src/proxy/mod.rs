//! The proxy: the native NATS API (`quiver.<cluster>.api.*`, all proxies in one queue group),
//! request validation, the write path into the DML log and scatter/gather reads. Stateless
//! apart from a cache of serving layouts, invalidated by the coordinator's change events.
//!
//! - `validate.rs`: checks on inserts, searches and keys.
//! - `write.rs`: insert and delete.
//! - `read.rs`: search and get, with routing, retries and the top-k merge.
//! - `load.rs`: per-node in-flight and latency figures for the router.
//! - `reply.rs`: checks on the replies of query nodes and the coordinator, where they arrive.
//! - `partitions.rs`: the partition a write goes to, the partitions a read covers.
//! - `quota.rs`: inserts refused while a query node serving the collection is over its memory mark.
//! - `admin.rs`: the HTTP admin API (`/v1/roles`, `/v1/status`, `/v1/events`).

mod admin;
mod grants;
mod idle;
mod load;
pub mod milvus;
mod partitions;
mod quota;
mod read;
mod reply;
mod slow;
pub(crate) mod validate;
mod write;

pub use idle::last_request_ms;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Message;
use dashmap::DashMap;
use futures::future::{BoxFuture, LocalBoxFuture};
use quiver_policy::router::RouteRequest;
use quiver_runtime::bus::RequestContext;
use quiver_runtime::{Error, Result, RoleContext};

use quiver_schemas::protocol::{coord, ApiRequest, QueueCall};
use quiver_schemas::{
    AutoscaleRequest, AutoscaleStatus, ClusterEvents, ClusterStatus, CollectionInfo, CollectionName, Distribution,
    Empty, LoadCollection, ScaleReply, ScaleRequest, ScalingStatus, Subjects,
};

pub use read::merge;
pub use validate::shard_of;

use crate::node::{start_role, ConcurrentHandler, Node, RoleHandler};

/// Longest one try of a layout fetch waits for the coordinator.
const LAYOUT_TRY: Duration = Duration::from_secs(2);

struct Cached {
    dist: Arc<Distribution>,
    fetched: Instant,
}

pub struct Proxy {
    node: Node,
    layouts: DashMap<String, Cached>,
    policies: crate::policies::ProxyPolicies,
    /// Searches routed so far (the router's `sequence`).
    sequence: AtomicU64,
    load: load::NodeLoads,
    /// Until when the cluster is known not to idle (`idle.rs`).
    awake_until: idle::AwakeCache,
    /// Timestamp and id blocks for writes (`grants.rs`).
    grants: grants::Grants,
    /// The last slow searches, step by step (`slow.rs`).
    slow: slow::SlowSearches,
    /// Query nodes over their memory mark (`quota.rs`).
    quota: quota::MemoryQuota,
}

/// The role: the proxy's state (shared with the tasks of the Milvus gRPC server and the HTTP
/// admin API) and the switches that stop those servers when the role stops or restarts.
struct ProxyRole {
    proxy: Arc<Proxy>,
    grpc: Server,
    http: Server,
    /// The loop keeping `proxy.quota` current (stopped with the role).
    quota: RefCell<Option<tokio::task::JoinHandle<()>>>,
}

/// A server the role runs beside the NATS API (gRPC, HTTP): how to stop it, and how to know it
/// has stopped (after its graceful shutdown).
#[derive(Default)]
struct Server {
    stop: RefCell<Option<tokio::sync::oneshot::Sender<()>>>,
    done: RefCell<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl Server {
    /// Runs `serve(stopped)` as one of the node's loops on the I/O runtime (its connections
    /// are served on every thread of it); `serve` returns once `stopped` fires and its
    /// connections are finished.
    fn start<F, Fut>(&self, node: &Node, name: &'static str, serve: F)
    where
        F: FnOnce(tokio::sync::oneshot::Receiver<()>) -> Fut,
        Fut: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (done, finished) = tokio::sync::oneshot::channel();
        *self.stop.borrow_mut() = Some(stop);
        *self.done.borrow_mut() = Some(finished);
        let served = serve(stopped);
        node.spawn_io_loop(name, async move {
            let served = served.await;
            let _ = done.send(());
            served
        });
    }

    /// Tells the server to stop and waits until it has.
    async fn stop(&self) {
        let stop = self.stop.borrow_mut().take();
        let finished = self.done.borrow_mut().take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(finished) = finished {
            let _ = finished.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.get_mut().take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the proxy role on the current arbiter.
pub fn start(rc: RoleContext) {
    start_role(
        rc,
        Box::new(|node| {
            Box::pin(async move {
                let policies = crate::policies::ProxyPolicies::start(&node).await?;
                let grants = grants::Grants::new(node.shared.bus.clone(), node.shared.io.clone());
                let proxy = Proxy {
                    node,
                    layouts: DashMap::new(),
                    policies,
                    sequence: AtomicU64::new(0),
                    load: load::NodeLoads::default(),
                    awake_until: idle::AwakeCache::default(),
                    grants,
                    slow: slow::SlowSearches::default(),
                    quota: quota::MemoryQuota::default(),
                };
                Ok(ProxyRole {
                    proxy: Arc::new(proxy),
                    grpc: Server::default(),
                    http: Server::default(),
                    quota: RefCell::new(None),
                })
            })
        }),
    );
}

impl Proxy {
    /// The cached layout of a collection, fetched when missing or older than the refresh period.
    async fn distribution(&self, name: &str, ctx: &RequestContext) -> Result<Arc<Distribution>> {
        let max_age = self.node.shared.config.proxy.distribution_refresh;
        let cached = match self.layouts.get(name) {
            Some(c) if c.fetched.elapsed() < max_age => return Ok(c.dist.clone()),
            Some(c) => Some(c.dist.clone()),
            None => None,
        };
        match (self.refresh(name, ctx).await, cached) {
            // A periodic refresh the coordinator cannot answer now (it is failing over): the
            // layout in hand goes on; a change event or a node's `Stale` answer forces the next.
            (Err(e), Some(dist))
                if matches!(e, Error::Unavailable(_) | Error::NotServed(_) | Error::Timeout { .. }) =>
            {
                tracing::debug!(collection = name, error = %e, "layout refresh failed; using the cached one");
                Ok(dist)
            }
            (result, _) => result,
        }
    }

    async fn refresh(&self, name: &str, ctx: &RequestContext) -> Result<Arc<Distribution>> {
        let req = CollectionName { name: name.to_string() };
        // A read the coordinator answers at once: tries of a few seconds, so one sent to a
        // coordinator that has just died (or been cut off, its subscription not yet dropped by
        // the server) is sent again, to the standby that took over, within the caller's deadline.
        let bus = &self.node.shared.bus;
        let try_for = bus.default_timeout().min(LAYOUT_TRY);
        let dist = grants::call_coordinator(ctx, bus.default_timeout(), || async {
            let opts = ctx.try_options(try_for, "fetching the layout")?;
            match bus.call::<coord::GetDistribution>(&req, &opts).await {
                Err(Error::Timeout { subject, .. }) if !ctx.expired() => {
                    Err(Error::NotServed(format!("no answer from {subject} within {try_for:?}")))
                }
                other => other,
            }
        })
        .await?;
        reply::check_distribution(name, &dist)?;
        let dist = Arc::new(dist);
        self.layouts.insert(name.to_string(), Cached { dist: dist.clone(), fetched: Instant::now() });
        Ok(dist)
    }

    async fn collection(&self, name: &str, ctx: &RequestContext) -> Result<CollectionInfo> {
        Ok(self.distribution(name, ctx).await?.collection.clone())
    }

    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        self.policies.router.route(request)
    }

    fn forget(&self, name: &str) {
        self.layouts.remove(name);
    }

    /// Calls the coordinator within the caller's deadline, through a fail-over to a standby
    /// (while nothing serves the coordinator's subject, the call is sent again).
    async fn forward<C: QueueCall>(&self, req: &C::Request, ctx: &RequestContext) -> Result<C::Reply> {
        let bus = &self.node.shared.bus;
        grants::call_coordinator(ctx, bus.default_timeout(), || async {
            let opts = ctx.try_options(bus.default_timeout(), C::METHOD)?;
            bus.call::<C>(req, &opts).await
        })
        .await
    }

    /// Forwards a request that changes a collection's layout, dropping the cached copy.
    async fn forward_change<C: QueueCall>(
        &self,
        name: &str,
        req: &C::Request,
        ctx: &RequestContext,
    ) -> Result<C::Reply> {
        let out = self.forward::<C>(req, ctx).await;
        self.forget(name);
        out
    }

    /// Serves a released collection again.
    async fn load(&self, name: &str, replicas: u32, ctx: &RequestContext) -> Result<Empty> {
        let req = LoadCollection { name: name.into(), replicas };
        self.forward_change::<coord::LoadCollection>(name, &req, ctx).await
    }

    /// Stops serving a collection from query nodes.
    async fn release(&self, name: &str, ctx: &RequestContext) -> Result<Empty> {
        self.forward_change::<coord::ReleaseCollection>(name, &CollectionName { name: name.into() }, ctx).await
    }

    /// Drops a released collection's vector index.
    async fn drop_index(&self, name: &str, ctx: &RequestContext) -> Result<Empty> {
        self.forward_change::<coord::DropIndex>(name, &CollectionName { name: name.into() }, ctx).await
    }

    /// Every registered node, every host agent and each role's wanted vs actual count. The
    /// registry is read directly; the counts come from the coordinator's scaler within a short
    /// budget, so a coordinator that is down or busy costs a note, never the listing (S3.9).
    async fn status(&self, ctx: &RequestContext) -> Result<ClusterStatus> {
        let registry = &self.node.shared.registry;
        let mut notes = Vec::new();
        let nodes = registry.nodes().await?;
        let budget = ctx.clone().with_cap(Duration::from_secs(2));
        let (roles, hosts) = match self.forward::<coord::Scaling>(&Empty {}, &budget).await {
            Ok(s) => (s.roles, s.hosts),
            Err(e) => {
                notes.push(format!("wanted node counts unavailable (the coordinator did not answer: {e})"));
                let hosts = registry.hosts().await.unwrap_or_else(|e| {
                    notes.push(format!("host agents unavailable: {e}"));
                    Vec::new()
                });
                (Vec::new(), hosts)
            }
        };
        Ok(ClusterStatus { cluster: self.node.shared.config.cluster.name.clone(), nodes, roles, hosts, notes })
    }

    /// `api.scale`: the coordinator's scaler validates and records the wanted count.
    async fn scale(&self, req: &ScaleRequest, ctx: &RequestContext) -> Result<ScaleReply> {
        self.forward::<coord::Scale>(req, ctx).await
    }

    /// `api.scaling`: every scalable role's wanted and actual count, and the host agents.
    async fn scaling(&self, ctx: &RequestContext) -> Result<ScalingStatus> {
        self.forward::<coord::Scaling>(&Empty {}, ctx).await
    }

    /// `api.events`: recent hand-offs and scaling steps, oldest first.
    async fn events(&self, ctx: &RequestContext) -> Result<ClusterEvents> {
        self.forward::<coord::Events>(&Empty {}, ctx).await
    }

    /// `api.autoscale`: the coordinator validates and records a role's autoscaling bounds.
    async fn autoscale(&self, req: &AutoscaleRequest, ctx: &RequestContext) -> Result<AutoscaleStatus> {
        self.forward::<coord::Autoscale>(req, ctx).await
    }

    /// `api.autoscaling`: the autoscaler's settings, windows and decisions.
    async fn autoscaling(&self, ctx: &RequestContext) -> Result<AutoscaleStatus> {
        self.forward::<coord::Autoscaling>(&Empty {}, ctx).await
    }

    /// Answers one request of the public API.
    async fn dispatch(&self, req: ApiRequest, ctx: RequestContext) -> Result<Vec<u8>> {
        let ctx = &ctx;
        // Anything but looking at the cluster is activity: it keeps the cluster from idling.
        let watching = matches!(
            req,
            ApiRequest::Status(_)
                | ApiRequest::Scaling(_)
                | ApiRequest::Events(_)
                | ApiRequest::Autoscaling(_)
                | ApiRequest::Idling(_)
                | ApiRequest::PluginList(_)
                | ApiRequest::CompactionState(_)
                | ApiRequest::Distribution(_)
                | ApiRequest::DescribeCollection(_)
                | ApiRequest::ListCollections(_)
        );
        if !watching {
            self.touch();
        }
        match req {
            ApiRequest::CreateCollection(r) => {
                r.serve(|r| async move {
                    self.forget(&r.schema.name);
                    self.forward::<coord::CreateCollection>(&r, ctx).await
                })
                .await
            }
            ApiRequest::DropCollection(r) => {
                r.serve(|r| async move { self.forward_change::<coord::DropCollection>(&r.name, &r, ctx).await }).await
            }
            ApiRequest::DescribeCollection(r) => {
                r.serve(|r| async move { self.forward::<coord::DescribeCollection>(&r, ctx).await }).await
            }
            ApiRequest::ListCollections(r) => {
                r.serve(|r| async move { self.forward::<coord::ListCollections>(&r, ctx).await }).await
            }
            ApiRequest::CreateIndex(r) => {
                r.serve(|r| async move { self.forward_change::<coord::CreateIndex>(&r.collection, &r, ctx).await })
                    .await
            }
            ApiRequest::DropIndex(r) => r.serve(|r| async move { self.drop_index(&r.name, ctx).await }).await,
            ApiRequest::LoadCollection(r) => {
                r.serve(|r| async move { self.load(&r.name, r.replicas, ctx).await }).await
            }
            ApiRequest::ReleaseCollection(r) => r.serve(|r| async move { self.release(&r.name, ctx).await }).await,
            ApiRequest::CreatePartition(r) => {
                r.serve(|r| async move { self.forward_change::<coord::CreatePartition>(&r.collection, &r, ctx).await })
                    .await
            }
            ApiRequest::DropPartition(r) => {
                r.serve(|r| async move { self.forward_change::<coord::DropPartition>(&r.collection, &r, ctx).await })
                    .await
            }
            ApiRequest::LoadPartitions(r) => {
                r.serve(|r| async move { self.forward_change::<coord::LoadPartitions>(&r.collection, &r, ctx).await })
                    .await
            }
            ApiRequest::ReleasePartitions(r) => {
                r.serve(
                    |r| async move { self.forward_change::<coord::ReleasePartitions>(&r.collection, &r, ctx).await },
                )
                .await
            }
            ApiRequest::Flush(r) => {
                r.serve(|r| async move {
                    self.read_awake(ctx, r, |r| async move { self.forward::<coord::Flush>(&r, ctx).await }).await
                })
                .await
            }
            ApiRequest::Distribution(r) => {
                r.serve(|r| async move { self.refresh(&r.name, ctx).await.map(|d| (*d).clone()) }).await
            }
            ApiRequest::Insert(r) => r.serve(|r| self.insert(r, ctx)).await,
            ApiRequest::Delete(r) => r.serve(|r| self.delete(r, ctx)).await,
            ApiRequest::Upsert(r) => r.serve(|r| self.upsert(r, ctx)).await,
            ApiRequest::Idling(r) => {
                r.serve(|_| async move { self.forward::<coord::Idling>(&Empty {}, ctx).await }).await
            }
            ApiRequest::Query(r) => r.serve(|r| self.query(r, ctx)).await,
            ApiRequest::Get(r) => r.serve(|r| self.get(r, ctx)).await,
            ApiRequest::Search(r) => r.serve(|r| self.search(r, ctx)).await,
            ApiRequest::Status(r) => r.serve(|_| self.status(ctx)).await,
            ApiRequest::Scale(r) => r.serve(|r| async move { self.scale(&r, ctx).await }).await,
            ApiRequest::Scaling(r) => r.serve(|_| self.scaling(ctx)).await,
            ApiRequest::Events(r) => r.serve(|_| self.events(ctx)).await,
            ApiRequest::Autoscale(r) => r.serve(|r| async move { self.autoscale(&r, ctx).await }).await,
            ApiRequest::Autoscaling(r) => r.serve(|_| self.autoscaling(ctx)).await,
            ApiRequest::Compact(r) => r.serve(|r| async move { self.forward::<coord::Compact>(&r, ctx).await }).await,
            ApiRequest::CompactionState(r) => {
                r.serve(|r| async move { self.forward::<coord::CompactionState>(&r, ctx).await }).await
            }
            ApiRequest::PluginLoad(r) => {
                r.serve(|r| async move { self.forward::<coord::PluginLoad>(&r, ctx).await }).await
            }
            ApiRequest::PluginActivate(r) => {
                r.serve(|r| async move { self.forward::<coord::PluginActivate>(&r, ctx).await }).await
            }
            ApiRequest::PluginRollback(r) => {
                r.serve(|r| async move { self.forward::<coord::PluginRollback>(&r, ctx).await }).await
            }
            ApiRequest::PluginList(r) => {
                r.serve(|r| async move { self.forward::<coord::PluginList>(&r, ctx).await }).await
            }
        }
    }
}

/// The proxy's NATS API, served on the I/O runtime's threads: the proxy's state is shared and
/// thread-safe (the gRPC server uses it the same way), so no request waits for another.
struct ConcurrentApi(Arc<Proxy>);

impl ConcurrentHandler<ApiRequest> for ConcurrentApi {
    fn handle(&self, req: ApiRequest, ctx: RequestContext) -> BoxFuture<'static, Result<Vec<u8>>> {
        let proxy = self.0.clone();
        Box::pin(async move { proxy.dispatch(req, ctx).await })
    }
}

impl Drop for ProxyRole {
    fn drop(&mut self) {
        if let Some(watch) = self.quota.get_mut().take() {
            watch.abort();
        }
    }
}

impl RoleHandler for ProxyRole {
    type Request = ApiRequest;

    fn concurrent(&self) -> Option<Arc<dyn ConcurrentHandler<ApiRequest>>> {
        Some(Arc::new(ConcurrentApi(self.proxy.clone())))
    }

    fn events(&self, node: &Node) -> Vec<String> {
        vec![node.subjects().distribution_events(), node.subjects().memory_events()]
    }

    fn handle(self: Rc<Self>, req: ApiRequest, ctx: RequestContext) -> LocalBoxFuture<'static, Result<Vec<u8>>> {
        let proxy = self.proxy.clone();
        Box::pin(async move { proxy.dispatch(req, ctx).await })
    }

    fn event(self: Rc<Self>, msg: Message) -> LocalBoxFuture<'static, ()> {
        // A layout changed: drop the cached copy so the next read fetches it.
        if let Some(id) = Subjects::distribution_event_collection(&msg.subject) {
            self.proxy.layouts.retain(|_, c| c.dist.collection.id != id);
        } else if msg.subject.as_str() == self.proxy.node.subjects().memory_events() {
            match serde_json::from_slice::<quiver_schemas::MemoryMarkEvent>(&msg.payload) {
                Ok(event) => self.proxy.quota.heard(&event),
                Err(e) => tracing::warn!(error = %e, "ignored a malformed memory event"),
            }
        }
        Box::pin(async {})
    }

    fn start(self: Rc<Self>) {
        let cfg = &self.proxy.node.shared.config.proxy;
        let node = &self.proxy.node;
        if cfg.grpc_port != 0 {
            let addr = format!("{}:{}", cfg.grpc_host, cfg.grpc_port);
            let proxy = self.proxy.clone();
            self.grpc.start(node, "milvus-grpc", move |stopped| milvus::serve(proxy, addr, stopped));
        }
        if cfg.http_port != 0 {
            let addr = format!("{}:{}", cfg.http_host, cfg.http_port);
            let proxy = self.proxy.clone();
            self.http.start(node, "http-admin", move |stopped| admin::serve(proxy, addr, stopped));
        }
        if self.proxy.node.shared.config.limits.memory_high_water_percentage < 100.0 {
            let watch = node.spawn_io_loop("memory-quota", quota::watch(self.proxy.clone()));
            *self.quota.borrow_mut() = Some(watch);
        }
    }

    /// The queue group is already left; the gRPC and HTTP servers stop accepting connections
    /// and finish the calls they are running (tonic's and axum's graceful shutdown).
    fn drain(self: Rc<Self>) -> LocalBoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(watch) = self.quota.borrow_mut().take() {
                watch.abort();
            }
            futures::join!(self.grpc.stop(), self.http.stop());
        })
    }

    fn heartbeat(&self) -> (u32, String) {
        let router = self.proxy.policies.router.source();
        (0, format!("{} layouts cached, router {}@{}", self.proxy.layouts.len(), router.name, router.version))
    }
}
