//! Quiver's runtime: what every node process stands on.
//!
//! - [`config`]: the TOML configuration, defaults, environment overrides, validation.
//! - [`bus`]: typed request/reply and pub/sub over NATS, subjects namespaced by cluster.
//! - [`meta`]: JetStream KV buckets for metadata and the node registry (heartbeats with TTL).
//! - [`objects`]: the shared object store (local filesystem or S3-compatible).
//! - [`disk`]: local files written so that they survive a power cut (fsync of file and dirs).
//! - [`plugin`]: sandboxed Wasm policy plugins (router, balancer, discovery, autoscaler) with
//!   native fallback, hot swap and cluster-wide distribution.
//! - [`supervisor`]: actix-based supervision with backoff, restart budget and escalation.
//! - [`nats_server`]: the embedded, supervised nats-server of standalone mode.
//! - [`admission`]: process-wide admission control (memory high-water mark).
//! - [`retry`]: sending a call again, with growing pauses, while it fails for a while.
//! - [`security`]: generated credentials, per-principal NATS permissions, TLS, gRPC principals.
//! - [`telemetry`]: the Prometheus endpoint and process statistics.
//! - [`error`]: the runtime's error type and the status codes carried in reply headers.

pub mod admission;
pub mod bus;
pub mod config;
pub mod disk;
pub mod error;
pub mod meta;
pub mod nats_server;
pub mod objects;
pub mod plugin;
pub mod retry;
pub mod security;
pub mod supervisor;
pub mod telemetry;
pub mod trace;

use std::sync::Arc;

pub use bus::{Bus, RequestContext};
pub use config::Config;
pub use error::{Code, Error, Result};
pub use meta::{JsonBucket, Registry};
pub use objects::Objects;
pub use plugin::PluginHost;
pub use quiver_schemas::Subjects;
pub use supervisor::{LifeGuard, RoleContext, RoleHealth, RoleSpec, StartFn, Supervisor, SupervisorHandle};

/// Handles every role of a process shares. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub config: Arc<Config>,
    pub bus: Bus,
    pub objects: Objects,
    pub registry: Registry,
    pub meta: JsonBucket,
    /// The process's Wasm plugin engine, shared by every policy slot.
    pub plugins: Arc<plugin::PluginHost>,
    /// Memory admission for the process' roles.
    pub memory: Arc<admission::MemoryGuard>,
    /// The process's multi-threaded I/O runtime (the one `connect` ran on): the NATS client,
    /// and the request handlers that run off their role's arbiter (the proxy's).
    pub io: tokio::runtime::Handle,
}

impl Shared {
    /// Connects to NATS and the object store and opens the cluster's buckets.
    pub async fn connect(config: Config, nats_url: &str, client_name: &str) -> Result<Shared> {
        let options = security::nats_connect_options(&config, async_nats::ConnectOptions::new()).await?;
        let bus = Bus::connect_with(nats_url, &config.cluster.name, client_name, config.nats.request_timeout, options)
            .await?;
        let bus = if config.node.local_calls { bus } else { bus.without_local_calls() };
        let registry = Registry::open(&bus, config.node.heartbeat_ttl, config.nats.replicas).await?;
        let meta_name = bus.subjects().meta_bucket();
        let meta = JsonBucket::open(&bus, &meta_name, std::time::Duration::ZERO, config.nats.replicas).await?;
        let objects = Objects::open(&config)?;
        Objects::check(&config).await?;
        let plugins = Arc::new(plugin::PluginHost::new(&config.plugins)?);
        let memory = Arc::new(admission::MemoryGuard::new(&config));
        let io = tokio::runtime::Handle::current();
        Ok(Shared { config: Arc::new(config), bus, objects, registry, meta, plugins, memory, io })
    }
}
