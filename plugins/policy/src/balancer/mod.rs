//! Balancing (coordinator): placement of new segments and shard leaders, and move plans that
//! even out query nodes (MISSION S1). Mirrors `wit/balancer.wit`.

mod memory;
mod row_count;
mod simulation;

pub use memory::MemoryBalancer;
pub use row_count::RowCountBalancer;

/// A query node as the coordinator sees it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeUsage {
    /// The node's id.
    pub node_id: String,
    /// Memory in use, in bytes.
    pub memory_used: u64,
    /// The node's memory capacity in bytes (0 = unknown).
    pub memory_capacity: u64,
    /// Rows the node holds.
    pub rows: u64,
    /// Sealed segments the node holds.
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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SegmentLoad {
    /// Segment id.
    pub id: u64,
    /// The collection it belongs to.
    pub collection: u64,
    /// Index into [`ClusterView::nodes`].
    pub node: u32,
    /// Memory the segment takes when loaded, in bytes.
    pub memory_size: u64,
    /// Rows in the segment.
    pub rows: u64,
}

/// The query nodes and the sealed segment copies on them.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClusterView {
    /// The query nodes.
    pub nodes: Vec<NodeUsage>,
    /// Every copy of every sealed segment, one entry per (segment, node).
    pub segments: Vec<SegmentLoad>,
}

/// Something to place: a segment, or a shard leader (sizes 0).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PlacementItem {
    /// Segment id (or shard id for a leader).
    pub id: u64,
    /// Memory it takes when loaded, in bytes.
    pub memory_size: u64,
    /// Rows in it.
    pub rows: u64,
}

/// The operator's balance settings (`[balance]` in the config).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BalanceSettings {
    /// A node above this memory use (%) is overloaded (`overloadedMemoryThresholdPercentage`, 90).
    pub overloaded_memory_threshold_percentage: f64,
    /// Balance when two nodes' memory use differs by more (`memoryUsageMaxDifferencePercentage`, 30).
    pub memory_usage_max_difference_percentage: f64,
    /// At most this many moves per plan.
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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SegmentMove {
    /// The segment's id.
    pub segment: u64,
    /// The node that holds it now and releases it once the target serves it.
    pub source: u32,
    /// The node that loads it.
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
