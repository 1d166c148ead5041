//! Least-expected-cost routing for long-tail avoidance (MISSION S2.7).

use super::rendezvous::hrw_cmp;
use std::cmp::Ordering;

use super::{NodeLoad, RouteRequest, Router};
use crate::fnv1a;

/// Each segment goes to the holder with the lowest expected cost
///
/// ```text
/// (in_flight + segments already given to the node in this search + 1) × latency / weight
/// ```
///
/// that is, roughly how long the node would take to answer if its queue drains at its recent
/// latency. A busy node (many sub-requests in flight) or a slow node (high latency) therefore
/// gives its segments to other replicas holding them, which is how the proxy avoids the long
/// tail of S2.7; counting this search's own assignments spreads a single search over idle
/// replicas instead of sending everything to the one idle node.
///
/// `latency` is the node's `latency_us`; a node without a figure yet (0) is assumed to be as
/// fast as the average of the nodes with one, so a new node is neither shunned nor flooded, and
/// when no node has a figure every node counts as 1 µs (cost then follows queue length alone).
/// Equal costs go to the holder with the highest [`super::hrw_score`], so the answer is
/// deterministic and an idle cluster routes like [`super::Rendezvous`].
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LeastLoaded;

/// Per-node figures for one request, computed once and updated as segments are assigned.
struct NodeCost {
    /// Sub-requests in flight plus segments assigned in this request.
    queued: u64,
    /// Expected time per sub-request: latency estimate / weight.
    per_request: f64,
    /// `fnv1a(node_id)`, for the rendezvous tie-break.
    id_hash: u64,
    weight: f64,
}

impl NodeCost {
    fn new(node: &NodeLoad, fallback_latency: f64) -> NodeCost {
        let latency = if node.latency_us == 0 { fallback_latency } else { f64::from(node.latency_us) };
        // A zero, negative or NaN weight would make costs negative or NaN; treat it as tiny.
        let weight = node.weight.max(f64::MIN_POSITIVE);
        NodeCost {
            queued: u64::from(node.in_flight),
            per_request: latency / weight,
            id_hash: fnv1a(node.node_id.as_bytes()),
            weight: node.weight,
        }
    }

    /// Expected cost of giving this node one more segment.
    fn cost(&self) -> f64 {
        (self.queued + 1) as f64 * self.per_request
    }

    /// What [`hrw_cmp`] needs to break a tie.
    fn hrw_key(&self) -> (u64, f64) {
        (self.id_hash, self.weight)
    }
}

/// The mean of the known (non-zero) latencies, or 1 µs when none is known.
fn fallback_latency(nodes: &[NodeLoad]) -> f64 {
    let (sum, known) = nodes
        .iter()
        .filter(|n| n.latency_us != 0)
        .fold((0u64, 0u64), |(sum, known), n| (sum + u64::from(n.latency_us), known + 1));
    if known == 0 {
        1.0
    } else {
        sum as f64 / known as f64
    }
}

impl Router for LeastLoaded {
    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        let fallback = fallback_latency(&request.nodes);
        let mut nodes: Vec<NodeCost> = request.nodes.iter().map(|n| NodeCost::new(n, fallback)).collect();
        request
            .segments
            .iter()
            .map(|segment| {
                // (holder, its cost) of the cheapest holder so far.
                let mut best: Option<(u32, f64)> = None;
                for &holder in request.holders_of(segment) {
                    let Some(node) = nodes.get(holder as usize) else { continue };
                    let cost = node.cost();
                    let wins = match best {
                        None => true,
                        Some((b, b_cost)) => match cost.total_cmp(&b_cost) {
                            Ordering::Less => true,
                            Ordering::Greater => false,
                            Ordering::Equal => nodes.get(b as usize).is_none_or(|b_node| {
                                hrw_cmp(segment.id, node.hrw_key(), b_node.hrw_key()) != Ordering::Less
                            }),
                        },
                    };
                    if wins {
                        best = Some((holder, cost));
                    }
                }
                let (chosen, _) = best?;
                if let Some(node) = nodes.get_mut(chosen as usize) {
                    node.queued += 1;
                }
                Some(chosen)
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::router::test_support::{all_hold, counts, request};
    use crate::router::Rendezvous;

    #[test]
    fn a_busy_node_is_avoided() {
        let mut r = all_hold(&["busy", "b", "c"], 10);
        r.nodes[0].in_flight = 10;
        let routes = LeastLoaded.route(&r);
        r.check(&routes).unwrap();
        assert_eq!(counts(&r, &routes), [0, 5, 5]);
    }

    #[test]
    fn a_busy_node_still_gets_work_once_the_others_queue_up() {
        let mut r = all_hold(&["busy", "idle"], 4);
        r.nodes[0].in_flight = 2;
        let routes = LeastLoaded.route(&r);
        // Costs: busy 3, 4, ...; idle 1, 2, 3, 4 ...: idle takes two, then they alternate.
        assert_eq!(counts(&r, &routes), [1, 3]);
    }

    #[test]
    fn a_slow_node_is_avoided() {
        let mut r = all_hold(&["slow", "b", "c"], 10);
        r.nodes[0].latency_us = 10_000;
        r.nodes[1].latency_us = 1_000;
        r.nodes[2].latency_us = 1_000;
        let routes = LeastLoaded.route(&r);
        r.check(&routes).unwrap();
        assert_eq!(counts(&r, &routes), [0, 5, 5]);
    }

    #[test]
    fn a_slow_node_takes_work_when_fast_nodes_are_deeply_queued() {
        let mut r = all_hold(&["slow", "fast"], 1);
        r.nodes[0].latency_us = 4_000;
        r.nodes[1].latency_us = 1_000;
        r.nodes[1].in_flight = 4; // fast: 5 × 1000 = 5000 > slow: 1 × 4000
        assert_eq!(LeastLoaded.route(&r), [Some(0)]);
    }

    #[test]
    fn spreads_evenly_when_all_nodes_are_equal() {
        let r = all_hold(&["a", "b", "c", "d"], 100);
        let routes = LeastLoaded.route(&r);
        r.check(&routes).unwrap();
        assert_eq!(counts(&r, &routes), [25; 4]);
    }

    #[test]
    fn weight_is_respected() {
        let mut r = all_hold(&["big", "small"], 30);
        r.nodes[0].weight = 2.0;
        let routes = LeastLoaded.route(&r);
        let c = counts(&r, &routes);
        assert!((19..=21).contains(&c[0]) && c[0] + c[1] == 30, "{c:?}");
    }

    #[test]
    fn unknown_latency_counts_as_the_mean_of_known_ones() {
        let mut r = request(&["new", "fast", "slow"]);
        r.nodes[1].latency_us = 1_000;
        r.nodes[2].latency_us = 3_000;
        // "new" is assumed to take 2000 µs: slower than "fast", faster than "slow".
        r.push_segment(1, 10, [0, 1]);
        r.push_segment(2, 10, [0, 2]);
        assert_eq!(LeastLoaded.route(&r), [Some(1), Some(0)]);
    }

    #[test]
    fn without_any_latency_the_queue_length_decides() {
        let mut r = all_hold(&["a", "b"], 1);
        r.nodes[0].in_flight = 1;
        assert_eq!(LeastLoaded.route(&r), [Some(1)]);
        assert_eq!(fallback_latency(&r.nodes), 1.0);
    }

    #[test]
    fn ties_follow_rendezvous() {
        // One segment per request: every holder ties, so the highest HRW score must win.
        for id in 0..200 {
            let mut r = request(&["a", "b", "c", "d"]);
            r.push_segment(id, 10, [0, 1, 2, 3]);
            assert_eq!(LeastLoaded.route(&r), Rendezvous.route(&r), "segment {id}");
        }
    }

    #[test]
    fn is_deterministic() {
        let mut r = all_hold(&["a", "b", "c"], 50);
        r.nodes[1].in_flight = 3;
        assert_eq!(LeastLoaded.route(&r), LeastLoaded.route(&r.clone()));
    }

    #[test]
    fn assignments_in_one_search_count_across_segments_with_different_holders() {
        let mut r = request(&["a", "b", "c"]);
        r.push_segment(1, 10, [0]); // only a holds it: a now has one queued
        r.push_segment(2, 10, [0, 1]); // b is emptier
        r.push_segment(3, 10, [0, 1, 2]); // c is emptier still
        assert_eq!(LeastLoaded.route(&r), [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn no_holders_is_none_and_bad_indexes_are_skipped() {
        let mut r = request(&["a", "b"]);
        r.push_segment(1, 10, []);
        r.push_segment(2, 10, [9, 1]);
        r.push_segment(3, 10, [9]);
        assert_eq!(LeastLoaded.route(&r), [None, Some(1), None]);
    }

    #[test]
    fn odd_weights_do_not_produce_nan_choices() {
        let mut r = all_hold(&["zero", "nan", "normal"], 10);
        r.nodes[0].weight = 0.0;
        r.nodes[1].weight = f64::NAN;
        r.nodes[2].latency_us = 100;
        let routes = LeastLoaded.route(&r);
        r.check(&routes).unwrap();
        assert_eq!(counts(&r, &routes), [0, 0, 10]);
    }
}
