//! The proxy: the native NATS API (`quiver.<cluster>.api.*`, all proxies in one queue group),
//! request validation, the write path into the DML log and scatter/gather reads. Stateless
//! apart from a cache of serving layouts, invalidated by the coordinator's change events.
//!
//! - `validate.rs`: checks on inserts, searches and keys.
//! - `write.rs`: insert and delete.
//! - `read.rs`: search and get, with routing, retries and the top-k merge.
//! - `load.rs`: per-node in-flight and latency figures for the router.
//! - `reply.rs`: checks on the replies of query nodes and the coordinator, where they arrive.

mod load;
pub mod milvus;
mod read;
mod reply;
mod validate;
mod write;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use async_nats::Message;
use dashmap::DashMap;
use futures::future::LocalBoxFuture;
use quiver_policy::router::RouteRequest;
use quiver_runtime::{bus, Result, RoleContext};
use quiver_schemas::{
    ClusterStatus, CollectionDescription, CollectionInfo, CollectionList, CollectionName, CreateCollection,
    CreateIndex, Distribution, Empty, FlushResult, LoadCollection, PluginActivate, PluginReport, PluginRollback,
    PluginUpload,
};

pub use read::merge;
pub use validate::shard_of;

use crate::node::{start_role, Node, RoleHandler};

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
}

/// The role: the proxy's state (shared with the Milvus gRPC server's tasks) and the switch
/// that stops that server when the role stops or restarts.
struct ProxyRole {
    proxy: Arc<Proxy>,
    grpc_stop: RefCell<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Drop for ProxyRole {
    fn drop(&mut self) {
        if let Some(stop) = self.grpc_stop.get_mut().take() {
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
                let proxy = Proxy {
                    node,
                    layouts: DashMap::new(),
                    policies,
                    sequence: AtomicU64::new(0),
                    load: load::NodeLoads::default(),
                };
                Ok(ProxyRole { proxy: Arc::new(proxy), grpc_stop: RefCell::new(None) })
            })
        }),
    );
}

impl Proxy {
    /// The cached layout of a collection, fetched when missing or older than the refresh period.
    async fn distribution(&self, name: &str) -> Result<Arc<Distribution>> {
        let max_age = self.node.shared.config.proxy.distribution_refresh;
        if let Some(c) = self.layouts.get(name) {
            if c.fetched.elapsed() < max_age {
                return Ok(c.dist.clone());
            }
        }
        self.refresh(name).await
    }

    async fn refresh(&self, name: &str) -> Result<Arc<Distribution>> {
        let bus = &self.node.shared.bus;
        let req = CollectionName { name: name.to_string() };
        let dist: Distribution = bus.request(bus.subjects().coord("get_distribution"), &req).await?;
        reply::check_distribution(name, &dist)?;
        let dist = Arc::new(dist);
        self.layouts.insert(name.to_string(), Cached { dist: dist.clone(), fetched: Instant::now() });
        Ok(dist)
    }

    async fn collection(&self, name: &str) -> Result<CollectionInfo> {
        Ok(self.distribution(name).await?.collection.clone())
    }

    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        self.policies.router.route(request)
    }

    fn forget(&self, name: &str) {
        self.layouts.remove(name);
    }

    async fn forward<Req: quiver_schemas::Wire, Resp: quiver_schemas::Wire>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp> {
        let bus = &self.node.shared.bus;
        bus.request(bus.subjects().coord(method), req).await
    }

    /// Serves a released collection again.
    async fn load(&self, name: &str, replicas: u32) -> Result<()> {
        let out = self.forward::<_, Empty>("load_collection", &LoadCollection { name: name.into(), replicas }).await;
        self.forget(name);
        out.map(|_| ())
    }

    /// Stops serving a collection from query nodes.
    async fn release(&self, name: &str) -> Result<()> {
        let out = self.forward::<_, Empty>("release_collection", &CollectionName { name: name.into() }).await;
        self.forget(name);
        out.map(|_| ())
    }

    /// Drops a released collection's vector index.
    async fn drop_index(&self, name: &str) -> Result<()> {
        let out = self.forward::<_, Empty>("drop_index", &CollectionName { name: name.into() }).await;
        self.forget(name);
        out.map(|_| ())
    }

    async fn status(&self) -> Result<ClusterStatus> {
        Ok(ClusterStatus {
            cluster: self.node.shared.config.cluster.name.clone(),
            nodes: self.node.shared.registry.nodes().await?,
        })
    }

    async fn dispatch(&self, method: &str, msg: &Message) {
        let node = &self.node;
        match method {
            "create_collection" => {
                node.serve(msg, |r: CreateCollection| async move {
                    self.forget(&r.schema.name);
                    self.forward::<_, Empty>(method, &r).await
                })
                .await
            }
            "drop_collection" => {
                node.serve(msg, |r: CollectionName| async move {
                    let out = self.forward::<_, Empty>(method, &r).await;
                    self.forget(&r.name);
                    out
                })
                .await
            }
            "describe_collection" => {
                node.serve(msg, |r: CollectionName| async move {
                    self.forward::<_, CollectionDescription>(method, &r).await
                })
                .await
            }
            "list_collections" => {
                node.serve(msg, |r: Empty| async move { self.forward::<_, CollectionList>(method, &r).await }).await
            }
            "create_index" => {
                node.serve(msg, |r: CreateIndex| async move {
                    let out = self.forward::<_, Empty>(method, &r).await;
                    self.forget(&r.collection);
                    out
                })
                .await
            }
            "load_collection" => {
                node.serve(
                    msg,
                    |r: LoadCollection| async move { self.load(&r.name, r.replicas).await.map(|()| Empty {}) },
                )
                .await
            }
            "release_collection" => {
                node.serve(msg, |r: CollectionName| async move { self.release(&r.name).await.map(|()| Empty {}) }).await
            }
            "drop_index" => {
                node.serve(msg, |r: CollectionName| async move { self.drop_index(&r.name).await.map(|()| Empty {}) })
                    .await
            }
            "flush" => {
                node.serve(msg, |r: CollectionName| async move { self.forward::<_, FlushResult>(method, &r).await })
                    .await
            }
            "distribution" => {
                node.serve(msg, |r: CollectionName| async move { self.refresh(&r.name).await.map(|d| (*d).clone()) })
                    .await
            }
            "insert" => node.serve(msg, |r| self.insert(r)).await,
            "delete" => node.serve(msg, |r| self.delete(r)).await,
            "upsert" => node.serve(msg, |r| self.upsert(r)).await,
            "query" => node.serve(msg, |r| self.query(r)).await,
            "get" => node.serve(msg, |r| self.get(r)).await,
            "search" => {
                let trace = bus::traceparent_of(msg);
                node.serve(msg, |r| self.search(r, trace)).await
            }
            "status" => node.serve(msg, |_: Empty| self.status()).await,
            "plugin_load" => {
                node.serve(msg, |r: PluginUpload| async move { self.forward::<_, PluginReport>(method, &r).await })
                    .await
            }
            "plugin_activate" => {
                node.serve(msg, |r: PluginActivate| async move { self.forward::<_, PluginReport>(method, &r).await })
                    .await
            }
            "plugin_rollback" => {
                node.serve(msg, |r: PluginRollback| async move { self.forward::<_, PluginReport>(method, &r).await })
                    .await
            }
            "plugin_list" => {
                node.serve(msg, |r: Empty| async move { self.forward::<_, PluginReport>(method, &r).await }).await
            }
            _ => node.unknown_method(msg).await,
        }
    }
}

impl RoleHandler for ProxyRole {
    fn subscriptions(&self, node: &Node) -> Vec<(String, Option<String>)> {
        let subjects = node.shared.bus.subjects();
        vec![(subjects.api("*"), Some("proxy".into())), (subjects.distribution_events(), None)]
    }

    fn handle(self: Rc<Self>, msg: Message) -> LocalBoxFuture<'static, ()> {
        let proxy = self.proxy.clone();
        Box::pin(async move { proxy.handle(msg).await })
    }

    fn start(self: Rc<Self>) {
        let cfg = &self.proxy.node.shared.config.proxy;
        if cfg.grpc_port == 0 {
            return;
        }
        let addr = format!("{}:{}", cfg.grpc_host, cfg.grpc_port);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        *self.grpc_stop.borrow_mut() = Some(stop);
        let proxy = self.proxy.clone();
        self.proxy.node.spawn_loop("milvus-grpc", async move { milvus::serve(proxy, addr, stopped).await });
    }

    fn heartbeat(&self) -> (u32, String) {
        self.proxy.heartbeat()
    }
}

impl Proxy {
    async fn handle(&self, msg: Message) {
        {
            if msg.subject.contains(".event.distribution.") {
                // A layout changed: drop the cached copy so the next read fetches it.
                let id: u64 = msg.subject.rsplit('.').next().and_then(|s| s.parse().ok()).unwrap_or(0);
                self.layouts.retain(|_, c| c.dist.collection.id != id);
                return;
            }
            let method = msg.subject.rsplit('.').next().unwrap_or_default().to_string();
            let started = Instant::now();
            self.dispatch(&method, &msg).await;
            metrics::histogram!("quiver_request_seconds", "method" => method.clone())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("quiver_requests_total", "method" => method).increment(1);
        }
    }

    fn heartbeat(&self) -> (u32, String) {
        let router = self.policies.router.source();
        (0, format!("{} layouts cached, router {}@{}", self.layouts.len(), router.name, router.version))
    }
}
