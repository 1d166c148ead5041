//! Channels: which data node consumes each shard's DML log. The coordinator pushes every data
//! node its full set of shards (`WatchChannels`, with the position to resume from), as it
//! pushes query nodes their segments; data nodes read nothing of the metadata bucket.
//!
//! A shard moves between data nodes (its owner drains, so another alive data node exists) in
//! two steps, so that no row is lost or written twice:
//!
//! ```text
//!   owner A draining ──WatchChannels{without S}──▶ A seals and writes what it consumed of S,
//!        (segment_flushed: the checkpoint moves to where A stopped), stops, answers
//!   A answered ──▶ S has no owner ──next round──▶ placed on B ──WatchChannels{S @ checkpoint}──▶ B resumes
//! ```
//!
//! A shard also moves between two alive data nodes, in the same two steps, when one owns two
//! or more shards more than another (a data node was added: `plan_channel_move`).
//!
//! A node that dies instead is replaced once membership declares it dead; the next owner
//! resumes at the last flushed checkpoint (the rest is still in the log). Should the old owner
//! come back and flush what the new one also flushes, `segment_flushed` refuses the overlap.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use quiver_runtime::bus::CallOptions;
use quiver_runtime::Result;
use quiver_schemas::protocol::{datanode, keys};
use quiver_schemas::{ChannelAssignment, WatchChannels};

use super::membership::Members;
use super::Coordinator;

/// How long a data node may take to flush the shards it gives up.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(120);

/// A shard on its way from one alive data node to another (`plan_channel_move`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ChannelMove {
    from: String,
    to: String,
}

/// What was last pushed to a data node: its incarnation and the shards (not their
/// checkpoints, which move with every flush and matter only when a node starts consuming).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SentChannels {
    epoch: u64,
    shards: BTreeSet<(u64, u32)>,
}

impl Coordinator {
    /// Sends every serving data node its channel set when it changed (or the node restarted),
    /// each push on its own task so a slow flush never holds up placement. A draining owner is
    /// sent its set without the shards that can move, and once it has flushed and released
    /// them they lose their owner, to be placed on another node.
    pub(super) async fn push_channels(self: &Rc<Self>, datas: &Members) {
        let can_move = !datas.alive.is_empty();
        let handing_off = |node: &str| can_move && datas.is_draining(node);
        let moving = self.moving_channels.borrow().clone();
        let mut desired: BTreeMap<String, (u64, Vec<ChannelAssignment>)> =
            datas.serving().map(|d| (d.node_id.clone(), (d.started_ms, Vec::new()))).collect();
        {
            let catalog = self.catalog.lock().await;
            for info in catalog.collections.values() {
                let Some(layout) = catalog.layouts.get(&info.id) else { continue };
                let segments = catalog.segments.get(&info.id);
                for shard in &layout.shards {
                    if handing_off(&shard.channel_owner) || moving.contains_key(&(info.id, shard.shard)) {
                        continue;
                    }
                    let Some((_, set)) = desired.get_mut(&shard.channel_owner) else { continue };
                    let checkpoint = segments
                        .into_iter()
                        .flat_map(|s| s.values())
                        .filter(|s| s.shard == shard.shard)
                        .map(|s| s.end_seq)
                        .max()
                        .unwrap_or(0);
                    set.push(ChannelAssignment { collection: info.clone(), shard: shard.shard, checkpoint });
                }
            }
        }
        self.channels_sent.borrow_mut().retain(|node, _| datas.serving().any(|d| &d.node_id == node));
        for (node, (epoch, channels)) in desired {
            let sent = SentChannels { epoch, shards: channels.iter().map(|c| (c.collection.id, c.shard)).collect() };
            let previous = self.channels_sent.borrow().get(&node).cloned();
            // One push at a time per incarnation: a push stuck on an incarnation that died
            // mid-answer does not hold up the next one.
            if previous.as_ref() == Some(&sent) || !self.pushing.borrow_mut().insert((node.clone(), epoch)) {
                continue;
            }
            // Only a node that gives shards up flushes before it answers.
            let releases = previous.is_some_and(|p| p.epoch == epoch && !p.shards.is_subset(&sent.shards));
            let timeout = if releases { RELEASE_TIMEOUT } else { self.node.shared.bus.default_timeout() };
            let hand_off = handing_off(&node);
            let moves: Vec<((u64, u32), String)> =
                moving.iter().filter(|(_, m)| m.from == node).map(|(shard, m)| (*shard, m.to.clone())).collect();
            let me = self.clone();
            actix::spawn(async move {
                let opts = CallOptions::long(timeout);
                let shards = channels.len();
                let bus = &me.node.shared.bus;
                match bus.call_node::<datanode::WatchChannels>(&node, &WatchChannels { channels }, &opts).await {
                    Ok(_) => {
                        tracing::info!(node = %node, shards, "data node channels set");
                        me.channels_sent.borrow_mut().insert(node.clone(), sent);
                        if hand_off {
                            if let Err(e) = me.orphan_channels_of(&node).await {
                                tracing::warn!(node = %node, error = %e, "could not release the shards for hand-over");
                            }
                        } else if !moves.is_empty() {
                            if let Err(e) = me.finish_channel_moves(&node, &moves).await {
                                tracing::warn!(node = %node, error = %e, "could not hand the shards over");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(node = %node, error = %e, "data node did not take its channels; will retry")
                    }
                }
                me.pushing.borrow_mut().remove(&(node, epoch));
            });
        }
    }

    /// Spreads shards over the alive data nodes (S0.3: a new data node takes shards over):
    /// while one node owns two or more shards more than another, one shard moves from the
    /// busiest to the least busy, in the two steps of a drain (the owner flushes and releases
    /// it, then the other resumes at its checkpoint). One move at a time.
    pub(super) async fn plan_channel_move(&self, datas: &Members) {
        {
            let alive = |n: &str| datas.alive.iter().any(|d| d.node_id == n);
            let mut moving = self.moving_channels.borrow_mut();
            moving.retain(|_, m| alive(&m.from) && alive(&m.to));
            if !moving.is_empty() {
                return;
            }
        }
        if datas.alive.len() < 2 || !datas.draining.is_empty() || !self.pushing.borrow().is_empty() {
            return;
        }
        let mut owned: BTreeMap<&str, Vec<(u64, u32)>> =
            datas.alive.iter().map(|d| (d.node_id.as_str(), Vec::new())).collect();
        let catalog = self.catalog.lock().await;
        for (cid, layout) in &catalog.layouts {
            for shard in &layout.shards {
                if let Some(list) = owned.get_mut(shard.channel_owner.as_str()) {
                    list.push((*cid, shard.shard));
                }
            }
        }
        let busiest = owned.iter().max_by_key(|(id, l)| (l.len(), std::cmp::Reverse(*id)));
        let idlest = owned.iter().min_by_key(|(id, l)| (l.len(), *id));
        let (Some((from, shards)), Some((to, fewer))) = (busiest, idlest) else { return };
        if shards.len() < fewer.len() + 2 {
            return;
        }
        let Some(&shard) = shards.last() else { return };
        tracing::info!(collection = shard.0, shard = shard.1, from = %from, to = %to,
            "shard channel moves to a data node with fewer shards");
        self.moving_channels.borrow_mut().insert(shard, ChannelMove { from: from.to_string(), to: to.to_string() });
    }

    /// `node` flushed and released the shards moving away from it: each gets its new owner
    /// (which the next push tells to resume at the shard's checkpoint).
    async fn finish_channel_moves(&self, node: &str, moves: &[((u64, u32), String)]) -> Result<()> {
        let mut catalog = self.catalog.lock().await;
        let mut changed = Vec::new();
        for ((cid, shard), to) in moves {
            let Some(layout) = catalog.layouts.get_mut(cid) else { continue };
            if let Some(s) = layout.shards.iter_mut().find(|s| s.shard == *shard && s.channel_owner == node) {
                tracing::info!(collection = cid, shard, from = %node, to = %to, "shard channel handed over");
                s.channel_owner = to.clone();
                changed.push((*cid, layout.clone()));
            }
        }
        drop(catalog);
        for (id, layout) in changed {
            self.meta.put(&keys::layout(id), &layout).await?;
        }
        let mut moving = self.moving_channels.borrow_mut();
        for (shard, _) in moves {
            moving.remove(shard);
        }
        drop(moving);
        self.reconcile.notify_one();
        Ok(())
    }

    /// `node` flushed and released its shards: they lose their owner, and the next round
    /// places them on an alive data node.
    async fn orphan_channels_of(&self, node: &str) -> Result<()> {
        let mut catalog = self.catalog.lock().await;
        let mut changed = Vec::new();
        for (id, layout) in catalog.layouts.iter_mut() {
            let mut moved = false;
            for shard in layout.shards.iter_mut().filter(|s| s.channel_owner == node) {
                tracing::info!(collection = id, shard = shard.shard, from = %node, "shard channel released for hand-over");
                shard.channel_owner.clear();
                moved = true;
            }
            if moved {
                changed.push((*id, layout.clone()));
            }
        }
        drop(catalog);
        for (id, layout) in changed {
            self.meta.put(&keys::layout(id), &layout).await?;
        }
        self.reconcile.notify_one();
        Ok(())
    }
}
