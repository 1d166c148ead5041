//! The proxy's last slow searches, step by step (MISSION S4.5, S4.6): how long routing took,
//! each query node's share (segments, rows, time, outcome) and the merge, for the web
//! console's trace view. Kept whether or not tracing is on (a few clock reads per search);
//! with tracing on each entry names its trace, whose spans the collector holds.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Slow searches kept per proxy.
pub const KEPT: usize = 32;

/// What one search's steps took, filled in as they run.
#[derive(Default)]
pub struct Steps {
    routing: Mutex<Duration>,
    nodes: Mutex<Vec<NodeStep>>,
}

impl Steps {
    /// Adds a layout lookup's time (every try's counts).
    pub fn routed(&self, took: Duration) {
        if let Ok(mut routing) = self.routing.lock() {
            *routing += took;
        }
    }

    /// Notes one node's share of the search.
    pub fn node(&self, step: NodeStep) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.push(step);
        }
    }
}

/// One query node's share of a search, as the proxy saw it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStep {
    pub node: String,
    pub segments: usize,
    /// Shards whose growing rows the node searched.
    pub growing: usize,
    pub rows_searched: u64,
    pub ms: f64,
    /// Empty when it answered.
    pub error: String,
}

/// A search slower than `tracing.slow_search`.
#[derive(Debug, Clone, Serialize)]
pub struct SlowSearch {
    /// When it finished (ms since the epoch).
    pub at_ms: u64,
    pub collection: String,
    pub nq: usize,
    pub top_k: u32,
    pub consistency: String,
    pub ms: f64,
    pub routing_ms: f64,
    pub merge_ms: f64,
    pub nodes: Vec<NodeStep>,
    /// Empty when it failed.
    pub error: String,
    /// Its trace (tracing on and sampled), else empty.
    pub trace_id: String,
}

/// The last [`KEPT`] slow searches, newest last.
#[derive(Default)]
pub struct SlowSearches(Mutex<VecDeque<SlowSearch>>);

impl SlowSearches {
    pub fn push(&self, search: SlowSearch) {
        if let Ok(mut kept) = self.0.lock() {
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(search);
        }
    }

    /// Newest first.
    pub fn list(&self) -> Vec<SlowSearch> {
        self.0.lock().map(|kept| kept.iter().rev().cloned().collect()).unwrap_or_default()
    }

    /// Puts together a finished search's record.
    pub fn record(&self, steps: Steps, mut search: SlowSearch) {
        search.routing_ms = ms(steps.routing.into_inner().unwrap_or_default());
        search.nodes = steps.nodes.into_inner().unwrap_or_default();
        self.push(search);
    }
}

/// A duration in milliseconds, to the microsecond.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(n: usize) -> SlowSearch {
        SlowSearch {
            at_ms: n as u64,
            collection: "c".into(),
            nq: 1,
            top_k: 10,
            consistency: "Bounded".into(),
            ms: 150.0,
            routing_ms: 0.0,
            merge_ms: 0.1,
            nodes: Vec::new(),
            error: String::new(),
            trace_id: String::new(),
        }
    }

    #[test]
    fn the_newest_are_kept_newest_first() {
        let kept = SlowSearches::default();
        for n in 0..KEPT + 5 {
            kept.push(search(n));
        }
        let list = kept.list();
        assert_eq!(list.len(), KEPT);
        assert_eq!(list[0].at_ms, (KEPT + 4) as u64);
        assert_eq!(list[KEPT - 1].at_ms, 5);
    }

    #[test]
    fn steps_add_up() {
        let steps = Steps::default();
        steps.routed(Duration::from_micros(1500));
        steps.routed(Duration::from_micros(500));
        steps.node(NodeStep {
            node: "qn".into(),
            segments: 2,
            growing: 1,
            rows_searched: 10,
            ms: 3.0,
            error: String::new(),
        });
        let kept = SlowSearches::default();
        kept.record(steps, search(1));
        let got = &kept.list()[0];
        assert_eq!(got.routing_ms, 2.0);
        assert_eq!(got.nodes.len(), 1);
    }
}
