//! Weighted rendezvous (HRW) hashing at segment level, the default router (MISSION S4.4).

use std::cmp::Ordering;

use super::{RouteRequest, Router};
use crate::fnv1a;

/// Every segment goes to the holder with the highest [`hrw_score`], so adding or removing a
/// node moves only that node's segments, and equal weights spread segments evenly.
///
/// This is the consistent-hashing router of S4.4: the same segment keeps landing on the same
/// node search after search (its caches stay warm), and no ring or virtual nodes are needed
/// because every holder is scored directly. Weights bias the spread: a node of weight 2 wins
/// about twice as many segments as a node of weight 1.
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Rendezvous;

/// Weighted HRW score of `(segment, node)`: `-weight / ln(u)` with `u` uniform in (0, 1).
///
/// With this form the probability that a node has the highest score among a segment's holders
/// is its weight divided by the holders' total weight.
pub fn hrw_score(segment: u64, node_id: &str, weight: f64) -> f64 {
    hrw_score_hashed(segment, fnv1a(node_id.as_bytes()), weight)
}

/// [`hrw_score`] for a node whose id was already hashed with [`fnv1a`], so a router scoring
/// many segments hashes each node id once per request instead of once per segment.
pub fn hrw_score_hashed(segment: u64, node_hash: u64, weight: f64) -> f64 {
    score_of_draw(hrw_draw(segment, node_hash), weight)
}

/// The 53-bit uniform draw behind the score of `(segment, node)`.
fn hrw_draw(segment: u64, node_hash: u64) -> u64 {
    let h = node_hash ^ segment.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64 finaliser, so near-identical keys spread over the unit interval.
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z >> 11
}

fn score_of_draw(draw: u64, weight: f64) -> f64 {
    let u = (draw as f64 + 0.5) / (1u64 << 53) as f64;
    -weight.max(f64::MIN_POSITIVE) / u.ln()
}

/// Orders two nodes (given by id hash and weight) by their HRW score for `segment`. The score
/// grows with the draw for a fixed weight, so equal weights (the common case) compare draws
/// and skip the two logarithms, which are most of the cost of routing.
pub(crate) fn hrw_cmp(segment: u64, a: (u64, f64), b: (u64, f64)) -> Ordering {
    let (a_draw, b_draw) = (hrw_draw(segment, a.0), hrw_draw(segment, b.0));
    if a.1 == b.1 {
        a_draw.cmp(&b_draw)
    } else {
        weighted_cmp(a_draw, a.1, b_draw, b.1)
    }
}

/// Out of line on purpose: `ln` is an LLVM intrinsic that may be speculated, and inlined here
/// the optimiser computes both logarithms before the equal-weight test, undoing the shortcut.
#[inline(never)]
fn weighted_cmp(a_draw: u64, a_weight: f64, b_draw: u64, b_weight: f64) -> Ordering {
    score_of_draw(a_draw, a_weight).total_cmp(&score_of_draw(b_draw, b_weight))
}

impl Router for Rendezvous {
    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        let hashes: Vec<u64> = request.nodes.iter().map(|n| fnv1a(n.node_id.as_bytes())).collect();
        request
            .segments
            .iter()
            .map(|s| {
                // (node index, draw, weight) of the best holder so far; each draw computed once.
                let mut best: Option<(u32, u64, f64)> = None;
                for &i in request.holders_of(s) {
                    let (Some(node), Some(&hash)) = (request.nodes.get(i as usize), hashes.get(i as usize)) else {
                        continue;
                    };
                    let draw = hrw_draw(s.id, hash);
                    let wins = match best {
                        None => true,
                        Some((_, b_draw, b_weight)) if b_weight == node.weight => draw >= b_draw,
                        Some((_, b_draw, b_weight)) => {
                            weighted_cmp(draw, node.weight, b_draw, b_weight) != Ordering::Less
                        }
                    };
                    if wins {
                        best = Some((i, draw, node.weight));
                    }
                }
                best.map(|(i, _, _)| i)
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
    fn spreads_evenly_over_four_nodes() {
        let r = all_hold(&["a", "b", "c", "d"], 1000);
        let routes = Rendezvous.route(&r);
        r.check(&routes).unwrap();
        for (node, count) in counts(&r, &routes).into_iter().enumerate() {
            assert!((200..=300).contains(&count), "node {node} got {count} of 1000 segments");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_segments() {
        let before = all_hold(&["a", "b", "c", "d"], 1000);
        let after = all_hold(&["a", "b", "d"], 1000);
        let routes_before = Rendezvous.route(&before);
        let routes_after = Rendezvous.route(&after);
        after.check(&routes_after).unwrap();
        let name = |r: &RouteRequest, route: Option<u32>| r.nodes[route.unwrap() as usize].node_id.clone();
        let mut moved = 0;
        for (b, a) in routes_before.iter().zip(&routes_after) {
            let (b, a) = (name(&before, *b), name(&after, *a));
            if b == "c" {
                moved += 1;
            } else {
                assert_eq!(a, b, "a segment moved from {b} although {b} stayed");
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn adding_a_node_takes_segments_only_from_others_onto_itself() {
        let before = all_hold(&["a", "b", "c"], 1000);
        let after = all_hold(&["a", "b", "c", "new"], 1000);
        let routes_before = Rendezvous.route(&before);
        let routes_after = Rendezvous.route(&after);
        for (b, a) in routes_before.iter().zip(&routes_after) {
            assert!(a == b || *a == Some(3), "a segment moved between two old nodes");
        }
        let gained = counts(&after, &routes_after)[3];
        assert!((200..=300).contains(&gained), "the new node got {gained} of 1000 segments");
    }

    #[test]
    fn weights_bias_the_spread() {
        let mut r = all_hold(&["heavy", "b", "c"], 3000);
        r.nodes[0].weight = 2.0;
        let routes = Rendezvous.route(&r);
        let c = counts(&r, &routes);
        // Expected shares 1/2, 1/4, 1/4.
        assert!((1350..=1650).contains(&c[0]), "heavy node got {c:?}");
        assert!(c[0] as f64 > 1.6 * c[1] as f64 && c[0] as f64 > 1.6 * c[2] as f64, "{c:?}");
    }

    #[test]
    fn stays_on_the_segments_holders() {
        let mut r = request(&["a", "b", "c", "d"]);
        for id in 0..100 {
            r.push_segment(id, 10, [1, 3]);
        }
        let routes = Rendezvous.route(&r);
        r.check(&routes).unwrap();
        let c = counts(&r, &routes);
        assert_eq!(c[0] + c[2], 0);
        assert!(c[1] > 30 && c[3] > 30, "{c:?}");
    }

    #[test]
    fn no_holders_is_none() {
        let mut r = request(&["a", "b"]);
        r.push_segment(1, 10, []);
        r.push_segment(2, 10, [1]);
        let routes = Rendezvous.route(&r);
        assert_eq!(routes, vec![None, Some(1)]);
        r.check(&routes).unwrap();
    }

    #[test]
    fn ignores_the_sequence_and_load() {
        let mut r = all_hold(&["a", "b", "c"], 50);
        let first = Rendezvous.route(&r);
        r.sequence = 17;
        r.nodes[0].in_flight = 1000;
        assert_eq!(Rendezvous.route(&r), first);
    }

    #[test]
    fn hashed_score_matches_the_named_score() {
        for segment in [0, 1, 42, u64::MAX] {
            let named = hrw_score(segment, "host-a-querynode", 1.5);
            let hashed = hrw_score_hashed(segment, crate::fnv1a(b"host-a-querynode"), 1.5);
            assert_eq!(named.to_bits(), hashed.to_bits());
        }
    }

    /// The straightforward form: every holder's full score, the last maximum winning.
    fn reference(request: &RouteRequest) -> Vec<Option<u32>> {
        request
            .segments
            .iter()
            .map(|s| {
                request
                    .holders_of(s)
                    .iter()
                    .filter_map(|&i| request.nodes.get(i as usize).map(|n| (i, hrw_score(s.id, &n.node_id, n.weight))))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i)
            })
            .collect()
    }

    #[test]
    fn matches_the_full_score_computation() {
        let mut r = request(&["a", "b", "c", "d", "e"]);
        r.nodes[1].weight = 0.5;
        r.nodes[3].weight = 3.0;
        for id in 0..2000u64 {
            let holders = (0..5u32).filter(|n| (id >> n) & 1 == 1 || *n == (id % 5) as u32);
            r.push_segment(id.wrapping_mul(0x1234_5678_9abc), 1, holders);
        }
        assert_eq!(Rendezvous.route(&r), reference(&r));
    }

    #[test]
    fn empty_request_routes_nothing() {
        assert!(Rendezvous.route(&RouteRequest::default()).is_empty());
    }
}
