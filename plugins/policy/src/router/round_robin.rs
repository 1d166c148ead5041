//! Round-robin ("polling") routing (MISSION S4.4).

use super::{RouteRequest, Router};

/// Segment `k` of a search (its position in [`RouteRequest::segments`]) goes to holder
/// `(sequence + k) % holder_count` of that segment.
///
/// Adding `sequence` makes successive searches start on the next holder, so a segment's
/// replicas take turns across searches (S2.1's extra QPS from replicas); adding `k` spreads the
/// segments of one search over their holders, so a single search does not pile onto one node
/// (S2.4). It ignores load and latency: use `least-loaded` when nodes differ (S2.7).
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RoundRobin;

impl Router for RoundRobin {
    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        request
            .segments
            .iter()
            .enumerate()
            .map(|(k, segment)| {
                let holders = request.holders_of(segment);
                if holders.is_empty() {
                    return None;
                }
                // Wrapping: the sequence is a counter that may wrap after 2^64 searches.
                let turn = request.sequence.wrapping_add(k as u64) % holders.len() as u64;
                holders.get(turn as usize).copied()
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
    fn one_segment_cycles_over_its_holders_across_searches() {
        let mut r = request(&["a", "b", "c"]);
        r.push_segment(7, 100, [0, 1, 2]);
        let picks: Vec<_> = (0..6)
            .map(|sequence| {
                r.sequence = sequence;
                RoundRobin.route(&r)[0]
            })
            .collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn spreads_the_segments_of_one_search() {
        let r = all_hold(&["a", "b", "c"], 9);
        let routes = RoundRobin.route(&r);
        r.check(&routes).unwrap();
        assert_eq!(counts(&r, &routes), [3, 3, 3]);
        assert_eq!(&routes[..4], [Some(0), Some(1), Some(2), Some(0)]);
    }

    #[test]
    fn follows_each_segments_own_holder_list() {
        let mut r = request(&["a", "b", "c", "d"]);
        r.sequence = 5;
        r.push_segment(1, 10, [3, 1]); // k = 0: (5 + 0) % 2 = 1 → holder 1 → node 1
        r.push_segment(2, 10, [2]); // only one holder
        r.push_segment(3, 10, [0, 1, 2]); // k = 2: (5 + 2) % 3 = 1 → node 1
        let routes = RoundRobin.route(&r);
        assert_eq!(routes, [Some(1), Some(2), Some(1)]);
        r.check(&routes).unwrap();
    }

    #[test]
    fn no_holders_is_none() {
        let mut r = request(&["a"]);
        r.push_segment(1, 10, []);
        r.push_segment(2, 10, [0]);
        let routes = RoundRobin.route(&r);
        assert_eq!(routes, [None, Some(0)]);
        r.check(&routes).unwrap();
    }

    #[test]
    fn a_wrapping_sequence_does_not_overflow() {
        let mut r = all_hold(&["a", "b"], 4);
        r.sequence = u64::MAX;
        let routes = RoundRobin.route(&r);
        r.check(&routes).unwrap();
        // u64::MAX is odd, so segment 0 starts on holder 1, then wraps to 0, 1, 0 ...
        assert_eq!(routes, [Some(1), Some(0), Some(1), Some(0)]);
    }

    #[test]
    fn every_node_gets_the_same_share_over_many_searches() {
        let mut r = all_hold(&["a", "b", "c", "d"], 10);
        let mut total = [0usize; 4];
        for sequence in 0..100 {
            r.sequence = sequence;
            for (node, count) in counts(&r, &RoundRobin.route(&r)).into_iter().enumerate() {
                total[node] += count;
            }
        }
        assert_eq!(total, [250; 4]);
    }
}
