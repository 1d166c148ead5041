//! Placement: which query node should load a segment or lead a shard.

/// What placement knows of a query node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeMemory {
    pub node_id: String,
    pub used: u64,
    pub capacity: u64,
}

impl NodeMemory {
    /// Memory use in percent of capacity (100 when capacity is unknown).
    pub fn percent(&self) -> f64 {
        if self.capacity == 0 {
            100.0
        } else {
            self.used as f64 * 100.0 / self.capacity as f64
        }
    }
}

/// A placement policy.
pub trait Placement: Send + Sync {
    fn name(&self) -> &'static str;
    /// The node (index into `nodes`) that should load an item of `size` bytes.
    fn place(&self, size: u64, nodes: &[NodeMemory]) -> Option<usize>;
}

/// Picks the node whose memory use after loading would be the lowest percentage (S1.1).
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryPlacement;

impl Placement for MemoryPlacement {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn place(&self, size: u64, nodes: &[NodeMemory]) -> Option<usize> {
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let after = NodeMemory { node_id: String::new(), used: n.used + size, capacity: n.capacity };
                (i, after.percent(), &n.node_id)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.2.cmp(b.2)))
            .map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, used: u64, capacity: u64) -> NodeMemory {
        NodeMemory { node_id: id.into(), used, capacity }
    }

    #[test]
    fn picks_least_used_by_percent() {
        let nodes = [node("a", 50, 100), node("b", 100, 400), node("c", 10, 100)];
        assert_eq!(MemoryPlacement.place(5, &nodes), Some(2));
        assert_eq!(MemoryPlacement.place(5, &[node("a", 50, 100), node("b", 100, 400)]), Some(1));
    }

    #[test]
    fn empty_gives_none_and_ties_break_by_id() {
        assert_eq!(MemoryPlacement.place(1, &[]), None);
        assert_eq!(MemoryPlacement.place(1, &[node("b", 0, 10), node("a", 0, 10)]), Some(1));
    }
}
