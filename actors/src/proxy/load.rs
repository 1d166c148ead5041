//! Per-node load figures the proxy hands to its router: sub-requests in flight (from this
//! proxy, or as the node last reported for all proxies, whichever is higher), a smoothed
//! reply latency (MISSION S2.7: move work away from busy or slow nodes), and which nodes
//! failed recently (reads avoid them while another replica can serve).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use quiver_policy::router::NodeLoad;

/// How long a node that failed a request is avoided when another node can serve.
const AVOID_FAILED_FOR: Duration = Duration::from_secs(2);
/// How long a node's own in-flight report counts (it is not refreshed while no read goes there).
const REPORT_VALID_FOR: Duration = Duration::from_secs(1);

#[derive(Default)]
struct NodeStat {
    in_flight: AtomicU32,
    /// Exponentially weighted moving average of reply latency, µs (0 = no reply yet).
    latency_us: AtomicU32,
    /// In-flight count the node reported with its last reply, and when (ms since `epoch`).
    reported: AtomicU32,
    reported_at_ms: AtomicU64,
    /// Until when (ms since `epoch`) the node is avoided after a failure; 0 = not.
    failed_until_ms: AtomicU64,
}

/// Load figures of every node this proxy talks to.
pub struct NodeLoads {
    nodes: DashMap<String, Arc<NodeStat>>,
    epoch: Instant,
}

impl Default for NodeLoads {
    fn default() -> NodeLoads {
        NodeLoads { nodes: DashMap::new(), epoch: Instant::now() }
    }
}

impl NodeLoads {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn stat(&self, node: &str) -> Arc<NodeStat> {
        match self.nodes.get(node) {
            Some(s) => s.clone(),
            None => self.nodes.entry(node.to_string()).or_default().clone(),
        }
    }

    /// What the router sees of `node` now.
    pub fn of(&self, node: &str) -> NodeLoad {
        match self.nodes.get(node) {
            Some(s) => {
                let own = s.in_flight.load(Ordering::Relaxed);
                let fresh = self.now_ms().saturating_sub(s.reported_at_ms.load(Ordering::Relaxed))
                    < REPORT_VALID_FOR.as_millis() as u64;
                let reported = if fresh { s.reported.load(Ordering::Relaxed) } else { 0 };
                NodeLoad {
                    node_id: node.to_string(),
                    in_flight: own.max(reported),
                    latency_us: s.latency_us.load(Ordering::Relaxed),
                    weight: 1.0,
                }
            }
            None => NodeLoad::idle(node),
        }
    }

    /// Counts a sub-request to `node` until the returned guard drops.
    pub fn start(&self, node: &str) -> InFlight {
        let stat = self.stat(node);
        stat.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { stat, started: Instant::now() }
    }

    /// Records the in-flight count `node` reported with a reply (its load from every proxy).
    pub fn report(&self, node: &str, in_flight: u32) {
        let stat = self.stat(node);
        stat.reported.store(in_flight, Ordering::Relaxed);
        stat.reported_at_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long to wait for `node` before asking another replica: 8 × its smoothed latency,
    /// within [100 ms, `max`].
    pub fn patience(&self, node: &str, max: Duration) -> Duration {
        let latency = Duration::from_micros(u64::from(self.of(node).latency_us));
        (latency * 8).clamp(Duration::from_millis(100).min(max), max)
    }

    /// Notes that `node` failed a request (gone or not answering).
    pub fn failed(&self, node: &str) {
        let until = self.now_ms() + AVOID_FAILED_FOR.as_millis() as u64;
        self.stat(node).failed_until_ms.store(until, Ordering::Relaxed);
    }

    /// Nodes that failed within the last `AVOID_FAILED_FOR`.
    pub fn failing(&self) -> HashSet<String> {
        let now = self.now_ms();
        self.nodes
            .iter()
            .filter(|e| e.value().failed_until_ms.load(Ordering::Relaxed) > now)
            .map(|e| e.key().clone())
            .collect()
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

    #[test]
    fn reported_load_and_failures_expire() {
        let loads = NodeLoads::default();
        loads.report("a", 7);
        assert_eq!(loads.of("a").in_flight, 7, "the node's report counts while fresh");
        let _mine = loads.start("a");
        assert_eq!(loads.of("a").in_flight, 7, "the higher of own and reported");
        assert!(loads.failing().is_empty());
        loads.failed("b");
        assert_eq!(loads.failing(), HashSet::from(["b".to_string()]));
        let stat = loads.stat("b");
        stat.failed_until_ms.store(1, Ordering::Relaxed);
        assert!(loads.failing().is_empty(), "avoidance ends");
        loads.stat("a").reported_at_ms.store(0, Ordering::Relaxed);
        std::thread::sleep(REPORT_VALID_FOR + Duration::from_millis(10));
        assert_eq!(loads.of("a").in_flight, 1, "a stale report no longer counts");
    }

    #[test]
    fn patience_follows_latency_within_bounds() {
        let loads = NodeLoads::default();
        let max = Duration::from_secs(1);
        assert_eq!(loads.patience("new", max), Duration::from_millis(100));
        loads.stat("a").latency_us.store(50_000, Ordering::Relaxed);
        assert_eq!(loads.patience("a", max), Duration::from_millis(400));
        loads.stat("a").latency_us.store(900_000, Ordering::Relaxed);
        assert_eq!(loads.patience("a", max), max);
    }
}
