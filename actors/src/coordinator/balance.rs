//! Query-load balancing (MISSION S1): every `[balance] interval` the coordinator shows the
//! balancer policy a view of the query nodes (memory used / capacity, rows, segments) and the
//! sealed segments they hold, and carries out the moves it plans.
//!
//! A move is a hand-off (S1.4): the segment's target becomes the new node, which loads it
//! while the old node keeps serving it; once the new node confirms, the layout names only the
//! new node, proxies switch, and the old node is told to release it on the next reconcile.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use quiver_policy::balancer::{BalanceSettings, ClusterView, NodeUsage, SegmentLoad, SegmentMove};
use quiver_runtime::{Config, Result};
use quiver_schemas::protocol::keys;
use quiver_schemas::{NodeStatus, Role, SegmentState};

use super::{Catalog, Coordinator};

pub fn settings(config: &Config) -> BalanceSettings {
    BalanceSettings {
        overloaded_memory_threshold_percentage: config.balance.overloaded_memory_threshold_percentage,
        memory_usage_max_difference_percentage: config.balance.memory_usage_max_difference_percentage,
        max_moves: config.balance.max_moves,
    }
}

/// The balancer's view of `nodes`: their memory figures and the settled copies of sealed
/// segments they hold (a segment being handed off is left out, so it is not moved twice).
pub fn cluster_view(catalog: &Catalog, nodes: &[NodeStatus]) -> ClusterView {
    let index: HashMap<&str, u32> = nodes.iter().enumerate().map(|(i, n)| (n.node_id.as_str(), i as u32)).collect();
    let mut view = ClusterView {
        nodes: nodes
            .iter()
            .map(|n| NodeUsage {
                node_id: n.node_id.clone(),
                memory_used: n.mem_used,
                memory_capacity: n.mem_capacity,
                rows: 0,
                segments: 0,
            })
            .collect(),
        segments: Vec::new(),
    };
    for (cid, layout) in &catalog.layouts {
        let Some(segments) = catalog.segments.get(cid) else { continue };
        for (id, holders) in &layout.holders {
            let Some(seg) = segments.get(id).filter(|s| s.state != SegmentState::Dropped) else { continue };
            for h in holders {
                let Some(&node) = index.get(h.as_str()) else { continue };
                let n = &mut view.nodes[node as usize];
                n.rows += seg.rows;
                n.segments += 1;
                if layout.is_target(*id, h) {
                    view.segments.push(SegmentLoad {
                        id: *id,
                        collection: *cid,
                        node,
                        memory_size: seg.mem_size,
                        rows: seg.rows,
                    });
                }
            }
        }
    }
    view
}

impl Coordinator {
    pub(super) async fn balance_loop(self: Rc<Self>) -> Result<()> {
        loop {
            tokio::time::sleep(self.node.shared.config.balance.interval).await;
            match self.balance_once().await {
                Ok(moves) if !moves.is_empty() => self.reconcile.notify_one(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "balance round failed; will retry next interval"),
            }
        }
    }

    /// One balance round: asks the balancer for a plan and starts its moves.
    pub(super) async fn balance_once(&self) -> Result<Vec<SegmentMove>> {
        let members = self.membership.refresh(&self.node, &self.policies.discovery).await?.members(Role::QueryNode);
        if members.alive.len() < 2 {
            return Ok(Vec::new());
        }
        let mut catalog = self.catalog.lock().await;
        let view = cluster_view(&catalog, &members.alive);
        let moves = self.policies.balancer.plan(&view, &settings(&self.node.shared.config));
        if moves.is_empty() {
            return Ok(moves);
        }
        let collection_of: BTreeMap<u64, u64> = view.segments.iter().map(|s| (s.id, s.collection)).collect();
        let mut changed = Vec::new();
        for m in &moves {
            let (Some(&cid), Some(source), Some(target)) =
                (collection_of.get(&m.segment), view.nodes.get(m.source as usize), view.nodes.get(m.target as usize))
            else {
                continue;
            };
            let Some(layout) = catalog.layouts.get_mut(&cid) else { continue };
            // A copy moves within its replica group, so groups stay on disjoint nodes.
            let Some(group) = layout.replicas.iter_mut().find(|g| g.nodes.contains(&source.node_id)) else { continue };
            if !group.nodes.contains(&target.node_id) {
                tracing::debug!(segment = m.segment, from = %source.node_id, to = %target.node_id,
                    "balance: move would cross replica groups; skipped");
                continue;
            }
            group.targets.insert(m.segment, target.node_id.clone());
            changed.push(cid);
            metrics::counter!("quiver_balance_moves_total").increment(1);
            tracing::info!(
                segment = m.segment,
                from = %source.node_id,
                from_memory_pct = format!("{:.1}", source.memory_percent()),
                to = %target.node_id,
                to_memory_pct = format!("{:.1}", target.memory_percent()),
                "balance: moving segment"
            );
        }
        changed.sort_unstable();
        changed.dedup();
        for cid in changed {
            if let Some(layout) = catalog.layouts.get(&cid) {
                self.meta.put(&keys::layout(cid), layout).await?;
            }
        }
        Ok(moves)
    }
}
