//! TODO(helper): implement.

use super::{Discovery, DiscoverySettings, Liveness, NodeRecord};

#[derive(Debug, Default, Clone, Copy)]
pub struct StaticDiscovery;

impl Discovery for StaticDiscovery {
    fn classify(&self, nodes: &[NodeRecord], _settings: &DiscoverySettings) -> Vec<Liveness> {
        nodes.iter().map(|_| Liveness::Alive).collect()
    }
}
