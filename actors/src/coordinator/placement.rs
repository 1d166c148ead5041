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

use quiver_policy::balancer::PlacementItem;
use quiver_runtime::{bus::CallOptions, Result};
use quiver_schemas::{
    BuildIndex, CollectionInfo, Distribution, Empty, IndexBuilt, LoadSegments, NodeStatus, ReleaseSegments, Role,
    SegmentInfo, SegmentPlacement, SegmentState, ShardPlacement,
};

use super::balance::cluster_view;
use super::catalog::{layout_key, segment_key, Layout, ShardLayout};
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
/// with its current holders (none while it is being reloaded: reads then wait and retry).
pub fn distribution(catalog: &Catalog, info: &CollectionInfo) -> Distribution {
    let empty = BTreeMap::new();
    let segments = catalog.segments.get(&info.id).unwrap_or(&empty);
    let layout = catalog.layouts.get(&info.id).cloned().unwrap_or_default();
    let mut out = Distribution {
        collection: info.clone(),
        shards: Vec::new(),
        segments: Vec::new(),
        version: layout.version,
        released: layout.released,
    };
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
    // A new or dropped index changes the metric growing rows are compared with.
    format!("{:?}", load.collection.index).hash(&mut h);
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
        let verdicts = self.membership.refresh(&self.node, &self.policies.discovery).await?;
        let (queries, datas) = (verdicts.members(Role::QueryNode), verdicts.members(Role::DataNode));
        let epochs: HashMap<String, u64> = queries.serving().map(|n| (n.node_id.clone(), n.started_ms)).collect();
        let mut sends: Vec<(String, u64, LoadSegments)> = Vec::new();
        {
            let mut catalog = self.catalog.lock().await;
            let infos: Vec<CollectionInfo> = catalog.collections.values().cloned().collect();
            for info in infos {
                self.assign(&mut catalog, &info, &queries, &datas, &epochs).await?;
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
            // Hand-off done: once a segment's target serves it, the other copies go (S1.4).
            for (id, holders) in layout.holders.iter_mut() {
                if let Some(target) = layout.targets.get(id).filter(|t| holders.contains(t)) {
                    holders.retain(|h| h == target);
                }
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

    /// Fixes the layout of one collection against the members: work of dead or restarted
    /// nodes is placed again (balancer policy) on alive nodes; suspect nodes keep theirs.
    async fn assign(
        &self,
        catalog: &mut Catalog,
        info: &CollectionInfo,
        queries: &Members,
        datas: &Members,
        epochs: &HashMap<String, u64>,
    ) -> Result<()> {
        let Some(layout) = catalog.layouts.get(&info.id).cloned() else { return Ok(()) };
        let mut next = layout.clone();
        let serving = |id: &str| epochs.contains_key(id);
        // A restarted query node (new incarnation) lost what it held.
        let restarted = |id: &str| layout.epochs.get(id) != epochs.get(id);
        for holders in next.holders.values_mut() {
            holders.retain(|h| serving(h) && !restarted(h));
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
            for shard in &mut next.shards {
                shard.leader.clear();
            }
            next.targets.clear();
            next.holders.clear();
        }
        // Leaders and segments without a serving node go where the balancer says, in one call
        // so that it accounts for what it already placed.
        let orphan_leaders: Vec<usize> =
            (0..next.shards.len()).filter(|&i| !next.released && !serving(&next.shards[i].leader)).collect();
        let segments = catalog.segments.get(&info.id).cloned().unwrap_or_default();
        let orphan_segments: Vec<&SegmentInfo> = segments
            .values()
            .filter(|seg| !next.released && !next.targets.get(&seg.id).is_some_and(|t| serving(t)))
            .collect();
        let mut items: Vec<PlacementItem> =
            orphan_leaders.iter().map(|&i| channel_item(u64::from(next.shards[i].shard))).collect();
        items.extend(orphan_segments.iter().map(|s| PlacementItem { id: s.id, memory_size: s.mem_size, rows: s.rows }));
        let mut placed = self.place(catalog, &queries.alive, &items).into_iter();
        for &i in &orphan_leaders {
            if let Some(node) = placed.next().flatten() {
                tracing::info!(collection = info.id, shard = next.shards[i].shard, node = %node, "shard leader assigned");
                next.shards[i].leader = node;
            }
        }
        for seg in &orphan_segments {
            if let Some(node) = placed.next().flatten() {
                next.targets.insert(seg.id, node);
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
        let Ok(verdicts) = self.membership.refresh(&self.node, &self.policies.discovery).await else { return };
        let queries: Vec<_> = verdicts.members(Role::QueryNode).serving().cloned().collect();
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
