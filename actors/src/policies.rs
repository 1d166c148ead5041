//! The policies a role calls, by kind. Interim: native built-ins chosen by config; replaced by
//! the runtime's Wasm plugin slots.

use quiver_policy::balancer::{BalanceSettings, Balancer, ClusterView, PlacementItem, SegmentMove};
use quiver_policy::builtin;
use quiver_policy::discovery::{Discovery, DiscoverySettings, Liveness, NodeRecord};
use quiver_runtime::{Error, Result};

use crate::node::Node;

/// The coordinator's balancer and discovery policies.
pub struct CoordinatorPolicies {
    balancer: Box<dyn Balancer>,
    discovery: Box<dyn Discovery>,
}

impl CoordinatorPolicies {
    pub fn start(node: &Node) -> Result<CoordinatorPolicies> {
        let cfg = &node.shared.config.plugins;
        let balancer = builtin::balancer(&cfg.balancer)
            .ok_or_else(|| Error::Config(format!("plugins.balancer: unknown {:?}", cfg.balancer)))?;
        let discovery = builtin::discovery(&cfg.discovery)
            .ok_or_else(|| Error::Config(format!("plugins.discovery: unknown {:?}", cfg.discovery)))?;
        Ok(CoordinatorPolicies { balancer, discovery })
    }

    pub fn classify(&self, nodes: &[NodeRecord], settings: &DiscoverySettings) -> Vec<Liveness> {
        self.discovery.classify(nodes, settings)
    }

    pub fn place(&self, view: &ClusterView, items: &[PlacementItem]) -> Vec<Option<u32>> {
        self.balancer.place(view, items)
    }

    pub fn plan(&self, view: &ClusterView, settings: &BalanceSettings) -> Vec<SegmentMove> {
        self.balancer.plan(view, settings)
    }
}
