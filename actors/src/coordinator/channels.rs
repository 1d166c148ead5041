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
//! A node that dies instead is replaced once membership declares it dead; the next owner
//! resumes at the last flushed checkpoint (the rest is still in the log). Should the old owner
//! come back and flush what the new one also flushes, `segment_flushed` refuses the overlap.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use quiver_runtime::bus::CallOptions;
use quiver_runtime::Result;
use quiver_schemas::protocol::{datanode, keys};
use quiver_schemas::{ChannelAssignment, WatchChannels};

use super::membership::Members;
use super::Coordinator;

/// How long a data node may take to flush the shards it gives up.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Identity of a channel set as sent: the shards, not their checkpoints (which move with
/// every flush and matter only when a node starts consuming).
fn digest(channels: &[ChannelAssignment]) -> u64 {
    let mut h = DefaultHasher::new();
    for c in channels {
        (c.collection.id, c.shard).hash(&mut h);
    }
    h.finish()
}

impl Coordinator {
    /// Sends every serving data node its channel set when it changed (or the node restarted).
    /// A draining owner is sent its set without the shards that can move, and once it has
    /// flushed and released them they lose their owner, to be placed on another node.
    pub(super) async fn push_channels(&self, datas: &Members) -> Result<()> {
        let can_move = !datas.alive.is_empty();
        let handing_off = |node: &str| can_move && datas.is_draining(node);
        let mut desired: BTreeMap<String, (u64, Vec<ChannelAssignment>)> =
            datas.serving().map(|d| (d.node_id.clone(), (d.started_ms, Vec::new()))).collect();
        {
            let catalog = self.catalog.lock().await;
            for info in catalog.collections.values() {
                let Some(layout) = catalog.layouts.get(&info.id) else { continue };
                let segments = catalog.segments.get(&info.id);
                for shard in &layout.shards {
                    if handing_off(&shard.channel_owner) {
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
        let bus = &self.node.shared.bus;
        let opts = CallOptions { timeout: Some(RELEASE_TIMEOUT), traceparent: None };
        for (node, (epoch, channels)) in desired {
            let sent = (epoch, digest(&channels));
            if self.channels_sent.borrow().get(&node) == Some(&sent) {
                continue;
            }
            let shards = channels.len();
            match bus.call_node::<datanode::WatchChannels>(&node, &WatchChannels { channels }, &opts).await {
                Ok(_) => {
                    tracing::info!(node = %node, shards, "data node channels set");
                    self.channels_sent.borrow_mut().insert(node.clone(), sent);
                    if handing_off(&node) {
                        self.orphan_channels_of(&node).await?;
                    }
                }
                Err(e) => tracing::warn!(node = %node, error = %e, "data node did not take its channels"),
            }
        }
        self.channels_sent.borrow_mut().retain(|node, _| datas.serving().any(|d| &d.node_id == node));
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
            self.node.shared.meta.put(&keys::layout(id), &layout).await?;
        }
        self.reconcile.notify_one();
        Ok(())
    }
}
