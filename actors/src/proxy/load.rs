//! Per-node load figures the proxy hands to its router: sub-requests in flight from this
//! proxy and a smoothed reply latency (MISSION S2.7: move work away from busy or slow nodes).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use quiver_policy::router::NodeLoad;

#[derive(Default)]
struct NodeStat {
    in_flight: AtomicU32,
    /// Exponentially weighted moving average of reply latency, µs (0 = no reply yet).
    latency_us: AtomicU32,
}

/// Load figures of every node this proxy talks to.
#[derive(Default)]
pub struct NodeLoads {
    nodes: DashMap<String, Arc<NodeStat>>,
}

impl NodeLoads {
    /// What the router sees of `node` now.
    pub fn of(&self, node: &str) -> NodeLoad {
        match self.nodes.get(node) {
            Some(s) => NodeLoad {
                node_id: node.to_string(),
                in_flight: s.in_flight.load(Ordering::Relaxed),
                latency_us: s.latency_us.load(Ordering::Relaxed),
                weight: 1.0,
            },
            None => NodeLoad::idle(node),
        }
    }

    /// Counts a sub-request to `node` until the returned guard drops.
    pub fn start(&self, node: &str) -> InFlight {
        let stat = match self.nodes.get(node) {
            Some(s) => s.clone(),
            None => self.nodes.entry(node.to_string()).or_default().clone(),
        };
        stat.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { stat, started: Instant::now() }
    }
}

/// A sub-request in flight; dropping it records its latency.
pub struct InFlight {
    stat: Arc<NodeStat>,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stat.in_flight.fetch_sub(1, Ordering::Relaxed);
        let sample = self.started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        let old = self.stat.latency_us.load(Ordering::Relaxed);
        // EWMA with weight 1/8: reacts within a few dozen requests, ignores single outliers.
        let new = if old == 0 { sample } else { ((u64::from(old) * 7 + u64::from(sample)) / 8) as u32 };
        self.stat.latency_us.store(new.max(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_flight_and_smooths_latency() {
        let loads = NodeLoads::default();
        assert_eq!(loads.of("a"), NodeLoad::idle("a"));
        let a = loads.start("a");
        let b = loads.start("a");
        assert_eq!(loads.of("a").in_flight, 2);
        drop(a);
        drop(b);
        let now = loads.of("a");
        assert_eq!(now.in_flight, 0);
        assert!(now.latency_us >= 1);
    }
}
