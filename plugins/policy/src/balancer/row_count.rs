//! Row-count balancing: the memory balancer's rules applied to rows.

use super::simulation::{SimNode, Simulation};
use super::{percent, BalanceSettings, Balancer, ClusterView, PlacementItem, SegmentMove};

/// Spreads sealed segments so query nodes hold similar numbers of rows.
///
/// Rows are a proxy for search work (every row is scanned or indexed), so this evens out query
/// cost rather than memory; it suits clusters whose nodes have equal memory, or nodes that do
/// not report their capacity.
///
/// **Placement**: items are placed in order, each on the node with the fewest rows after adding
/// the item's rows (ties to the lower node id); that node's count then grows, so a batch spreads.
///
/// **Plans**: balancing is needed while the most and least loaded nodes differ by more than
/// `memory_usage_max_difference_percentage` percent of the larger row count (strictly more).
/// Each step moves one segment from the node with the most rows (source) to the node with the
/// fewest (target), ties to the lower node id, with the same guards as
/// [`super::MemoryBalancer`]: the row difference between the two must shrink strictly, and the
/// target must stay at or below `overloaded_memory_threshold_percentage` of its memory when its
/// capacity is known (rows must never push a node out of memory). Among allowed moves the one
/// leaving the smallest row difference wins (ties: more rows, then the lower segment id); moves
/// are applied to a simulation until balancing is no longer needed, no move is allowed, or
/// `max_moves` is reached. A segment moves at most once per plan.
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RowCountBalancer;

impl Balancer for RowCountBalancer {
    fn place(&self, view: &ClusterView, items: &[PlacementItem]) -> Vec<Option<u32>> {
        let mut rows: Vec<u64> = view.nodes.iter().map(|n| n.rows).collect();
        items
            .iter()
            .map(|item| {
                let after = |i: usize| rows.get(i).map_or(u64::MAX, |r| r.saturating_add(item.rows));
                let chosen = view
                    .nodes
                    .iter()
                    .enumerate()
                    .min_by(|(a, na), (b, nb)| {
                        after(*a).cmp(&after(*b)).then_with(|| na.node_id.cmp(&nb.node_id)).then(a.cmp(b))
                    })
                    .map(|(i, _)| i)?;
                if let Some(r) = rows.get_mut(chosen) {
                    *r = r.saturating_add(item.rows);
                }
                Some(chosen as u32)
            })
            .collect()
    }

    fn plan(&self, view: &ClusterView, settings: &BalanceSettings) -> Vec<SegmentMove> {
        let mut sim = Simulation::new(view);
        let mut moves = Vec::new();
        while moves.len() < settings.max_moves as usize {
            let Some((source, target)) = sim.extremes(|_| true, |a, b| a.rows.cmp(&b.rows)) else { break };
            let (Some(&src), Some(&tgt)) = (sim.nodes.get(source), sim.nodes.get(target)) else { break };
            if source == target || !needs_balance(src.rows, tgt.rows, settings) {
                break;
            }
            let before = src.rows.abs_diff(tgt.rows);
            let best = sim
                .movable(source, target)
                .filter_map(|(copy, segment)| {
                    let after = src.rows.saturating_sub(segment.rows).abs_diff(tgt.rows.saturating_add(segment.rows));
                    let target_memory =
                        SimNode { memory_used: tgt.memory_used.saturating_add(segment.memory_size), ..tgt };
                    let fits = target_memory.memory_capacity == 0
                        || percent(target_memory.memory_used, target_memory.memory_capacity)
                            <= settings.overloaded_memory_threshold_percentage;
                    (fits && after < before).then_some((copy, segment, after))
                })
                .min_by(|(_, a, a_gap), (_, b, b_gap)| {
                    a_gap.cmp(b_gap).then(b.rows.cmp(&a.rows)).then(a.id.cmp(&b.id))
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

/// Whether the most (`high`) and least (`low`) row counts differ by more than the allowed
/// percentage of `high`.
fn needs_balance(high: u64, low: u64, settings: &BalanceSettings) -> bool {
    high.saturating_sub(low) as f64 > high as f64 * settings.memory_usage_max_difference_percentage / 100.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::balancer::{NodeUsage, SegmentLoad};

    fn node(id: &str) -> NodeUsage {
        NodeUsage { node_id: id.into(), memory_used: 0, memory_capacity: 0, rows: 0, segments: 0 }
    }

    /// A view of `nodes` whose rows are exactly the segments on them: `(node, rows)`; every
    /// segment takes 1 byte of memory per row.
    fn view(nodes: &[&str], segments: &[(u32, &[u64])]) -> ClusterView {
        let mut view = ClusterView { nodes: nodes.iter().map(|n| node(n)).collect(), segments: Vec::new() };
        let mut id = 100;
        for (on, rows) in segments {
            for &rows in *rows {
                add(&mut view, id, *on, rows);
                id += 1;
            }
        }
        view
    }

    fn add(view: &mut ClusterView, id: u64, node: u32, rows: u64) {
        view.segments.push(SegmentLoad { id, collection: 1, node, memory_size: rows, rows });
        let n = &mut view.nodes[node as usize];
        n.memory_used += rows;
        n.rows += rows;
        n.segments += 1;
    }

    fn plan_with(view: &ClusterView, settings: &BalanceSettings) -> Vec<SegmentMove> {
        let moves = RowCountBalancer.plan(view, settings);
        view.check_plan(settings, &moves).unwrap();
        moves
    }

    fn plan(view: &ClusterView) -> Vec<SegmentMove> {
        plan_with(view, &BalanceSettings::default())
    }

    fn rows_after(view: &ClusterView, moves: &[SegmentMove]) -> Vec<u64> {
        let mut rows: Vec<u64> = view.nodes.iter().map(|n| n.rows).collect();
        for m in moves {
            let r = view.segments.iter().find(|s| s.id == m.segment && s.node == m.source).unwrap().rows;
            rows[m.source as usize] -= r;
            rows[m.target as usize] += r;
        }
        rows
    }

    fn items(rows: &[u64]) -> Vec<PlacementItem> {
        rows.iter().enumerate().map(|(i, &rows)| PlacementItem { id: i as u64, memory_size: 0, rows }).collect()
    }

    #[test]
    fn place_picks_the_fewest_rows_and_spreads_a_batch() {
        let v = view(&["a", "b", "c"], &[(0, &[500]), (1, &[200])]);
        let batch = items(&[300, 300, 300, 300]);
        let placed = RowCountBalancer.place(&v, &batch);
        v.check_placement(&batch, &placed).unwrap();
        // a 500, b 200, c 0 → c (300); b (500); c (600); then a ties b at 800 and wins by id.
        assert_eq!(placed, [Some(2), Some(1), Some(2), Some(0)]);
    }

    #[test]
    fn place_ignores_memory_and_breaks_ties_by_node_id() {
        let mut v = view(&["zeta", "alpha"], &[]);
        v.nodes[1].memory_used = 1 << 40;
        assert_eq!(RowCountBalancer.place(&v, &items(&[10])), [Some(1)]);
    }

    #[test]
    fn place_without_nodes_is_none() {
        assert_eq!(RowCountBalancer.place(&ClusterView::default(), &items(&[1, 2])), [None, None]);
    }

    #[test]
    fn a_difference_of_exactly_the_allowed_share_does_not_trigger() {
        let v = view(&["a", "b"], &[(0, &[600, 400]), (1, &[700])]); // 1000 vs 700: 30% of 1000
        assert!(plan(&v).is_empty());
    }

    #[test]
    fn a_difference_just_above_the_allowed_share_triggers() {
        let v = view(&["a", "b"], &[(0, &[600, 400]), (1, &[699])]); // 301 > 300
        let moves = plan(&v);
        // Moving 400 leaves 600 vs 1099 (499): worse than 301, refused; 600 is worse still.
        assert!(moves.is_empty());
        let v = view(&["a", "b"], &[(0, &[600, 300, 100]), (1, &[699])]);
        let moves = plan(&v);
        // 100 leaves 900 vs 799 (101), 300 leaves 700 vs 999 (299): 100 wins.
        assert_eq!(moves, [SegmentMove { segment: 102, source: 0, target: 1 }]);
        assert_eq!(rows_after(&v, &moves), [900, 799]);
    }

    #[test]
    fn a_move_that_does_not_shrink_the_difference_is_refused() {
        let v = view(&["a", "b"], &[(0, &[1_000_000])]);
        assert!(plan(&v).is_empty());
    }

    #[test]
    fn the_target_must_stay_below_the_memory_threshold_when_known() {
        let mut v = view(&["a", "b"], &[(0, &[4_000, 2_000]), (1, &[1_000])]);
        // b would get 2_000 bytes more; with 3_000 of 3_500 (85.7%) it fits, at 3_300 it does not.
        v.nodes[1].memory_capacity = 3_500;
        assert_eq!(plan(&v), [SegmentMove { segment: 101, source: 0, target: 1 }]);
        v.nodes[1].memory_capacity = 3_300; // 90.9%
        assert!(plan(&v).is_empty());
        v.nodes[1].memory_capacity = 0; // unknown: rows alone decide
        assert_eq!(plan(&v).len(), 1);
    }

    #[test]
    fn a_new_empty_node_receives_segments() {
        let v = view(&["q1", "q2", "new"], &[(0, &[100; 6]), (1, &[100; 6])]);
        let moves = plan(&v);
        assert!(moves.iter().all(|m| m.target == 2), "{moves:?}");
        assert_eq!(rows_after(&v, &moves), [400, 400, 400]);
    }

    #[test]
    fn max_moves_is_respected() {
        let v = view(&["a", "b"], &[(0, &[10; 20])]);
        let settings = BalanceSettings { max_moves: 3, ..BalanceSettings::default() };
        assert_eq!(plan_with(&v, &settings).len(), 3);
        // Without the limit: 200 vs 0 until the difference is within 30% of the larger count.
        let moves = plan(&v);
        let rows = rows_after(&v, &moves);
        assert!(rows[0].abs_diff(rows[1]) as f64 <= rows[0].max(rows[1]) as f64 * 0.3, "{rows:?}");
        // 120 vs 80 still differs by 40 > 36; 110 vs 90 (20 ≤ 33) ends it.
        assert_eq!(rows, [110, 90]);
        assert_eq!(moves.len(), 9);
    }

    #[test]
    fn empty_views_plan_nothing() {
        assert!(plan(&ClusterView::default()).is_empty());
        assert!(plan(&view(&["only"], &[(0, &[10, 20])])).is_empty());
        assert!(plan(&view(&["a", "b"], &[])).is_empty());
    }
}
