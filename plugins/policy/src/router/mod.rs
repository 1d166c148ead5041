//! Routing (proxy): for each sealed segment of a search, pick one node among those holding it.
//! Mirrors `wit/router.wit`.

mod hash;
mod least_loaded;
mod rendezvous;
mod round_robin;

pub use hash::HashRouter;
pub use least_loaded::LeastLoaded;
pub use rendezvous::{hrw_score, Rendezvous};
pub use round_robin::RoundRobin;

/// What the proxy knows of a query node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLoad {
    pub node_id: String,
    /// Sub-requests this proxy has in flight to the node.
    pub in_flight: u32,
    /// Smoothed latency of recent replies in microseconds (0 = unknown).
    pub latency_us: u32,
    /// Relative capacity weight (1.0 = normal).
    pub weight: f64,
}

impl NodeLoad {
    /// A node with no load figures yet.
    pub fn idle(node_id: impl Into<String>) -> NodeLoad {
        NodeLoad { node_id: node_id.into(), in_flight: 0, latency_us: 0, weight: 1.0 }
    }
}

/// A sealed segment of a search; its holders are a slice of [`RouteRequest::holders`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSegment {
    pub id: u64,
    pub rows: u64,
    pub first_holder: u32,
    pub holder_count: u32,
}

/// One search's routing question.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteRequest {
    /// Increases by one per search routed by this proxy.
    pub sequence: u64,
    pub collection: u64,
    pub nodes: Vec<NodeLoad>,
    pub segments: Vec<RouteSegment>,
    /// Indexes into `nodes`, sliced per segment.
    pub holders: Vec<u32>,
}

impl RouteRequest {
    /// Appends a segment held by `holders` (indexes into `nodes`).
    pub fn push_segment(&mut self, id: u64, rows: u64, holders: impl IntoIterator<Item = u32>) {
        let first_holder = self.holders.len() as u32;
        self.holders.extend(holders);
        let holder_count = self.holders.len() as u32 - first_holder;
        self.segments.push(RouteSegment { id, rows, first_holder, holder_count });
    }

    /// The holders of `segment` (indexes into `nodes`); empty when the slice is out of range.
    pub fn holders_of(&self, segment: &RouteSegment) -> &[u32] {
        let start = segment.first_holder as usize;
        let end = start.saturating_add(segment.holder_count as usize);
        self.holders.get(start..end).unwrap_or(&[])
    }

    /// Checks a router's answer: one entry per segment, each a holder of its segment, and
    /// `None` only for a segment without holders.
    pub fn check(&self, routes: &[Option<u32>]) -> Result<(), String> {
        if routes.len() != self.segments.len() {
            return Err(format!("returned {} routes for {} segments", routes.len(), self.segments.len()));
        }
        for (segment, route) in self.segments.iter().zip(routes) {
            let holders = self.holders_of(segment);
            match route {
                None if holders.is_empty() => {}
                None => return Err(format!("left segment {} unrouted although it has holders", segment.id)),
                Some(node) if holders.contains(node) => {}
                Some(node) => return Err(format!("routed segment {} to node {node}, which does not hold it", segment.id)),
            }
        }
        Ok(())
    }
}

/// A routing policy: one entry per segment, see [`RouteRequest::check`].
pub trait Router: Send + Sync {
    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>>;
}
