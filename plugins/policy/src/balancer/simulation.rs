//! A what-if copy of a [`ClusterView`] that balance plans are worked out on: each planned move
//! is applied to it, so the next move is chosen against the cluster as it will be.

use std::cmp::Ordering;

use super::{ClusterView, SegmentLoad, SegmentMove};

/// A node's figures as moves are applied.
#[derive(Debug, Clone, Copy)]
pub(super) struct SimNode {
    pub(super) memory_used: u64,
    pub(super) memory_capacity: u64,
    pub(super) rows: u64,
    pub(super) segments: u32,
}

pub(super) struct Simulation<'a> {
    view: &'a ClusterView,
    pub(super) nodes: Vec<SimNode>,
    /// The node each copy in `view.segments` is on now.
    location: Vec<u32>,
    /// Ids of the segments moved so far, sorted: a plan moves a segment at most once
    /// ([`ClusterView::check_plan`]), which also keeps the plan valid against the original view.
    moved: Vec<u64>,
}

impl<'a> Simulation<'a> {
    pub(super) fn new(view: &'a ClusterView) -> Simulation<'a> {
        Simulation {
            view,
            nodes: view
                .nodes
                .iter()
                .map(|n| SimNode {
                    memory_used: n.memory_used,
                    memory_capacity: n.memory_capacity,
                    rows: n.rows,
                    segments: n.segments,
                })
                .collect(),
            location: view.segments.iter().map(|s| s.node).collect(),
            moved: Vec::new(),
        }
    }

    /// The node with the greatest figure (`source`) and the one with the smallest (`target`)
    /// among the nodes `eligible` accepts, ties going to the lower node id either way; `None`
    /// when no node is eligible.
    pub(super) fn extremes(
        &self,
        eligible: impl Fn(&SimNode) -> bool,
        compare: impl Fn(&SimNode, &SimNode) -> Ordering,
    ) -> Option<(usize, usize)> {
        let id_order = |a: usize, b: usize| {
            let name = |i: usize| self.view.nodes.get(i).map(|n| n.node_id.as_str());
            name(a).cmp(&name(b)).then(a.cmp(&b))
        };
        let mut extremes: Option<(usize, usize)> = None;
        for (i, node) in self.nodes.iter().enumerate().filter(|(_, n)| eligible(n)) {
            let Some((high, low)) = extremes else {
                extremes = Some((i, i));
                continue;
            };
            let (Some(high_node), Some(low_node)) = (self.nodes.get(high), self.nodes.get(low)) else { continue };
            let high = match compare(node, high_node).then_with(|| id_order(high, i)) {
                Ordering::Greater => i,
                _ => high,
            };
            let low = match compare(node, low_node).then_with(|| id_order(i, low)) {
                Ordering::Less => i,
                _ => low,
            };
            extremes = Some((high, low));
        }
        extremes
    }

    /// The segment copies on `source` that may move to `target`: not moved yet in this plan,
    /// and with no copy of the same segment on `target` already.
    pub(super) fn movable(&self, source: usize, target: usize) -> impl Iterator<Item = (usize, &'a SegmentLoad)> + '_ {
        let mut on_target: Vec<u64> = self
            .view
            .segments
            .iter()
            .zip(&self.location)
            .filter(|(_, &node)| node as usize == target)
            .map(|(s, _)| s.id)
            .collect();
        on_target.sort_unstable();
        let view: &'a ClusterView = self.view;
        view.segments.iter().enumerate().filter(move |(copy, segment)| {
            self.location.get(*copy).is_some_and(|&node| node as usize == source)
                && on_target.binary_search(&segment.id).is_err()
                && self.moved.binary_search(&segment.id).is_err()
        })
    }

    /// Moves copy `copy` (an index into `view.segments`) to `target` and returns the move.
    pub(super) fn apply(&mut self, copy: usize, target: usize) -> Option<SegmentMove> {
        let segment = self.view.segments.get(copy)?;
        let source = *self.location.get(copy)?;
        let source_index = source as usize;
        if source_index == target || target >= self.nodes.len() || source_index >= self.nodes.len() {
            return None;
        }
        let target = target as u32;
        if let Some(node) = self.nodes.get_mut(source_index) {
            node.memory_used = node.memory_used.saturating_sub(segment.memory_size);
            node.rows = node.rows.saturating_sub(segment.rows);
            node.segments = node.segments.saturating_sub(1);
        }
        if let Some(node) = self.nodes.get_mut(target as usize) {
            node.memory_used = node.memory_used.saturating_add(segment.memory_size);
            node.rows = node.rows.saturating_add(segment.rows);
            node.segments = node.segments.saturating_add(1);
        }
        if let Some(location) = self.location.get_mut(copy) {
            *location = target;
        }
        if let Err(at) = self.moved.binary_search(&segment.id) {
            self.moved.insert(at, segment.id);
        }
        Some(SegmentMove { segment: segment.id, source, target })
    }
}
