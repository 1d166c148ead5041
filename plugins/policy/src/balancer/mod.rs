//! Balancing (coordinator): placement of new segments and shard leaders, and move plans that
//! even out query nodes (MISSION S1). Mirrors `wit/balancer.wit`.

mod memory;
mod row_count;

pub use memory::MemoryBalancer;
pub use row_count::RowCountBalancer;

/// A query node as the coordinator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUsage {
    pub node_id: String,
    pub memory_used: u64,
    pub memory_capacity: u64,
    pub rows: u64,
    pub segments: u32,
}

impl NodeUsage {
    /// Memory use in percent of capacity (100 when the capacity is unknown).
    pub fn memory_percent(&self) -> f64 {
        percent(self.memory_used, self.memory_capacity)
    }
}

/// `used` in percent of `capacity` (100 when the capacity is 0).
pub fn percent(used: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        100.0
    } else {
        used as f64 * 100.0 / capacity as f64
    }
}

/// One copy of a sealed segment on a node.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentLoad {
    pub id: u64,
    pub collection: u64,
    /// Index into [`ClusterView::nodes`].
    pub node: u32,
    pub memory_size: u64,
    pub rows: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub nodes: Vec<NodeUsage>,
    pub segments: Vec<SegmentLoad>,
}

/// Something to place: a segment, or a shard leader (sizes 0).
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementItem {
    pub id: u64,
    pub memory_size: u64,
    pub rows: u64,
}

/// The operator's balance settings (`[balance]` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceSettings {
    pub overloaded_memory_threshold_percentage: f64,
    pub memory_usage_max_difference_percentage: f64,
    pub max_moves: u32,
}

impl Default for BalanceSettings {
    /// Milvus' defaults (S1.2).
    fn default() -> Self {
        BalanceSettings {
            overloaded_memory_threshold_percentage: 90.0,
            memory_usage_max_difference_percentage: 30.0,
            max_moves: 16,
        }
    }
}

/// Move `segment` from node `source` to node `target` (indexes into the view's nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMove {
    pub segment: u64,
    pub source: u32,
    pub target: u32,
}

/// A balancing policy.
pub trait Balancer: Send + Sync {
    /// One entry per item: the node that should load it, `None` when no node can.
    fn place(&self, view: &ClusterView, items: &[PlacementItem]) -> Vec<Option<u32>>;
    /// The moves to make now.
    fn plan(&self, view: &ClusterView, settings: &BalanceSettings) -> Vec<SegmentMove>;
}

impl ClusterView {
    /// Checks a placement answer: one entry per item, each a valid node index.
    pub fn check_placement(&self, items: &[PlacementItem], placed: &[Option<u32>]) -> Result<(), String> {
        if placed.len() != items.len() {
            return Err(format!("placed {} items, asked for {}", placed.len(), items.len()));
        }
        match placed.iter().flatten().find(|&&n| n as usize >= self.nodes.len()) {
            Some(n) => Err(format!("placed an item on node {n}, but there are {} nodes", self.nodes.len())),
            None => Ok(()),
        }
    }

    /// Checks a plan: at most `max_moves`, every source holds its segment, no target does,
    /// and a segment moves at most once.
    pub fn check_plan(&self, settings: &BalanceSettings, moves: &[SegmentMove]) -> Result<(), String> {
        if moves.len() > settings.max_moves as usize {
            return Err(format!("planned {} moves, the limit is {}", moves.len(), settings.max_moves));
        }
        let holds = |segment: u64, node: u32| self.segments.iter().any(|s| s.id == segment && s.node == node);
        for (i, m) in moves.iter().enumerate() {
            if m.source as usize >= self.nodes.len() || m.target as usize >= self.nodes.len() {
                return Err(format!("move of segment {} names a node outside 0..{}", m.segment, self.nodes.len()));
            }
            if !holds(m.segment, m.source) {
                return Err(format!("moves segment {} from node {}, which does not hold it", m.segment, m.source));
            }
            if holds(m.segment, m.target) {
                return Err(format!("moves segment {} to node {}, which already holds it", m.segment, m.target));
            }
            if moves[..i].iter().any(|p| p.segment == m.segment) {
                return Err(format!("moves segment {} twice", m.segment));
            }
        }
        Ok(())
    }
}
