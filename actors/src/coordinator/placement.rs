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
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::Duration;

use quiver_policy::{MemoryPlacement, NodeMemory, Placement};
use quiver_runtime::{bus::CallOptions, Result};
use quiver_schemas::{
    BuildIndex, CollectionInfo, Distribution, Empty, IndexBuilt, LoadSegments, NodeStatus, ReleaseSegments, Role,
    SegmentInfo, SegmentPlacement, SegmentState, ShardPlacement,
};

use super::catalog::{layout_key, segment_key, Layout, ShardLayout};
use super::{live_nodes, Catalog, Coordinator};

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
/// with its current holders (none while it is being reloaded: reads then wait and retry).
pub fn distribution(catalog: &Catalog, info: &CollectionInfo) -> Distribution {
    let empty = BTreeMap::new();
    let segments = catalog.segments.get(&info.id).unwrap_or(&empty);
    let layout = catalog.layouts.get(&info.id).cloned().unwrap_or_default();
    let mut out =
        Distribution { collection: info.clone(), shards: Vec::new(), segments: Vec::new(), version: layout.version };
    for shard in &layout.shards {
        out.shards.push(ShardPlacement {
            shard: shard.shard,
            leader: shard.leader.clone(),
            sealed_seq: shard.served_seq,
        });
        for s in segments.values().filter(|s| s.shard == shard.shard && s.end_seq <= shard.served_seq) {
            let nodes = layout.holders.get(&s.id).cloned().unwrap_or_default();
            out.segments.push(SegmentPlacement { segment: s.clone(), nodes });
        }
    }
    out
}

fn digest(load: &LoadSegments) -> u64 {
    let mut h = DefaultHasher::new();
    for s in &load.segments {
        s.id.hash(&mut h);
        s.index_path.hash(&mut h);
    }
    for l in &load.lead_shards {
        l.shard.hash(&mut h);
        l.sealed_seq.hash(&mut h);
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
        let queries = live_nodes(&self.node, Role::QueryNode).await?;
        let datas = live_nodes(&self.node, Role::DataNode).await?;
        let epochs: HashMap<String, u64> = queries.iter().map(|n| (n.node_id.clone(), n.started_ms)).collect();
        let mut sends: Vec<(String, u64, LoadSegments)> = Vec::new();
        {
            let mut catalog = self.catalog.lock().await;
            let infos: Vec<CollectionInfo> = catalog.collections.values().cloned().collect();
            for info in infos {
                self.assign(&mut catalog, &info, &queries, &datas, &epochs).await?;
                self.start_index_builds(&catalog, &info);
                let layout = catalog.layouts.get(&info.id).cloned().unwrap_or_default();
                let segments = catalog.segments.get(&info.id).cloned().unwrap_or_default();
                for q in &queries {
                    let load = desired_for(&info, &layout, &segments, &q.node_id);
                    let sent = Sent { epoch: q.started_ms, digest: digest(&load) };
                    let key = (q.node_id.clone(), info.id);
                    if self.sent.borrow().get(&key) != Some(&sent) {
                        sends.push((q.node_id.clone(), q.started_ms, load));
                    }
                }
            }
        }
        if sends.is_empty() {
            return Ok(());
        }
        let bus = &self.node.shared.bus;
        let opts = CallOptions { timeout: Some(Duration::from_secs(600)), traceparent: None };
        let opts = &opts;
        let calls = sends.iter().map(|(node, _, load)| {
            let subject = bus.subjects().node(node, "load");
            async move { bus.request_with::<_, Empty>(subject, load, opts).await }
        });
        let results = futures::future::join_all(calls).await;
        let mut catalog = self.catalog.lock().await;
        let mut changed = Vec::new();
        let mut purges = Vec::new();
        for ((node, epoch, load), result) in sends.into_iter().zip(results) {
            let cid = load.collection.id;
            if let Err(e) = result {
                tracing::warn!(node = %node, collection = cid, error = %e, "query node did not load its segments");
                continue;
            }
            let digest = digest(&load);
            self.sent.borrow_mut().insert((node.clone(), cid), Sent { epoch, digest });
            let segments = catalog.segments.get(&cid).cloned().unwrap_or_default();
            let Some(layout) = catalog.layouts.get_mut(&cid) else { continue };
            let before = layout.clone();
            for holders in layout.holders.values_mut() {
                holders.retain(|h| h != &node);
            }
            for s in &load.segments {
                layout.holders.entry(s.id).or_default().push(node.clone());
            }
            layout.holders.retain(|_, h| !h.is_empty());
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
                self.node.shared.meta.put(&layout_key(*cid), layout).await?;
            }
        }
        drop(catalog);
        for cid in changed {
            self.publish_change(cid).await;
            self.reconcile.notify_one();
        }
        // Rows up to the served position come from segments now; drop their inserts from the
        // log (keeping the entry at the position itself, so the stream's end stays readable).
        for (cid, shard, served) in purges {
            if let Err(e) = crate::dml::purge_inserts(&self.node.shared.bus, cid, shard, served).await {
                tracing::warn!(collection = cid, shard, error = %e, "could not purge served inserts from the log");
            }
        }
        Ok(())
    }

    /// Fixes the layout of one collection against the live nodes.
    async fn assign(
        &self,
        catalog: &mut Catalog,
        info: &CollectionInfo,
        queries: &[NodeStatus],
        datas: &[NodeStatus],
        epochs: &HashMap<String, u64>,
    ) -> Result<()> {
        let Some(layout) = catalog.layouts.get(&info.id).cloned() else { return Ok(()) };
        let mut next = layout.clone();
        let alive = |id: &str| epochs.contains_key(id);
        // A restarted query node (new incarnation) lost what it held.
        let restarted = |id: &str| layout.epochs.get(id) != epochs.get(id);
        for holders in next.holders.values_mut() {
            holders.retain(|h| alive(h) && !restarted(h));
        }
        next.holders.retain(|_, h| !h.is_empty());
        next.epochs.retain(|id, _| alive(id) && !restarted(id));
        let mut memory: Vec<NodeMemory> = queries
            .iter()
            .map(|q| NodeMemory { node_id: q.node_id.clone(), used: q.mem_used, capacity: q.mem_capacity })
            .collect();
        let data_ids: Vec<quiver_policy::NodeLoad> = datas
            .iter()
            .map(|d| quiver_policy::NodeLoad { node_id: d.node_id.clone(), in_flight: 0, weight: 1.0 })
            .collect();
        for shard in &mut next.shards {
            if !datas.iter().any(|d| d.node_id == shard.channel_owner) && !data_ids.is_empty() {
                let key = u64::from(shard.shard) ^ (info.id << 8);
                let cands = [quiver_policy::SegmentCandidates { segment: key, nodes: (0..data_ids.len()).collect() }];
                use quiver_policy::Router;
                if let Some(Some(i)) = quiver_policy::Rendezvous.route(&cands, &data_ids).first() {
                    tracing::info!(collection = info.id, shard = shard.shard, node = %data_ids[*i].node_id, "shard channel assigned");
                    shard.channel_owner = data_ids[*i].node_id.clone();
                }
            }
            if !alive(&shard.leader) {
                if let Some(i) = MemoryPlacement.place(0, &memory) {
                    tracing::info!(collection = info.id, shard = shard.shard, node = %memory[i].node_id, "shard leader assigned");
                    shard.leader = memory[i].node_id.clone();
                }
            }
        }
        // Segments without a live holder or target go to the least-loaded node.
        let segments = catalog.segments.get(&info.id).cloned().unwrap_or_default();
        for seg in segments.values() {
            let target_ok = next.targets.get(&seg.id).is_some_and(|t| alive(t));
            if !target_ok {
                if let Some(i) = MemoryPlacement.place(seg.mem_size, &memory) {
                    next.targets.insert(seg.id, memory[i].node_id.clone());
                    memory[i].used += seg.mem_size;
                }
            }
        }
        next.targets.retain(|id, _| segments.contains_key(id));
        if next != layout {
            if next.shards != layout.shards || next.holders != layout.holders {
                next.version += 1;
            }
            self.node.shared.meta.put(&layout_key(info.id), &next).await?;
            catalog.layouts.insert(info.id, next);
        }
        Ok(())
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
        let bus = &self.node.shared.bus;
        let opts = CallOptions { timeout: Some(Duration::from_secs(3600)), traceparent: None };
        let built: IndexBuilt = bus.request_with(bus.subjects().index_build(), &task, &opts).await?;
        let mut catalog = self.catalog.lock().await;
        let Some(seg) = catalog.segments.get_mut(&built.collection).and_then(|s| s.get_mut(&built.segment)) else {
            return Ok(()); // dropped meanwhile
        };
        seg.index_path = Some(built.index_path.clone());
        seg.state = SegmentState::Indexed;
        let seg = seg.clone();
        self.node.shared.meta.put(&segment_key(seg.collection, seg.id), &seg).await?;
        metrics::counter!("quiver_indexes_built_total").increment(1);
        tracing::info!(segment = seg.id, build_ms = built.build_ms, "segment index built");
        Ok(())
    }

    /// Tells every live query node to drop a collection.
    pub(super) async fn release_everywhere(&self, collection: u64) {
        let Ok(queries) = live_nodes(&self.node, Role::QueryNode).await else { return };
        let bus = &self.node.shared.bus;
        let req = ReleaseSegments { collection, segments: Vec::new(), all: true };
        for q in queries {
            let subject = bus.subjects().node(&q.node_id, "release");
            if let Err(e) = bus.request::<_, Empty>(subject, &req).await {
                tracing::warn!(node = %q.node_id, error = %e, "release failed");
            }
            self.sent.borrow_mut().remove(&(q.node_id.clone(), collection));
        }
    }

    /// Tells proxies that a collection's layout changed.
    pub(super) async fn publish_change(&self, collection: u64) {
        let bus = &self.node.shared.bus;
        if let Err(e) = bus.publish(bus.subjects().distribution_event(collection), &Empty {}).await {
            tracing::debug!(error = %e, "could not publish layout change");
        }
    }
}

/// The full state query node `node` should have for one collection.
fn desired_for(
    info: &CollectionInfo,
    layout: &Layout,
    segments: &BTreeMap<u64, SegmentInfo>,
    node: &str,
) -> LoadSegments {
    let mine: Vec<SegmentInfo> = segments
        .values()
        .filter(|s| {
            layout.targets.get(&s.id).is_some_and(|t| t == node)
                || layout.holders.get(&s.id).is_some_and(|h| h.iter().any(|x| x == node))
        })
        .cloned()
        .collect();
    let lead_shards = layout
        .shards
        .iter()
        .filter(|s| s.leader == node)
        .map(|s| ShardPlacement { shard: s.shard, leader: s.leader.clone(), sealed_seq: s.served_seq })
        .collect();
    LoadSegments { collection: info.clone(), segments: mine, lead_shards }
}
