//! The policy slots a role owns and the watcher that keeps them on the cluster's choice.
//!
//! The proxy owns a router slot; the coordinator owns the balancer, discovery and autoscaler
//! slots. Each slot runs the active Wasm plugin in the runtime's sandbox, with the built-in
//! algorithm answering when the plugin fails ([`quiver_runtime::plugin`]). The watcher applies
//! `quiver ctl plugin activate|rollback` within about a second, without a restart.

use std::sync::Arc;
use std::time::Duration;

use quiver_runtime::plugin::{
    AutoscalerSlot, BalancerSlot, DiscoverySlot, ManagedSlot, PluginCatalog, PluginWatcher, RouterSlot,
};
use quiver_runtime::Result;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::node::Node;

/// How long a starting role waits for the cluster's choices before serving with built-ins.
const FIRST_SYNC: Duration = Duration::from_secs(5);

/// Keeps a watcher running while its role lives.
pub struct Watching {
    _stop: DropGuard,
    _watcher: PluginWatcher,
}

async fn watch(node: &Node, slots: Vec<Arc<dyn ManagedSlot>>) -> Result<Watching> {
    let stop = CancellationToken::new();
    let watcher = PluginWatcher::start_for(&node.shared, &node.id, slots, stop.clone()).await?;
    if let Err(e) = watcher.synced(FIRST_SYNC).await {
        tracing::warn!(error = %e, "serving with built-in policies until the plugin choices are applied");
    }
    Ok(Watching { _stop: stop.drop_guard(), _watcher: watcher })
}

/// The proxy's router.
pub struct ProxyPolicies {
    pub router: Arc<RouterSlot>,
    _watching: Watching,
}

impl ProxyPolicies {
    pub async fn start(node: &Node) -> Result<ProxyPolicies> {
        let router = Arc::new(RouterSlot::new(node.shared.plugins.clone())?);
        let watching = watch(node, vec![router.clone()]).await?;
        Ok(ProxyPolicies { router, _watching: watching })
    }
}

/// The coordinator's balancer, discovery and autoscaler.
pub struct CoordinatorPolicies {
    pub balancer: Arc<BalancerSlot>,
    pub discovery: Arc<DiscoverySlot>,
    pub autoscaler: Arc<AutoscalerSlot>,
    /// The cluster's plugin catalog, for `quiver ctl plugin load|activate|rollback|list`.
    pub catalog: PluginCatalog,
    _watching: Watching,
}

impl CoordinatorPolicies {
    pub async fn start(node: &Node) -> Result<CoordinatorPolicies> {
        let host = &node.shared.plugins;
        let balancer = Arc::new(BalancerSlot::new(host.clone())?);
        let discovery = Arc::new(DiscoverySlot::new(host.clone())?);
        let autoscaler = Arc::new(AutoscalerSlot::new(host.clone())?);
        let slots: Vec<Arc<dyn ManagedSlot>> = vec![balancer.clone(), discovery.clone(), autoscaler.clone()];
        let watching = watch(node, slots).await?;
        let shared = &node.shared;
        let catalog =
            PluginCatalog::open(&shared.bus, shared.objects.clone(), host.clone(), shared.config.nats.replicas).await?;
        Ok(CoordinatorPolicies { balancer, discovery, autoscaler, catalog, _watching: watching })
    }
}
