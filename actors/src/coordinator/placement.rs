//! Reconciliation: make the cluster serve what the catalog says.
//!
//! Every tick (or when woken) the coordinator compares the layout with the live nodes in the
//! registry: shards whose data node or leader is gone get a new one, segments whose target
//! query node is gone are placed again (placement policy), and every query node is sent its
//! full desired state for each collection (`LoadSegments`) when that state or the node's
//! incarnation changed. A node's confirmation moves it into the segment's holders; only the
//! contiguous prefix of confirmed segments per shard is published to proxies, and the shard
//! leader serves growing rows after it, so every row is served exactly once.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::Duration;

use tracing::Instrument;

use quiver_policy::balancer::PlacementItem;
use quiver_runtime::{bus::CallOptions, Error, Registry, Result};
use quiver_schemas::protocol::{indexnode, keys, querynode};
use quiver_schemas::{
    BuildIndex, CollectionInfo, Distribution, Empty, IndexBuilt, LoadSegments, NodeStatus, ReleaseSegments,
    ReplicaGroup, Role, SegmentChangeInfo, SegmentInfo, SegmentPlacement, SegmentState, ShardPlacement, ShardSeq,
    ShardView,
};

use super::balance::cluster_view;
use super::catalog::{Layout, ReplicaLayout, ShardLayout, ShardLeader};
use super::compaction::{self, Switch};
use super::membership::Members;
use super::{Catalog, Coordinator};

/// Memory a shard leader or a DML channel is expected to need (growing rows), for placement.
const CHANNEL_MEMORY_ESTIMATE: u64 = 64 << 20;

/// What was last sent to a node for a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    epoch: u64,
    digest: u64,
}

/// The log position up to which `shard` can be served from sealed segments: the end of the
/// longest prefix (by log position) of segments that all have a confirmed holder, and never
/// less than what was already published.
fn served_seq(segments: &BTreeMap<u64, SegmentInfo>, layout: &Layout, shard: &ShardLayout) -> u64 {
    let mut of_shard: Vec<&SegmentInfo> =
        segments.values().filter(|s| s.shard == shard.shard && s.state != SegmentState::Dropped).collect();
    of_shard.sort_by_key(|s| s.end_seq);
    let mut served = shard.served_seq;
    for s in of_shard {
        if s.end_seq <= served {
            continue;
        }
        if layout.holders.get(&s.id).is_none_or(|h| h.is_empty()) {
            break;
        }
        served = s.end_seq;
    }
    served
}

/// The serving layout proxies use: every segment at or below its shard's served position,
/// with its current holders (none while it is being reloaded: reads then wait and retry), and
/// each shard's leaders. A leader that has not confirmed yet is published only while no leader
/// of its shard has (a read sent to it waits or retries, as for a segment being reloaded).
pub fn distribution(catalog: &Catalog, info: &CollectionInfo) -> Distribution {
    let empty = BTreeMap::new();
    let segments = catalog.segments.get(&info.id).unwrap_or(&empty);
    let layout = catalog.layouts.get(&info.id).cloned().unwrap_or_default();
    let switch = Switch::of(segments, &layout, info.index.is_some());
    let mut out = Distribution {
        collection: info.clone(),
        shards: Vec::new(),
        segments: Vec::new(),
        version: layout.version,
        released: layout.released,
        replicas: layout.replicas.iter().map(|g| ReplicaGroup { id: g.id, nodes: g.nodes.clone() }).collect(),
        unserved: Vec::new(),
    };
    for (i, shard) in layout.shards.iter().enumerate() {
        let leaders: Vec<(u32, &ShardLeader)> = layout
            .replicas
            .iter()
            .filter_map(|g| g.leaders.get(i).filter(|l| !l.node.is_empty()).map(|l| (g.id, l)))
            .collect();
        let any_confirmed = leaders.iter().any(|(_, l)| l.confirmed);
        let placement = |replica: u32, leader: String| ShardPlacement {
            shard: shard.shard,
            leader,
            sealed_seq: shard.served_seq,
            replica,
        };
        for (replica, l) in leaders.iter().filter(|(_, l)| l.confirmed || !any_confirmed) {
            out.shards.push(placement(*replica, l.node.clone()));
        }
        if leaders.is_empty() {
            // Listed without a leader, so readers know the shard exists and has no node yet.
            out.shards.push(placement(0, String::new()));
        }
        for s in served_segments(segments, shard, &switch) {
            let nodes = layout.holders.get(&s.id).cloned().unwrap_or_default();
            out.segments.push(SegmentPlacement { segment: s.clone(), nodes });
        }
        out.unserved.extend(
            segments
                .values()
                .filter(|s| s.shard == shard.shard && s.end_seq > shard.served_seq && s.state != SegmentState::Dropped)
                .cloned(),
        );
    }
    out
}

/// The sealed segments of `shard` served to readers: those at or below its served position,
/// and of a compaction's inputs and result whichever `switch` lists.
fn served_segments<'a>(
    segments: &'a BTreeMap<u64, SegmentInfo>,
    shard: &'a ShardLayout,
    switch: &'a Switch,
) -> impl Iterator<Item = &'a SegmentInfo> {
    segments.values().filter(|s| s.shard == shard.shard && s.end_seq <= shard.served_seq && switch.listed(s))
}

fn digest(load: &LoadSegments) -> u64 {
    let mut h = DefaultHasher::new();
    // A new or dropped index changes the metric growing rows are compared with.
    format!("{:?}", load.collection.index).hash(&mut h);
    // A new or dropped scalar index is built or dropped by the nodes that hold the segments.
    format!("{:?}", load.collection.scalar_indexes).hash(&mut h);
    for s in &load.segments {
        s.id.hash(&mut h);
        s.index_path.hash(&mut h);
    }
    for l in &load.lead_shards {
        l.shard.hash(&mut h);
        l.sealed_seq.hash(&mut h);
        l.replica.hash(&mut h);
    }
    // Not the views' layout version: a new version with the same lists needs no new load.
    for v in &load.shard_views {
        v.shard.hash(&mut h);
        v.segments.hash(&mut h);
    }
    h.finish()
}

impl Coordinator {
    pub(super) async fn reconcile_loop(self: Rc<Self>) -> Result<()> {
        let interval = self.node.shared.config.coordinator.reconcile_interval;
        loop {
            tokio::select! {
                _ = self.reconcile.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.reconcile_once().await {
                tracing::warn!(error = %e, "reconcile failed; will retry");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    async fn reconcile_once(self: &Rc<Self>) -> Result<()> {
        let verdicts = self.membership.refresh(&self.node, &self.policies.discovery).await?;
        let (queries, datas) = (verdicts.members(Role::QueryNode), verdicts.members(Role::DataNode));
        let epochs: HashMap<String, u64> = queries.serving().map(|n| (n.node_id.clone(), n.started_ms)).collect();
        let mut sends: Vec<(String, u64, LoadSegments)> = Vec::new();
        let mut reassigned = Vec::new();
        {
            let mut catalog = self.catalog.lock().await;
            let infos: Vec<CollectionInfo> = catalog.collections.values().cloned().collect();
            // Fail-overs of segments dropped meanwhile are never announced: forget them.
            self.lost
                .borrow_mut()
                .retain(|(cid, sid), _| catalog.segments.get(cid).is_some_and(|s| s.contains_key(sid)));
            for info in infos {
                if self.assign(&mut catalog, &info, &queries, &datas, &epochs).await? {
                    reassigned.push(info.id);
                }
                self.start_index_builds(&catalog, &info);
                let layout = catalog.layouts.get(&info.id).cloned().unwrap_or_default();
                let segments = catalog.segments.get(&info.id).cloned().unwrap_or_default();
                for q in queries.serving() {
                    let load = desired_for(&info, &layout, &segments, &q.node_id);
                    let sent = Sent { epoch: q.started_ms, digest: digest(&load) };
                    let key = (q.node_id.clone(), info.id);
                    if self.sent.borrow().get(&key) != Some(&sent) {
                        sends.push((q.node_id.clone(), q.started_ms, load));
                    }
                }
            }
        }
        for cid in reassigned {
            self.publish_change(cid).await;
        }
        self.plan_channel_move(&datas).await;
        self.push_channels(&datas).await;
        if sends.is_empty() {
            return Ok(());
        }
        let bus = &self.node.shared.bus;
        let sent_ms = quiver_runtime::bus::now_ms();
        let opts = CallOptions::long(Duration::from_secs(600));
        let opts = &opts;
        let registry = &self.node.shared.registry;
        // A load may take minutes (hundreds of segments to fetch), but a node that dies or
        // restarts meanwhile never answers: the call ends with the incarnation it was sent to,
        // so the next round can send the new one its state (and no round waits for the dead).
        let calls = sends.iter().map(|(node, epoch, load)| async move {
            tokio::select! {
                reply = bus.call_node::<querynode::Load>(node, load, opts) => reply,
                why = incarnation_ends(registry, node, *epoch) => Err(Error::Unavailable(why)),
            }
        });
        let results = futures::future::join_all(calls).await;
        let mut catalog = self.catalog.lock().await;
        let mut changed = Vec::new();
        let mut purges = Vec::new();
        let mut handoffs = Vec::new();
        for ((node, epoch, load), result) in sends.into_iter().zip(results) {
            let cid = load.collection.id;
            if let Err(e) = result {
                tracing::warn!(node = %node, collection = cid, error = %e, "query node did not load its segments");
                continue;
            }
            let digest = digest(&load);
            self.sent.borrow_mut().insert((node.clone(), cid), Sent { epoch, digest });
            // The node now holds exactly this load: hand-offs announced before it was sent
            // that took segments away from it are complete (S1.4).
            self.scaler.handoffs_released(&node, cid, sent_ms);
            let segments = catalog.segments.get(&cid).cloned().unwrap_or_default();
            let Some(layout) = catalog.layouts.get_mut(&cid) else { continue };
            let before = layout.clone();
            for holders in layout.holders.values_mut() {
                holders.retain(|h| h != &node);
            }
            for s in &load.segments {
                layout.holders.entry(s.id).or_default().push(node.clone());
            }
            settle_holders(layout);
            let reason = |offline: &str| {
                if self.scaler.removing(offline) {
                    "scale-in"
                } else if queries.is_draining(offline) {
                    "drain"
                } else if layout.group_of(offline).is_none() {
                    "replicas"
                } else {
                    "balance"
                }
            };
            handoffs.extend(handoffs_between(&before, layout, cid, reason));
            let mut lost = self.lost.borrow_mut();
            for s in &load.segments {
                // The same node back after a restart reloads what it had: no hand-off.
                if let Some(dead) = lost.remove(&(cid, s.id)).filter(|dead| *dead != node) {
                    handoffs.push(failover(cid, &node, &dead, s.id));
                }
            }
            drop(lost);
            let leads: HashSet<u32> = load.lead_shards.iter().map(|l| l.shard).collect();
            for group in &mut layout.replicas {
                for (leader, shard) in group.leaders.iter_mut().zip(&layout.shards) {
                    if leader.node == node {
                        leader.confirmed = leads.contains(&shard.shard);
                    }
                }
            }
            layout.epochs.insert(node.clone(), epoch);
            for i in 0..layout.shards.len() {
                let served = served_seq(&segments, layout, &layout.shards[i]);
                if served > layout.shards[i].served_seq {
                    layout.shards[i].served_seq = served;
                    purges.push((cid, layout.shards[i].shard, served));
                }
            }
            if *layout != before {
                changed.push(cid);
            }
        }
        changed.sort_unstable();
        changed.dedup();
        for cid in &changed {
            if let Some(layout) = catalog.layouts.get_mut(cid) {
                layout.version += 1;
                self.meta.put(&keys::layout(*cid), layout).await?;
            }
        }
        drop(catalog);
        for cid in changed {
            self.publish_change(cid).await;
            self.reconcile.notify_one();
        }
        for change in merge_handoffs(handoffs) {
            self.publish_handoff(change).await;
        }
        // Rows up to the served position come from segments now; drop their inserts from the
        // log (keeping the entry at the position itself, so the stream's end stays readable).
        //
        // Safe across a power cut, not only a crash: a segment counts towards the served
        // position only once it is in the catalog, which `segment_flushed` fills after the
        // segment's KV record was acknowledged (fsynced, with nats.sync_interval = always), and
        // the data node reports the segment only after `Objects::put` returned, which is after
        // the file and its directories were fsynced (local store) or the remote store
        // acknowledged it. The new served position itself was written to KV above, before the
        // purge. So the log gives up rows only when their segment is durable, and so is the
        // record that finds it.
        for (cid, shard, served) in purges {
            if let Err(e) = crate::dml::purge_inserts(&self.node.shared.bus, cid, shard, served).await {
                tracing::warn!(collection = cid, shard, error = %e, "could not purge served inserts from the log");
            }
        }
        Ok(())
    }

    /// Fixes the layout of one collection against the members: work of dead or restarted
    /// nodes is placed again (balancer policy) on alive nodes; suspect nodes keep theirs.
    /// Tells whether what proxies see changed (holders of a dead node dropped, new groups or
    /// leaders), so they can be told.
    async fn assign(
        &self,
        catalog: &mut Catalog,
        info: &CollectionInfo,
        queries: &Members,
        datas: &Members,
        epochs: &HashMap<String, u64>,
    ) -> Result<bool> {
        let Some(layout) = catalog.layouts.get(&info.id).cloned() else { return Ok(false) };
        let mut next = layout.clone();
        let serving = |id: &str| epochs.contains_key(id);
        // A restarted query node (new incarnation) lost what it held.
        let restarted = |id: &str| layout.epochs.get(id) != epochs.get(id);
        for (sid, holders) in next.holders.iter_mut() {
            holders.retain(|h| {
                let keep = serving(h) && !restarted(h);
                if !keep {
                    // Announced as a fail-over hand-off once another node serves it.
                    self.lost.borrow_mut().insert((info.id, *sid), h.clone());
                }
                keep
            });
        }
        next.holders.retain(|_, h| !h.is_empty());
        next.epochs.retain(|id, _| serving(id) && !restarted(id));

        let channel_item = |id: u64| PlacementItem { id, memory_size: CHANNEL_MEMORY_ESTIMATE, rows: 0 };
        let orphan_channels: Vec<usize> = (0..next.shards.len())
            .filter(|&i| !datas.serving().any(|d| d.node_id == next.shards[i].channel_owner))
            .collect();
        let items: Vec<PlacementItem> =
            orphan_channels.iter().map(|&i| channel_item(u64::from(next.shards[i].shard))).collect();
        let placed = self.place(catalog, &datas.alive, &items);
        for (&i, node) in orphan_channels.iter().zip(placed) {
            if let Some(node) = node {
                let shard = &mut next.shards[i];
                tracing::info!(collection = info.id, shard = shard.shard, node = %node, "shard channel assigned");
                shard.channel_owner = node;
            }
        }

        // A released collection keeps its data nodes (inserts go on) but no query node.
        if next.released {
            next.replicas.clear();
            next.holders.clear();
        } else {
            // Draining nodes leave their group: their leads and segments are placed on the
            // group's other nodes, and they keep serving them until those confirm (S1.4).
            form_groups(&mut next, &queries.alive, |id| serving(id) && !queries.is_draining(id));
            let segments = catalog.segments.get(&info.id).cloned().unwrap_or_default();
            for g in 0..next.replicas.len() {
                self.place_group(catalog, info, &mut next, g, &segments, &queries.alive, serving, restarted);
            }
        }
        let mut republish = false;
        if next != layout {
            if published(&next) != published(&layout) {
                next.version += 1;
                republish = true;
            }
            self.meta.put(&keys::layout(info.id), &next).await?;
            catalog.layouts.insert(info.id, next);
        }
        Ok(republish)
    }

    /// Gives replica group `g` a leader for every shard and a target for every segment, among
    /// its alive nodes: leaders and targets on nodes that left the group or stopped serving are
    /// placed again, in one balancer call so that it accounts for what it already placed.
    #[allow(clippy::too_many_arguments)]
    fn place_group(
        &self,
        catalog: &Catalog,
        info: &CollectionInfo,
        layout: &mut Layout,
        g: usize,
        segments: &BTreeMap<u64, SegmentInfo>,
        alive: &[NodeStatus],
        serving: impl Fn(&str) -> bool,
        restarted: impl Fn(&str) -> bool,
    ) {
        let shards: Vec<u32> = layout.shards.iter().map(|s| s.shard).collect();
        let group = &mut layout.replicas[g];
        let member = |id: &str| serving(id) && group.nodes.iter().any(|n| n == id);
        group.leaders.resize(shards.len(), ShardLeader::default());
        for leader in &mut group.leaders {
            if !member(&leader.node) {
                *leader = ShardLeader::default();
            } else if restarted(&leader.node) {
                leader.confirmed = false;
            }
        }
        let mut targets = std::mem::take(&mut group.targets);
        targets.retain(|id, t| segments.contains_key(id) && member(t));
        let orphan_leaders: Vec<usize> = (0..shards.len()).filter(|&i| group.leaders[i].node.is_empty()).collect();
        let indexed = info.index.is_some();
        let orphan_segments: Vec<&SegmentInfo> =
            segments.values().filter(|s| !targets.contains_key(&s.id) && Switch::placeable(s, indexed)).collect();
        let nodes: Vec<NodeStatus> = alive.iter().filter(|n| group.nodes.contains(&n.node_id)).cloned().collect();
        let channel_item = |id: u64| PlacementItem { id, memory_size: CHANNEL_MEMORY_ESTIMATE, rows: 0 };
        let mut items: Vec<PlacementItem> =
            orphan_leaders.iter().map(|&i| channel_item(u64::from(shards[i]))).collect();
        items.extend(orphan_segments.iter().map(|s| PlacementItem { id: s.id, memory_size: s.mem_size, rows: s.rows }));
        let mut placed = self.place(catalog, &nodes, &items).into_iter();
        for &i in &orphan_leaders {
            if let Some(node) = placed.next().flatten() {
                tracing::info!(collection = info.id, shard = shards[i], replica = group.id, node = %node, "shard leader assigned");
                group.leaders[i] = ShardLeader { node, confirmed: false };
            }
        }
        for seg in &orphan_segments {
            if let Some(node) = placed.next().flatten() {
                targets.insert(seg.id, node);
            }
        }
        group.targets = targets;
    }

    /// Asks the balancer where `items` go among `nodes`: one node id per item, in order (none
    /// when no node can take it). No call when there is nothing to place.
    fn place(&self, catalog: &Catalog, nodes: &[NodeStatus], items: &[PlacementItem]) -> Vec<Option<String>> {
        if items.is_empty() {
            return Vec::new();
        }
        let view = cluster_view(catalog, nodes);
        let placed = self.policies.balancer.place(&view, items);
        placed.into_iter().map(|p| p.and_then(|n| view.nodes.get(n as usize)).map(|n| n.node_id.clone())).collect()
    }

    fn start_index_builds(self: &Rc<Self>, catalog: &Catalog, info: &CollectionInfo) {
        let Some(params) = info.index.clone() else { return };
        let Some(segments) = catalog.segments.get(&info.id) else { return };
        for seg in segments.values().filter(|s| s.index_path.is_none() && s.state == SegmentState::Flushed) {
            if !self.building.borrow_mut().insert(seg.id) {
                continue;
            }
            let me = self.clone();
            let task = BuildIndex { segment: seg.clone(), params: params.clone(), dim: info.dim() };
            actix::spawn(async move {
                let id = task.segment.id;
                let result = me.build_index(task).await;
                me.building.borrow_mut().remove(&id);
                if let Err(e) = result {
                    tracing::warn!(segment = id, error = %e, "index build failed; will retry");
                }
                me.reconcile.notify_one();
            });
        }
    }

    async fn build_index(&self, task: BuildIndex) -> Result<()> {
        let span = tracing::debug_span!("index_build", segment = task.segment.id, collection = task.segment.collection);
        self.build_index_traced(task).instrument(span).await
    }

    async fn build_index_traced(&self, task: BuildIndex) -> Result<()> {
        let bus = &self.node.shared.bus;
        let opts = CallOptions::long(Duration::from_secs(3600));
        let built: IndexBuilt = bus.call::<indexnode::Build>(&task, &opts).await?;
        metrics::histogram!("quiver_index_build_seconds").record(built.build_ms as f64 / 1000.0);
        let mut catalog = self.catalog.lock().await;
        let Some(seg) = catalog.segments.get_mut(&built.collection).and_then(|s| s.get_mut(&built.segment)) else {
            // Dropped or merged meanwhile: nothing will name the index.
            drop(catalog);
            let _ = self.node.shared.objects.delete(&built.index_path).await;
            return Ok(());
        };
        seg.index_path = Some(built.index_path.clone());
        seg.state = SegmentState::Indexed;
        let seg = seg.clone();
        self.meta.put(&keys::segment(seg.collection, seg.id), &seg).await?;
        metrics::counter!("quiver_indexes_built_total").increment(1);
        tracing::info!(segment = seg.id, build_ms = built.build_ms, "segment index built");
        Ok(())
    }

    /// Tells every live query node to drop a collection.
    pub(super) async fn release_everywhere(&self, collection: u64) {
        let Ok(verdicts) = self.membership.refresh(&self.node, &self.policies.discovery).await else { return };
        let queries: Vec<_> = verdicts.members(Role::QueryNode).serving().cloned().collect();
        let bus = &self.node.shared.bus;
        let req = ReleaseSegments { collection, segments: Vec::new(), all: true };
        let opts = CallOptions::default();
        for q in queries {
            if let Err(e) = bus.call_node::<querynode::Release>(&q.node_id, &req, &opts).await {
                tracing::warn!(node = %q.node_id, error = %e, "release failed");
            }
            self.sent.borrow_mut().remove(&(q.node_id.clone(), collection));
        }
    }

    /// Publishes a hand-off (S1.4's `sealedSegmentChangeInfo`) on the collection's query
    /// channel, where the offline node releases the segments, and keeps it for `api.events`.
    pub(super) async fn publish_handoff(&self, change: SegmentChangeInfo) {
        {
            // A span of its own (not held across the publish's await): the hand-off's record.
            let _span = tracing::debug_span!(
                "handoff",
                reason = %change.reason,
                collection = change.collection,
                from = %change.offline_node_id,
                to = %change.online_node_id,
                segments = change.online_segment_ids.len().max(change.offline_segment_ids.len()),
            )
            .entered();
            tracing::info!(
                collection = change.collection,
                online = %change.online_node_id,
                offline = %change.offline_node_id,
                segments = ?change.online_segment_ids,
                reason = %change.reason,
                "sealedSegmentChangeInfo"
            );
            metrics::counter!("quiver_handoffs_total", "reason" => reason_label(&change.reason)).increment(1);
        }
        let bus = &self.node.shared.bus;
        if let Err(e) = bus.publish(bus.subjects().query_channel(change.collection), &change).await {
            tracing::debug!(error = %e, "could not publish a hand-off");
        }
        self.scaler.record_handoff(change);
    }

    /// Tells proxies that a collection's layout changed.
    pub(super) async fn publish_change(&self, collection: u64) {
        let bus = &self.node.shared.bus;
        if let Err(e) = bus.publish(bus.subjects().distribution_event(collection), &Empty {}).await {
            tracing::debug!(error = %e, "could not publish layout change");
        }
    }
}

/// Returns (why) once query node `node` is no longer the incarnation started at `epoch`: it
/// restarted, or its registry entry expired. Checked every second.
async fn incarnation_ends(registry: &Registry, node: &str, epoch: u64) -> String {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match registry.node(node).await {
            Ok(Some(status)) if status.started_ms == epoch => {}
            Ok(Some(_)) => return format!("{node} restarted while loading"),
            Ok(None) => return format!("{node} is gone (its registry entry expired) while loading"),
            Err(_) => {}
        }
    }
}

/// The full state query node `node` should have for one collection: the segments it is the
/// target of or still holds, the shards it leads in its replica group, and for each of those
/// the shard's served segments (its authoritative view, MISSION S2.6).
fn desired_for(
    info: &CollectionInfo,
    layout: &Layout,
    segments: &BTreeMap<u64, SegmentInfo>,
    node: &str,
) -> LoadSegments {
    let mine: Vec<SegmentInfo> = segments
        .values()
        .filter(|s| {
            layout.is_target(s.id, node) || layout.holders.get(&s.id).is_some_and(|h| h.iter().any(|x| x == node))
        })
        .cloned()
        .collect();
    let mut lead_shards = Vec::new();
    let mut shard_views = Vec::new();
    let switch = Switch::of(segments, layout, info.index.is_some());
    if let Some(group) = layout.group_of(node) {
        for (shard, leader) in layout.shards.iter().zip(&group.leaders) {
            if leader.node != node {
                continue;
            }
            lead_shards.push(ShardPlacement {
                shard: shard.shard,
                leader: leader.node.clone(),
                sealed_seq: shard.served_seq,
                replica: group.id,
            });
            shard_views.push(ShardView {
                shard: shard.shard,
                version: layout.version,
                segments: served_segments(segments, shard, &switch).map(|s| s.id).collect(),
            });
        }
    }
    let delete_floors =
        layout.shards.iter().map(|s| ShardSeq { shard: s.shard, seq: compaction::delete_floor(segments, s) }).collect();
    LoadSegments { collection: info.clone(), segments: mine, lead_shards, shard_views, delete_floors }
}

/// Keeps `layout.replicas` at the wanted number of groups over the query nodes: nodes that
/// stopped serving leave their group, alive nodes in no group join the smallest one, and while
/// two groups differ by two nodes or more, the largest gives the smallest the node with the least
/// to reload (fewest leads, then fewest segments).
fn form_groups(layout: &mut Layout, alive: &[NodeStatus], serving: impl Fn(&str) -> bool) {
    let want = layout.wanted_replicas();
    layout.replicas.truncate(want);
    while layout.replicas.len() < want {
        let id = layout.replicas.iter().map(|g| g.id + 1).max().unwrap_or(0);
        layout.replicas.push(ReplicaLayout { id, ..Default::default() });
    }
    for group in &mut layout.replicas {
        group.nodes.retain(|n| serving(n));
    }
    let mut spare: Vec<&str> =
        alive.iter().map(|n| n.node_id.as_str()).filter(|n| layout.group_of(n).is_none()).collect();
    spare.sort_unstable();
    for node in spare {
        if let Some(group) = layout.replicas.iter_mut().min_by_key(|g| (g.nodes.len(), g.id)) {
            tracing::info!(node, replica = group.id, "query node joins replica group");
            group.nodes.push(node.to_string());
        }
    }
    // Sizes differ by at most one, so each group has about the same capacity.
    loop {
        let size = |i: &usize| (layout.replicas[*i].nodes.len(), *i);
        let (Some(small), Some(large)) =
            ((0..layout.replicas.len()).min_by_key(size), (0..layout.replicas.len()).max_by_key(size))
        else {
            break;
        };
        if layout.replicas[large].nodes.len() < layout.replicas[small].nodes.len() + 2 {
            break;
        }
        let group = &layout.replicas[large];
        let cost = |n: &String| {
            let leads = group.leaders.iter().filter(|l| &l.node == n).count();
            let targets = group.targets.values().filter(|t| *t == n).count();
            (leads, targets, n.clone())
        };
        let Some(node) = group.nodes.iter().min_by_key(|n| cost(n)).cloned() else { break };
        tracing::info!(node = %node, from = group.id, to = layout.replicas[small].id, "query node moves to a smaller replica group");
        layout.replicas[large].nodes.retain(|n| n != &node);
        layout.replicas[small].nodes.push(node);
    }
}

/// Hand-off done (S1.4): once a group's target of a segment serves it, the group's other
/// copies go, and so do copies on nodes that are in no group any more.
fn settle_holders(layout: &mut Layout) {
    let Layout { holders, replicas, .. } = layout;
    let group_of = |node: &str| replicas.iter().position(|g| g.nodes.iter().any(|n| n == node));
    for (id, holders) in holders.iter_mut() {
        for (g, group) in replicas.iter().enumerate() {
            let Some(target) = group.targets.get(id).filter(|t| holders.contains(t)) else { continue };
            holders.retain(|h| h == target || group_of(h).is_some_and(|other| other != g));
        }
    }
    holders.retain(|_, h| !h.is_empty());
}

/// The hand-offs a layout change completed: segments whose holders lost a node while another
/// node still (or now) serves them, grouped per (online, offline) node pair. The online node is
/// the segment's target in some group when one holds it.
fn handoffs_between(
    before: &Layout,
    after: &Layout,
    collection: u64,
    reason: impl Fn(&str) -> &'static str,
) -> Vec<SegmentChangeInfo> {
    let at_ms = quiver_runtime::bus::now_ms();
    let mut pairs: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for (sid, old) in &before.holders {
        let Some(now) = after.holders.get(sid).filter(|h| !h.is_empty()) else { continue };
        let online = now.iter().find(|h| after.is_target(*sid, h)).unwrap_or(&now[0]);
        for gone in old.iter().filter(|h| !now.contains(h)) {
            pairs.entry((online.clone(), gone.clone())).or_default().push(*sid);
        }
    }
    pairs
        .into_iter()
        .map(|((online, offline), segments)| SegmentChangeInfo {
            collection,
            reason: reason(&offline).to_string(),
            online_node_id: online,
            online_segment_ids: segments.clone(),
            offline_node_id: offline,
            offline_segment_ids: segments,
            at_ms,
            released_ms: 0,
        })
        .collect()
}

/// A segment of a node that died (or restarted) served again by `online`: nothing to release.
fn failover(collection: u64, online: &str, dead: &str, segment: u64) -> SegmentChangeInfo {
    let at_ms = quiver_runtime::bus::now_ms();
    SegmentChangeInfo {
        collection,
        online_node_id: online.to_string(),
        online_segment_ids: vec![segment],
        offline_node_id: dead.to_string(),
        offline_segment_ids: vec![segment],
        reason: "failover".into(),
        at_ms,
        released_ms: at_ms,
    }
}

/// One event per (collection, online, offline, reason).
fn merge_handoffs(changes: Vec<SegmentChangeInfo>) -> Vec<SegmentChangeInfo> {
    let mut merged: BTreeMap<(u64, String, String, String), SegmentChangeInfo> = BTreeMap::new();
    for c in changes {
        let key = (c.collection, c.online_node_id.clone(), c.offline_node_id.clone(), c.reason.clone());
        match merged.get_mut(&key) {
            Some(m) => {
                m.online_segment_ids.extend(&c.online_segment_ids);
                m.offline_segment_ids.extend(&c.offline_segment_ids);
            }
            None => {
                merged.insert(key, c);
            }
        }
    }
    merged.into_values().collect()
}

/// The metric label of a hand-off reason (a closed set).
fn reason_label(reason: &str) -> &'static str {
    match reason {
        "scale-in" => "scale-in",
        "drain" => "drain",
        "replicas" => "replicas",
        "failover" => "failover",
        _ => "balance",
    }
}

/// What proxies see of a layout (a change bumps its version): shards, holders, groups and leaders.
fn published(layout: &Layout) -> impl PartialEq + '_ {
    let groups: Vec<(&Vec<String>, &Vec<ShardLeader>)> =
        layout.replicas.iter().map(|g| (&g.nodes, &g.leaders)).collect();
    (&layout.shards, &layout.holders, groups)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn alive(ids: &[&str]) -> Vec<NodeStatus> {
        ids.iter()
            .map(|id| NodeStatus {
                node_id: id.to_string(),
                role: Role::QueryNode,
                host: String::new(),
                pid: 1,
                healthy: true,
                mem_used: 0,
                mem_capacity: 0,
                segments: 0,
                restarts: 0,
                started_ms: 1,
                heartbeat_ms: 1,
                detail: String::new(),
                state: quiver_schemas::NodeState::Serving,
                cpu_cores: 1.0,
                cpu_busy: 0.0,
                host_agent: String::new(),
                faiss_simd: String::new(),
                memory_refusals: 0,
                last_request_ms: 0,
            })
            .collect()
    }

    fn groups(layout: &Layout) -> Vec<Vec<&str>> {
        layout.replicas.iter().map(|g| g.nodes.iter().map(String::as_str).collect()).collect()
    }

    #[test]
    fn groups_are_disjoint_and_refilled_when_a_node_goes() {
        let mut layout = Layout::new(1);
        layout.replica_number = 2;
        let nodes = alive(&["a", "b", "c", "d"]);
        form_groups(&mut layout, &nodes, |_: &str| true);
        assert_eq!(groups(&layout), [vec!["a", "c"], vec!["b", "d"]]);

        // b and d die: group 1 is empty and takes the node of group 0 with the least to reload.
        layout.replicas[0].leaders = vec![ShardLeader { node: "a".into(), confirmed: true }];
        let serving = |n: &str| n == "a" || n == "c";
        form_groups(&mut layout, &alive(&["a", "c"]), serving);
        assert_eq!(groups(&layout), [vec!["a"], vec!["c"]], "the leader stays");

        // A returning node joins the smallest group; a third group takes a node from a pair.
        form_groups(&mut layout, &alive(&["a", "c", "b"]), |n: &str| n != "d");
        assert_eq!(groups(&layout), [vec!["a", "b"], vec!["c"]]);
        layout.replica_number = 3;
        form_groups(&mut layout, &alive(&["a", "c", "b"]), |n: &str| n != "d");
        assert_eq!(groups(&layout), [vec!["a"], vec!["c"], vec!["b"]]);

        // Fewer replicas: the dropped group's node joins a remaining one.
        layout.replica_number = 2;
        form_groups(&mut layout, &alive(&["a", "c", "b"]), |n: &str| n != "d");
        assert_eq!(groups(&layout), [vec!["a", "b"], vec!["c"]]);
    }

    #[test]
    fn a_confirmed_target_retires_its_groups_other_copies_only() {
        let mut layout = Layout::new(1);
        layout.replicas = vec![
            ReplicaLayout { id: 0, nodes: vec!["a".into(), "x".into()], ..Default::default() },
            ReplicaLayout { id: 1, nodes: vec!["b".into()], ..Default::default() },
        ];
        layout.replicas[0].targets.insert(5, "a".into());
        layout.replicas[1].targets.insert(5, "b".into());
        // x held it before a (a hand-off inside group 0); gone is in no group any more.
        layout.holders.insert(5, vec!["x".into(), "gone".into()]);
        settle_holders(&mut layout);
        assert_eq!(layout.holders[&5], ["x", "gone"], "no target serves it yet: nothing retires");
        layout.holders.get_mut(&5).unwrap().push("b".into());
        settle_holders(&mut layout);
        assert_eq!(layout.holders[&5], ["x", "b"], "group 1's copy retires the stray one, not group 0's");
        layout.holders.get_mut(&5).unwrap().push("a".into());
        settle_holders(&mut layout);
        assert_eq!(layout.holders[&5], ["b", "a"]);
    }

    #[test]
    fn unconfirmed_leaders_are_published_only_while_no_leader_is_confirmed() {
        let info = CollectionInfo {
            partitions: Default::default(),
            id: 1,
            schema: quiver_schemas::CollectionSchema {
                name: "docs".into(),
                description: String::new(),
                fields: Vec::new(),
                enable_dynamic_field: false,
                num_shards: 1,
                consistency: quiver_schemas::Consistency::Bounded,
            },
            index: None,
            created_ts: 0,
            scalar_indexes: Vec::new(),
        };
        let mut layout = Layout::new(1);
        layout.replica_number = 2;
        layout.replicas = vec![
            ReplicaLayout { id: 0, nodes: vec!["a".into()], ..Default::default() },
            ReplicaLayout { id: 1, nodes: vec!["b".into()], ..Default::default() },
        ];
        layout.replicas[0].leaders = vec![ShardLeader { node: "a".into(), confirmed: false }];
        layout.replicas[1].leaders = vec![ShardLeader { node: "b".into(), confirmed: false }];
        let mut catalog = Catalog::default();
        catalog.layouts.insert(1, layout);
        let leaders = |c: &Catalog| -> Vec<(String, u32)> {
            distribution(c, &info).shards.into_iter().map(|s| (s.leader, s.replica)).collect()
        };
        assert_eq!(leaders(&catalog), [("a".to_string(), 0), ("b".to_string(), 1)]);
        catalog.layouts.get_mut(&1).unwrap().replicas[1].leaders[0].confirmed = true;
        assert_eq!(leaders(&catalog), [("b".to_string(), 1)]);
        let d = distribution(&catalog, &info);
        assert_eq!(d.replicas.len(), 2);
    }

    #[test]
    fn a_hand_off_is_announced_once_the_target_serves_and_names_both_nodes() {
        let mut before = Layout::new(1);
        before.replicas = vec![ReplicaLayout { id: 0, nodes: vec!["a".into(), "b".into()], ..Default::default() }];
        before.replicas[0].targets.insert(5, "b".into());
        before.replicas[0].targets.insert(6, "b".into());
        before.holders.insert(5, vec!["a".into()]);
        before.holders.insert(6, vec!["a".into()]);
        before.holders.insert(7, vec!["a".into()]);
        // b confirmed 5 and 6: settling retires a's copies; 7 did not move.
        let mut after = before.clone();
        after.holders.insert(5, vec!["a".into(), "b".into()]);
        after.holders.insert(6, vec!["a".into(), "b".into()]);
        settle_holders(&mut after);
        let changes = handoffs_between(&before, &after, 9, |_| "balance");
        assert_eq!(changes.len(), 1, "{changes:?}");
        let c = &changes[0];
        assert_eq!((c.collection, c.online_node_id.as_str(), c.offline_node_id.as_str()), (9, "b", "a"));
        assert_eq!((c.online_segment_ids.clone(), c.offline_segment_ids.clone()), (vec![5, 6], vec![5, 6]));
        assert_eq!((c.reason.as_str(), c.released_ms), ("balance", 0));

        // A segment that lost every holder (its node died) is no hand-off until one serves it.
        let mut gone = before.clone();
        gone.holders.remove(&7);
        assert!(handoffs_between(&before, &gone, 9, |_| "balance").iter().all(|c| !c.online_segment_ids.contains(&7)));

        // Events for the same pair and reason merge; others stay apart.
        let f = failover(9, "b", "a", 7);
        let merged = merge_handoffs(vec![changes[0].clone(), f.clone(), failover(9, "b", "a", 8)]);
        assert_eq!(merged.len(), 2, "{merged:?}");
        assert!(merged.iter().any(|m| m.reason == "failover" && m.online_segment_ids == [7, 8] && m.released_ms > 0));
    }

    #[test]
    fn layouts_from_before_replicas_move_into_group_zero() {
        let old = r#"{"shards":[{"shard":0,"leader":"q1","channel_owner":"d1","served_seq":9}],
            "holders":{"5":["q2"]},"targets":{"5":"q2"},"epochs":{},"version":4}"#;
        let mut layout: Layout = serde_json::from_str(old).unwrap();
        layout.migrate();
        assert_eq!(layout.replica_number, 1);
        assert_eq!(groups(&layout), [vec!["q1", "q2"]]);
        assert_eq!(layout.replicas[0].leaders, [ShardLeader { node: "q1".into(), confirmed: true }]);
        assert!(layout.is_target(5, "q2"));
        let json = serde_json::to_value(&layout).unwrap();
        assert!(json.get("targets").is_none() && json["shards"][0].get("leader").is_none(), "{json}");
    }
}
