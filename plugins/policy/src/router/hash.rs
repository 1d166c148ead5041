//! Plain modulo hashing (MISSION S4.4's "hashing").

use super::{RouteRequest, Router};
use crate::fnv1a;

/// Segment `s` goes to holder `fnv1a(s.id as little-endian bytes) % holder_count`.
///
/// The choice is stable for as long as a segment's holder list stays the same, so a segment
/// keeps hitting the same node and its caches stay warm. Unlike [`super::Rendezvous`], any
/// change to the holder list (a node added or removed, or the list reordered) reshuffles about
/// all of the segment's assignments, not just the changed node's share; it is the cheapest
/// router (one hash per segment, no per-node work) and makes sense for fixed replica groups.
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HashRouter;

impl Router for HashRouter {
    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        request
            .segments
            .iter()
            .map(|segment| {
                let holders = request.holders_of(segment);
                if holders.is_empty() {
                    return None;
                }
                let slot = fnv1a(&segment.id.to_le_bytes()) % holders.len() as u64;
                holders.get(slot as usize).copied()
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::router::test_support::{all_hold, counts, request};

    #[test]
    fn picks_the_holder_at_hash_modulo_count() {
        let mut r = request(&["a", "b", "c"]);
        for id in [0u64, 1, 2, 99, u64::MAX] {
            r.push_segment(id, 10, [2, 0, 1]);
        }
        let routes = HashRouter.route(&r);
        r.check(&routes).unwrap();
        for (segment, route) in r.segments.iter().zip(&routes) {
            let expected = [2, 0, 1][(fnv1a(&segment.id.to_le_bytes()) % 3) as usize];
            assert_eq!(*route, Some(expected), "segment {}", segment.id);
        }
    }

    #[test]
    fn is_stable_across_searches_and_load() {
        let mut r = all_hold(&["a", "b", "c"], 100);
        let first = HashRouter.route(&r);
        r.sequence = 12345;
        r.nodes[1].in_flight = 99;
        r.nodes[2].latency_us = 50_000;
        assert_eq!(HashRouter.route(&r), first);
    }

    #[test]
    fn spreads_many_segments_roughly_evenly() {
        let r = all_hold(&["a", "b", "c", "d"], 1000);
        let routes = HashRouter.route(&r);
        r.check(&routes).unwrap();
        for (node, count) in counts(&r, &routes).into_iter().enumerate() {
            assert!((200..=300).contains(&count), "node {node} got {count} of 1000 segments");
        }
    }

    #[test]
    fn a_changed_holder_set_reshuffles_more_than_rendezvous_would() {
        // The contrast with rendezvous: dropping one of four nodes should move only ~1/4 of the
        // segments, but modulo hashing moves most of them.
        let before = all_hold(&["a", "b", "c", "d"], 1000);
        let after = all_hold(&["a", "b", "c"], 1000);
        let (b, a) = (HashRouter.route(&before), HashRouter.route(&after));
        let moved = b.iter().zip(&a).filter(|(b, a)| b != a && **b != Some(3)).count();
        assert!(moved > 400, "only {moved} segments of surviving nodes moved");
    }

    #[test]
    fn no_holders_is_none() {
        let mut r = request(&["a"]);
        r.push_segment(1, 10, []);
        r.push_segment(2, 10, [0]);
        let routes = HashRouter.route(&r);
        assert_eq!(routes, [None, Some(0)]);
        r.check(&routes).unwrap();
    }
}
