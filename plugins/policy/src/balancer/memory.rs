//! TODO(helper): implement.

use super::{BalanceSettings, Balancer, ClusterView, PlacementItem, SegmentMove};

#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryBalancer;

impl Balancer for MemoryBalancer {
    fn place(&self, view: &ClusterView, items: &[PlacementItem]) -> Vec<Option<u32>> {
        items.iter().map(|_| if view.nodes.is_empty() { None } else { Some(0) }).collect()
    }

    fn plan(&self, _view: &ClusterView, _settings: &BalanceSettings) -> Vec<SegmentMove> {
        Vec::new()
    }
}
