//! Memory-based balancing, the default balancer: Milvus' query-coordinator rules (MISSION S1.1–S1.3).

use std::cmp::Ordering;

use super::simulation::{SimNode, Simulation};
use super::{percent, BalanceSettings, Balancer, ClusterView, PlacementItem, SegmentMove};

/// Spreads sealed segments over query nodes by memory use in percent of capacity.
///
/// **Placement** (S1.1): items are placed in order, each on the node whose memory use would be
/// the lowest percentage *after* loading it (ties to the lower node id); that node's usage then
/// grows by the item's size, so one batch spreads over the nodes instead of all landing on the
/// emptiest one, and a new, empty node receives work first. Nodes reporting no capacity (0 =
/// unknown) are used only when no node reports one, and then by absolute memory in use.
///
/// **Plans** (S1.2, S1.3), on the nodes that report a capacity:
/// - Balancing is needed while some node is above `overloaded_memory_threshold_percentage` or
///   the most and least used nodes differ by more than `memory_usage_max_difference_percentage`
///   points (both strict: exactly 90% is not overloaded, a difference of exactly 30 is fine).
/// - Each step moves one segment from the most used node (source) to the least used (target),
///   ties to the lower node id. A move is allowed only if afterwards the target is still at or
///   below the overload threshold *and* the source/target difference is strictly smaller than
///   before, so a plan never overloads a node and never makes a pair worse or swaps who is
///   ahead by as much (which would make the next plan move it back).
/// - Among allowed moves the one leaving the smallest difference wins (ties: the larger segment,
///   which frees more memory, then the lower segment id); it is applied to a simulation of the
///   cluster and the next step starts from there.
/// - Planning stops when balancing is no longer needed, no move is allowed, or `max_moves` is
///   reached. A segment moves at most once per plan.
///
/// The "smaller difference" test is done in exact integer arithmetic (the two nodes'
/// capacities cross-multiplied), so a move that exactly preserves the difference is refused
/// however the percentages round.
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MemoryBalancer;

impl Balancer for MemoryBalancer {
    fn place(&self, view: &ClusterView, items: &[PlacementItem]) -> Vec<Option<u32>> {
        let mut used: Vec<u64> = view.nodes.iter().map(|n| n.memory_used).collect();
        let any_known = view.nodes.iter().any(|n| n.memory_capacity > 0);
        items
            .iter()
            .map(|item| {
                let after = |i: usize| used.get(i).map_or(u64::MAX, |u| u.saturating_add(item.memory_size));
                let chosen = view
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| !any_known || n.memory_capacity > 0)
                    .min_by(|(a, na), (b, nb)| {
                        let by_memory = if any_known {
                            percent(after(*a), na.memory_capacity).total_cmp(&percent(after(*b), nb.memory_capacity))
                        } else {
                            after(*a).cmp(&after(*b))
                        };
                        by_memory.then_with(|| na.node_id.cmp(&nb.node_id)).then(a.cmp(b))
                    })
                    .map(|(i, _)| i)?;
                if let Some(u) = used.get_mut(chosen) {
                    *u = u.saturating_add(item.memory_size);
                }
                Some(chosen as u32)
            })
            .collect()
    }

    fn plan(&self, view: &ClusterView, settings: &BalanceSettings) -> Vec<SegmentMove> {
        let mut sim = Simulation::new(view);
        let mut moves = Vec::new();
        while moves.len() < settings.max_moves as usize {
            let Some((source, target)) = sim.extremes(|n| n.memory_capacity > 0, |a, b| usage(a).total_cmp(&usage(b)))
            else {
                break;
            };
            let (Some(&src), Some(&tgt)) = (sim.nodes.get(source), sim.nodes.get(target)) else { break };
            if source == target || !needs_balance(usage(&src), usage(&tgt), settings) {
                break;
            }
            let before = gap(&src, &tgt);
            let best = sim
                .movable(source, target)
                .filter_map(|(copy, segment)| {
                    let src_after = SimNode { memory_used: src.memory_used.saturating_sub(segment.memory_size), ..src };
                    let tgt_after = SimNode { memory_used: tgt.memory_used.saturating_add(segment.memory_size), ..tgt };
                    let after = gap(&src_after, &tgt_after);
                    let allowed =
                        usage(&tgt_after) <= settings.overloaded_memory_threshold_percentage && after < before;
                    allowed.then_some((copy, segment, after))
                })
                .min_by(|(_, a, a_gap), (_, b, b_gap)| {
                    a_gap.cmp(b_gap).then(b.memory_size.cmp(&a.memory_size)).then(a.id.cmp(&b.id))
                });
            let Some((copy, _, _)) = best else { break };
            match sim.apply(copy, target) {
                Some(m) => moves.push(m),
                None => break,
            }
        }
        moves
    }
}

/// Memory use in percent of capacity.
fn usage(node: &SimNode) -> f64 {
    percent(node.memory_used, node.memory_capacity)
}

/// S1.2's trigger for the most (`high`) and least (`low`) used nodes, both in percent.
fn needs_balance(high: f64, low: f64, settings: &BalanceSettings) -> bool {
    high > settings.overloaded_memory_threshold_percentage
        || high - low > settings.memory_usage_max_difference_percentage
}

/// `|a% − b%|` scaled by `a.capacity × b.capacity / 100`, exact: only comparable between
/// figures of the same two nodes, whose capacities do not change.
fn gap(a: &SimNode, b: &SimNode) -> u128 {
    let a_scaled = u128::from(a.memory_used) * u128::from(b.memory_capacity);
    let b_scaled = u128::from(b.memory_used) * u128::from(a.memory_capacity);
    match a_scaled.cmp(&b_scaled) {
        Ordering::Less => b_scaled - a_scaled,
        _ => a_scaled - b_scaled,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::balancer::{NodeUsage, SegmentLoad};

    const CAP: u64 = 10_000;

    /// A node named `id` with `CAP` capacity and no segments yet.
    fn node(id: &str, memory_used: u64) -> NodeUsage {
        NodeUsage { node_id: id.into(), memory_used, memory_capacity: CAP, rows: 0, segments: 0 }
    }

    /// A view of `nodes` whose memory use is exactly the segments on them: `(node, sizes)`.
    fn view(nodes: &[&str], segments: &[(u32, &[u64])]) -> ClusterView {
        let mut view = ClusterView { nodes: nodes.iter().map(|n| node(n, 0)).collect(), segments: Vec::new() };
        let mut id = 100;
        for (on, sizes) in segments {
            for &size in *sizes {
                add(&mut view, id, *on, size);
                id += 1;
            }
        }
        view
    }

    fn add(view: &mut ClusterView, id: u64, node: u32, memory_size: u64) {
        view.segments.push(SegmentLoad { id, collection: 1, node, memory_size, rows: memory_size * 10 });
        let n = &mut view.nodes[node as usize];
        n.memory_used += memory_size;
        n.rows += memory_size * 10;
        n.segments += 1;
    }

    fn plan(view: &ClusterView) -> Vec<SegmentMove> {
        plan_with(view, &BalanceSettings::default())
    }

    fn plan_with(view: &ClusterView, settings: &BalanceSettings) -> Vec<SegmentMove> {
        let moves = MemoryBalancer.plan(view, settings);
        view.check_plan(settings, &moves).unwrap();
        moves
    }

    /// Memory percentages after applying `moves`.
    fn after(view: &ClusterView, moves: &[SegmentMove]) -> Vec<f64> {
        let mut used: Vec<u64> = view.nodes.iter().map(|n| n.memory_used).collect();
        for m in moves {
            let size = view.segments.iter().find(|s| s.id == m.segment && s.node == m.source).unwrap().memory_size;
            used[m.source as usize] -= size;
            used[m.target as usize] += size;
        }
        used.iter().zip(&view.nodes).map(|(u, n)| percent(*u, n.memory_capacity)).collect()
    }

    // ---- placement ----

    #[test]
    fn place_picks_the_lowest_percent_after_adding() {
        // a: 50% of 10_000; b: 40% of 20_000. With 2_000 more: a 70%, b 50%.
        let mut v = view(&["a", "b"], &[]);
        v.nodes[0].memory_used = 5_000;
        v.nodes[1] = NodeUsage { memory_used: 8_000, memory_capacity: 20_000, ..node("b", 0) };
        let items = [PlacementItem { id: 1, memory_size: 2_000, rows: 0 }];
        assert_eq!(MemoryBalancer.place(&v, &items), [Some(1)]);
    }

    #[test]
    fn place_judges_after_adding_not_before() {
        // Before: small 10% < big 20%. After 1_000 more: small 10_000 cap → 20%,
        // big 100_000 cap → 21%: still small. With 2_000: small 30%, big 22% → big.
        let mut v = view(&["small", "big"], &[]);
        v.nodes[0].memory_used = 1_000;
        v.nodes[1] = NodeUsage { memory_used: 20_000, memory_capacity: 100_000, ..node("big", 0) };
        assert_eq!(MemoryBalancer.place(&v, &[PlacementItem { id: 1, memory_size: 1_000, rows: 0 }]), [Some(0)]);
        assert_eq!(MemoryBalancer.place(&v, &[PlacementItem { id: 1, memory_size: 2_000, rows: 0 }]), [Some(1)]);
    }

    #[test]
    fn a_batch_spreads_because_usage_grows_as_items_are_placed() {
        let v = view(&["a", "b", "c"], &[]);
        let items: Vec<_> = (0..6).map(|id| PlacementItem { id, memory_size: 1_000, rows: 0 }).collect();
        let placed = MemoryBalancer.place(&v, &items);
        v.check_placement(&items, &placed).unwrap();
        assert_eq!(placed, [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn a_new_empty_node_gets_new_segments_first() {
        let v = view(&["old-1", "old-2", "new"], &[(0, &[3_000]), (1, &[3_000])]);
        let items: Vec<_> = (0..4).map(|id| PlacementItem { id, memory_size: 1_000, rows: 0 }).collect();
        // new: 10%, 20%, 30% — then a three-way tie at 40% after adding, broken by id.
        assert_eq!(MemoryBalancer.place(&v, &items), [Some(2), Some(2), Some(2), Some(2)]);
        let five: Vec<_> = (0..5).map(|id| PlacementItem { id, memory_size: 1_000, rows: 0 }).collect();
        assert_eq!(MemoryBalancer.place(&v, &five)[4], Some(0));
    }

    #[test]
    fn place_ties_go_to_the_lower_node_id_not_the_lower_index() {
        let v = view(&["zeta", "alpha"], &[]);
        assert_eq!(MemoryBalancer.place(&v, &[PlacementItem { id: 1, memory_size: 10, rows: 0 }]), [Some(1)]);
    }

    #[test]
    fn unknown_capacity_is_used_only_when_nothing_else_exists() {
        let mut v = view(&["unknown", "known"], &[]);
        v.nodes[0].memory_capacity = 0;
        v.nodes[1].memory_used = 9_500;
        let items = [PlacementItem { id: 1, memory_size: 1_000, rows: 0 }];
        assert_eq!(MemoryBalancer.place(&v, &items), [Some(1)]);

        let mut v = view(&["u1", "u2"], &[]);
        v.nodes[0].memory_capacity = 0;
        v.nodes[1].memory_capacity = 0;
        v.nodes[0].memory_used = 500;
        let items: Vec<_> = (0..3).map(|id| PlacementItem { id, memory_size: 1_000, rows: 0 }).collect();
        // By absolute use: u2 (1000 < 1500), then u1 (1500 < 2000), then u2 again.
        assert_eq!(MemoryBalancer.place(&v, &items), [Some(1), Some(0), Some(1)]);
    }

    #[test]
    fn place_without_nodes_is_none() {
        let v = ClusterView::default();
        let items =
            [PlacementItem { id: 1, memory_size: 1, rows: 1 }, PlacementItem { id: 2, memory_size: 0, rows: 0 }];
        assert_eq!(MemoryBalancer.place(&v, &items), [None, None]);
        assert!(MemoryBalancer.place(&v, &[]).is_empty());
    }

    // ---- plans: when balancing triggers ----

    #[test]
    fn exactly_at_the_overload_threshold_is_not_overloaded() {
        // 90% vs 70%: not overloaded, difference 20 ≤ 30: nothing to do.
        let v = view(&["a", "b"], &[(0, &[4_500, 4_500]), (1, &[7_000])]);
        assert!(plan(&v).is_empty());
    }

    #[test]
    fn just_above_the_overload_threshold_triggers() {
        // 90.01% vs 70%: overloaded; moving the 1 (0.01%) segment is the only allowed move.
        let v = view(&["a", "b"], &[(0, &[4_500, 4_500, 1]), (1, &[7_000])]);
        let moves = plan(&v);
        assert_eq!(moves, [SegmentMove { segment: 102, source: 0, target: 1 }]);
        assert_eq!(after(&v, &moves), [90.0, 70.01]);
    }

    #[test]
    fn a_difference_of_exactly_the_maximum_does_not_trigger() {
        let v = view(&["a", "b"], &[(0, &[3_000, 3_000]), (1, &[3_000])]); // 60% vs 30%
        assert!(plan(&v).is_empty());
    }

    #[test]
    fn a_difference_just_above_the_maximum_triggers() {
        let v = view(&["a", "b"], &[(0, &[3_000, 3_000, 1]), (1, &[3_000])]); // 60.01% vs 30%
        let moves = plan(&v);
        assert_eq!(moves.len(), 1);
        // Moving the 1 leaves 60 vs 30.01 and moving a 3_000 leaves 30.01 vs 60: a difference of
        // 29.99 either way, so the tie goes to the larger segment, then the lower id.
        assert_eq!(moves[0], SegmentMove { segment: 100, source: 0, target: 1 });
        assert_eq!(after(&v, &moves), [30.01, 60.0]);
    }

    #[test]
    fn a_balanced_cluster_needs_no_moves() {
        let v = view(&["a", "b", "c"], &[(0, &[2_000, 2_000]), (1, &[3_000]), (2, &[1_000, 1_500])]);
        assert!(plan(&v).is_empty());
    }

    // ---- plans: which moves are allowed ----

    #[test]
    fn a_move_that_would_overload_the_target_is_refused() {
        // a is at 95%, b at 85%. The only segment on a is 500 (5%): b would go to 90%, allowed;
        // make it 600 and b would reach 91%: refused, although a stays overloaded.
        let allowed = view(&["a", "b"], &[(0, &[9_000, 500]), (1, &[8_500])]);
        assert_eq!(plan(&allowed).len(), 1);
        let refused = view(&["a", "b"], &[(0, &[8_900, 600]), (1, &[8_500])]);
        assert_eq!(refused.nodes[0].memory_used, 9_500);
        assert!(plan(&refused).iter().all(|m| m.segment != 101));
        // 8_900 would also overload b; so nothing at all moves.
        assert!(plan(&refused).is_empty());
    }

    #[test]
    fn a_move_that_does_not_shrink_the_difference_is_refused() {
        // One huge segment: 80% vs 0%. Moving it gives 0% vs 80%: the same difference, refused.
        let v = view(&["a", "b"], &[(0, &[8_000])]);
        assert!(plan(&v).is_empty());
        // On a target twice as big the same segment is 40%: 80 vs 0 becomes 0 vs 40, allowed.
        let mut v = view(&["a", "b"], &[(0, &[8_000])]);
        v.nodes[1].memory_capacity = 2 * CAP;
        assert_eq!(plan(&v), [SegmentMove { segment: 100, source: 0, target: 1 }]);
    }

    #[test]
    fn picks_the_move_leaving_the_smallest_difference() {
        // 80% vs 20%: difference 60. Candidates of 5, 10, 35 and 25 points leave
        // 75/25 (50), 70/30 (40), 45/55 (10) and 55/45 (10): a tie, won by the larger segment.
        let v = view(&["a", "b"], &[(0, &[500, 1_000, 3_500, 2_500, 500]), (1, &[2_000])]);
        let moves = plan(&v);
        // Then 45% vs 55% is balanced: done.
        assert_eq!(moves, [SegmentMove { segment: 102, source: 0, target: 1 }]);
    }

    #[test]
    fn a_segment_the_target_already_holds_is_not_a_candidate() {
        // a: 80% with segments 1 (4_000) and 2 (4_000); b: 20% holding a replica of segment 1.
        let mut v = view(&["a", "b"], &[]);
        add(&mut v, 1, 0, 4_000);
        add(&mut v, 2, 0, 4_000);
        add(&mut v, 1, 1, 2_000);
        let moves = plan(&v);
        assert_eq!(moves, [SegmentMove { segment: 2, source: 0, target: 1 }]);
    }

    // ---- plans: S1.1, multiple steps, limits ----

    #[test]
    fn a_new_empty_node_receives_segments() {
        let sizes: &[u64] = &[1_000; 8];
        let v = view(&["q1", "q2", "q3-new"], &[(0, sizes), (1, sizes)]); // 80%, 80%, 0%
        let moves = plan(&v);
        assert!(!moves.is_empty());
        assert!(moves.iter().all(|m| m.target == 2), "{moves:?}");
        let pct = after(&v, &moves);
        let spread = pct.iter().cloned().fold(f64::MIN, f64::max) - pct.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread <= 30.0, "{pct:?}");
        // Both old nodes gave: q1 first (tie by id), then alternating as each becomes the most used.
        assert!(moves.iter().any(|m| m.source == 0) && moves.iter().any(|m| m.source == 1));
    }

    #[test]
    fn moves_continue_until_the_trigger_clears() {
        let v = view(&["a", "b"], &[(0, &[1_000; 9])]); // 90% vs 0%
        let moves = plan(&v);
        // 80/10 (70), 70/20 (50), 60/30 (30): the difference is no longer above 30. Stop.
        assert_eq!(moves.len(), 3);
        assert_eq!(after(&v, &moves), [60.0, 30.0]);
    }

    #[test]
    fn max_moves_is_respected() {
        let v = view(&["a", "b"], &[(0, &[500; 18])]); // 90% vs 0%
        let settings = BalanceSettings { max_moves: 2, ..BalanceSettings::default() };
        assert_eq!(plan_with(&v, &settings).len(), 2);
        let settings = BalanceSettings { max_moves: 0, ..BalanceSettings::default() };
        assert!(plan_with(&v, &settings).is_empty());
        assert_eq!(plan(&v).len(), 6); // 60 / 30 with the default limit of 16
    }

    #[test]
    fn every_step_shrinks_the_gap_and_never_overloads_a_target() {
        let mut v = view(&["a", "b", "c", "d"], &[]);
        let mut id = 0;
        for (node, sizes) in [(0u32, [900u64, 1_300, 2_100, 700, 2_900, 1_000]), (1, [400, 800, 300, 200, 0, 0])] {
            for size in sizes {
                add(&mut v, id, node, size);
                id += 1;
            }
        }
        v.nodes[2].memory_capacity = 5_000;
        v.nodes[3].memory_used = 8_000; // memory not accounted for by segments
        let settings = BalanceSettings { max_moves: 100, ..BalanceSettings::default() };
        let moves = plan_with(&v, &settings);
        assert!(!moves.is_empty());
        for k in 1..=moves.len() {
            let pct = after(&v, &moves[..k]);
            assert!(pct[moves[k - 1].target as usize] <= 90.0);
        }
    }

    #[test]
    fn nodes_without_capacity_are_ignored() {
        let mut v = view(&["a", "unknown"], &[(0, &[5_000, 4_500])]);
        v.nodes[1].memory_capacity = 0;
        assert!(plan(&v).is_empty()); // a is 95%, but there is nowhere to go
        v.nodes.push(node("c", 0));
        let moves = plan(&v);
        assert!(moves.iter().all(|m| m.target == 2), "{moves:?}");
        assert!(!moves.is_empty());
    }

    #[test]
    fn all_equally_overloaded_nodes_cannot_be_helped() {
        let v = view(&["a", "b"], &[(0, &[9_500]), (1, &[9_500])]);
        assert!(plan(&v).is_empty());
    }

    #[test]
    fn empty_views_plan_nothing() {
        assert!(plan(&ClusterView::default()).is_empty());
        assert!(plan(&view(&["a"], &[(0, &[9_900])])).is_empty());
    }

    #[test]
    fn a_segment_moves_at_most_once_even_with_replicas_on_two_sources() {
        // Segment 1 is on a and b, both full; c and d empty.
        let mut v = view(&["a", "b", "c", "d"], &[]);
        add(&mut v, 1, 0, 5_000);
        add(&mut v, 1, 1, 5_000);
        add(&mut v, 2, 0, 4_000);
        add(&mut v, 3, 1, 4_000);
        let moves = plan(&v);
        let ones = moves.iter().filter(|m| m.segment == 1).count();
        assert!(ones <= 1, "{moves:?}");
    }

    #[test]
    fn source_and_target_ties_go_to_the_lower_node_id() {
        // Two equally full nodes, two equally empty ones: z-full and a-full, z-empty and b-empty.
        let v = view(&["z-full", "a-full", "z-empty", "b-empty"], &[(0, &[4_000, 4_000]), (1, &[4_000, 4_000])]);
        let moves = plan(&v);
        assert_eq!(moves[0], SegmentMove { segment: 102, source: 1, target: 3 });
        assert_eq!(moves[1], SegmentMove { segment: 100, source: 0, target: 2 });
    }
}
