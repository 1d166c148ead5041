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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeLoad {
    /// The node's id, e.g. `host-a-querynode`.
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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RouteSegment {
    /// Segment id (stable for the segment's life).
    pub id: u64,
    /// Rows in the segment.
    pub rows: u64,
    /// Its holders are `holders[first_holder .. first_holder + holder_count]`.
    pub first_holder: u32,
    /// How many holders it has.
    pub holder_count: u32,
}

/// One search's routing question.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RouteRequest {
    /// Increases by one per search routed by this proxy.
    pub sequence: u64,
    /// The collection searched.
    pub collection: u64,
    /// The query nodes holding any of the segments.
    pub nodes: Vec<NodeLoad>,
    /// The sealed segments to route, in order.
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
                Some(node) => {
                    return Err(format!("routed segment {} to node {node}, which does not hold it", segment.id))
                }
            }
        }
        Ok(())
    }
}

/// A routing policy: one entry per segment, see [`RouteRequest::check`].
pub trait Router: Send + Sync {
    /// For each segment of `request`, in order, the index into `nodes` of the node to serve it.
    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>>;
}

/// Request builders shared by the routers' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{NodeLoad, RouteRequest};

    /// A request over idle nodes named `names`, with no segments yet.
    pub(crate) fn request(names: &[&str]) -> RouteRequest {
        RouteRequest { nodes: names.iter().map(|n| NodeLoad::idle(*n)).collect(), ..RouteRequest::default() }
    }

    /// A request over idle nodes named `names` with segments `0..segments`, each held by all nodes.
    pub(crate) fn all_hold(names: &[&str], segments: u64) -> RouteRequest {
        let mut r = request(names);
        for id in 0..segments {
            r.push_segment(id, 1000, 0..names.len() as u32);
        }
        r
    }

    /// How many segments each node got.
    pub(crate) fn counts(request: &RouteRequest, routes: &[Option<u32>]) -> Vec<usize> {
        let mut counts = vec![0; request.nodes.len()];
        for node in routes.iter().flatten() {
            counts[*node as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::test_support::request;
    use super::*;

    #[test]
    fn push_segment_slices_the_shared_holder_list() {
        let mut r = request(&["a", "b", "c"]);
        r.push_segment(1, 10, [0, 2]);
        r.push_segment(2, 20, []);
        r.push_segment(3, 30, [1]);
        assert_eq!(r.holders, [0, 2, 1]);
        assert_eq!(r.holders_of(&r.segments[0]), [0, 2]);
        assert!(r.holders_of(&r.segments[1]).is_empty());
        assert_eq!(r.holders_of(&r.segments[2]), [1]);
        let out_of_range = RouteSegment { id: 4, rows: 0, first_holder: 2, holder_count: 5 };
        assert!(r.holders_of(&out_of_range).is_empty());
    }

    #[test]
    fn check_rejects_bad_answers() {
        let mut r = request(&["a", "b"]);
        r.push_segment(1, 10, [0]);
        r.push_segment(2, 10, []);
        assert!(r.check(&[Some(0), None]).is_ok());
        assert!(r.check(&[Some(0)]).is_err());
        assert!(r.check(&[Some(1), None]).is_err());
        assert!(r.check(&[None, None]).is_err());
        assert!(r.check(&[Some(0), Some(0)]).is_err());
    }

    /// Time per search of ~100 segments with 3 replicas over 10 nodes. Run with
    /// `cargo test --release -p quiver-policy -- --ignored --nocapture route_speed`.
    #[test]
    #[ignore = "timing, not a check"]
    fn route_speed() {
        let names: Vec<String> = (0..10).map(|i| format!("host-{i}-querynode")).collect();
        let mut r = RouteRequest {
            nodes: names
                .iter()
                .map(|n| NodeLoad { in_flight: 2, latency_us: 800, ..NodeLoad::idle(n.as_str()) })
                .collect(),
            ..RouteRequest::default()
        };
        for id in 0..100u64 {
            let first = (id % 10) as u32;
            r.push_segment(1_000_000 + id, 50_000, [first, (first + 3) % 10, (first + 7) % 10]);
        }
        let routers: [(&str, &dyn Router); 4] = [
            ("rendezvous", &Rendezvous),
            ("round-robin", &RoundRobin),
            ("hash", &HashRouter),
            ("least-loaded", &LeastLoaded),
        ];
        for (name, router) in routers {
            let rounds = 20_000u32;
            let start = std::time::Instant::now();
            for sequence in 0..rounds {
                r.sequence = u64::from(sequence);
                std::hint::black_box(router.route(std::hint::black_box(&r)));
            }
            println!("{name}: {:?} per 100-segment search", start.elapsed() / rounds);
        }
    }
}
