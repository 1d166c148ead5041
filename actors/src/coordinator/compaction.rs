//! Compaction, after Milvus' model: the coordinator plans, a data node merges, an index node
//! indexes the result, query nodes load it, and only then is what it replaces dropped.
//!
//! ```text
//!   plan ──► data node: merge inputs, drop deleted rows, store M ──► commit: M in the catalog
//!                                                                        │
//!   readers see the inputs ◄─────────── M indexed, placed, loaded ◄──────┘
//!   readers see M          ◄─────────── M held in every replica group (one layout version)
//!   inputs removed (catalog, query nodes, object store) after a grace period
//! ```
//!
//! * A plan is either a *merge* of consecutive small segments of one shard (in log order, so
//!   segments never overlap) up to the target size, or a *delete* rewrite of one segment whose
//!   deleted rows are dropped. Both apply every delete up to the shard's last one at planning,
//!   `D`: the result records `delete_seq = D`.
//! * The commit point is the merged segment's own record (it lists its inputs): a coordinator
//!   that dies at any point either has it or not, and the inputs stay until the switch.
//!   Which of the two readers search is decided by [`Switch`], computed from the catalog and
//!   the layout alone, so the distribution never lists both (no row doubled) nor neither (no row
//!   missed).
//! * Each shard has a *delete floor*: no segment can hold a row that a delete at or below it
//!   hides. Query nodes read the shard's deletes after the floor, and the log drops the deletes
//!   below it, so a compacted shard's deletes are no longer replayed from the start.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use quiver_runtime::bus::CallOptions;
use quiver_runtime::{Error, Result};
use quiver_schemas::protocol::{datanode, keys};
use quiver_schemas::{
    CollectionInfo, CompactOutcome, CompactRequest, CompactTask, CompactionJobId, CompactionPlan, CompactionState,
    PartitionId, PartitionState, SegmentInfo, Seq,
};

use super::catalog::{Layout, ShardLayout};
use super::Coordinator;

/// Jobs kept for `compaction_state` (oldest dropped first).
const KEPT_JOBS: usize = 256;
/// How long the inputs of a merged segment stay loaded after readers moved to it, so requests
/// planned on the previous layout finish rather than retry.
const SWITCH_GRACE: Duration = Duration::from_secs(3);
/// How often finished plans are settled (inputs removed, floors moved, the log purged).
const SETTLE_EVERY: Duration = Duration::from_secs(1);

const EXECUTING: &str = CompactionState::EXECUTING;
const COMPLETED: &str = CompactionState::COMPLETED;
const FAILED: &str = CompactionState::FAILED;

/// One planned task, before it gets its ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub shard: u32,
    pub inputs: Vec<SegmentInfo>,
    /// `merge`, `delete`, or `kept` (a force merge's segment that is already merged: alone
    /// within the target, nothing to drop; listed, nothing rewritten).
    pub kind: &'static str,
}

/// What asked for a compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A background round.
    Background,
    /// A `compact` request: small segments merged, every deleted row dropped.
    Manual,
    /// A force merge: every segment of a shard merged into segments of at most `target_rows`
    /// rows (`u64::MAX`: one per shard), every deleted row dropped.
    Force { target_rows: u64 },
}

/// What compaction has in flight and what it did lately.
#[derive(Default)]
pub(super) struct Compactions {
    jobs: VecDeque<CompactionState>,
    /// Tasks waiting for a free slot (`compaction.max_parallel`), with their job.
    queue: VecDeque<(u64, CompactTask)>,
    running: usize,
    /// Segments of queued or running tasks, inputs and outputs: never in two plans at once,
    /// and an output being written is not garbage (`gc.rs`).
    busy: HashSet<u64>,
    /// (collection, shard) → when its segments were last checked for deletes.
    delete_rounds: HashMap<(u64, u32), Instant>,
    /// Merged segment → when readers first could move to it.
    switched: HashMap<u64, Instant>,
    /// (collection, shard) → the delete floor seen at the previous settle, and the position
    /// the log was purged below.
    floors: HashMap<(u64, u32), (Seq, Seq)>,
}

impl Compactions {
    /// Merge tasks running or waiting for a slot (idling waits for them, MISSION S3.7).
    pub fn in_progress(&self) -> usize {
        self.running + self.queue.len()
    }

    /// Whether `segment` is an input or the output of a queued or running task.
    pub fn busy(&self, segment: u64) -> bool {
        self.busy.contains(&segment)
    }
}

/// Which segments of a collection readers search while merged segments replace their inputs.
pub struct Switch {
    /// Input segment → the present segment that replaces it.
    replaced_by: HashMap<u64, u64>,
    /// Merged segments with inputs still present that readers already search instead of them.
    ready: HashSet<u64>,
}

impl Switch {
    /// The switch state of one collection's segments under `layout`. A merged segment is
    /// ready once it is indexed (when the collection has an index) and held in every replica
    /// group that has nodes; one whose inputs are partly gone already is searched regardless.
    pub fn of(segments: &BTreeMap<u64, SegmentInfo>, layout: &Layout, indexed: bool) -> Switch {
        let mut replaced_by = HashMap::new();
        let mut ready = HashSet::new();
        for m in segments.values().filter(|s| !s.compacted_from.is_empty()) {
            let present: Vec<u64> = m.compacted_from.iter().copied().filter(|i| segments.contains_key(i)).collect();
            if present.is_empty() {
                continue;
            }
            for &i in &present {
                replaced_by.insert(i, m.id);
            }
            let partly_gone = present.len() < m.compacted_from.len();
            if partly_gone || held_everywhere(m, layout, indexed) {
                ready.insert(m.id);
            }
        }
        Switch { replaced_by, ready }
    }

    /// Whether readers search `segment` now.
    pub fn listed(&self, segment: &SegmentInfo) -> bool {
        if let Some(m) = self.replaced_by.get(&segment.id) {
            return !self.ready.contains(m);
        }
        segment.compacted_from.is_empty() || self.ready.contains(&segment.id) || !self.pending(segment.id)
    }

    /// Whether `segment` replaces inputs that are still present (not yet switched and removed).
    fn pending(&self, segment: u64) -> bool {
        self.replaced_by.values().any(|&m| m == segment)
    }

    /// Whether `segment` takes part in a switch not finished yet (as input or as result).
    pub fn involved(&self, segment: u64) -> bool {
        self.replaced_by.contains_key(&segment) || self.pending(segment)
    }

    /// Whether a merged segment may be placed on query nodes: not before it is indexed when
    /// the collection has an index (readers would search it by brute force).
    pub fn placeable(segment: &SegmentInfo, indexed: bool) -> bool {
        segment.compacted_from.is_empty() || !indexed || segment.index_path.is_some()
    }
}

fn held_everywhere(m: &SegmentInfo, layout: &Layout, indexed: bool) -> bool {
    if indexed && m.index_path.is_none() {
        return false;
    }
    let holders = layout.holders.get(&m.id).map(Vec::as_slice).unwrap_or_default();
    layout.replicas.iter().filter(|g| !g.nodes.is_empty()).all(|g| holders.iter().any(|h| g.nodes.contains(h)))
}

/// The position after which `shard`'s deletes must be read: no present segment of the shard
/// holds a row that a delete at or below it hides, and the leaders' growing rows all come after
/// it.
pub fn delete_floor(segments: &BTreeMap<u64, SegmentInfo>, shard: &ShardLayout) -> Seq {
    segments
        .values()
        .filter(|s| s.shard == shard.shard)
        .map(SegmentInfo::deletes_applied)
        .fold(shard.served_seq, Seq::min)
}

/// Plans for one shard's segments (`live`: every present segment of the shard, in log order):
/// runs of consecutive small segments (fewer than `small` rows) merged up to `target` rows;
/// with `deletes`, every other segment whose deletes are not applied up to `delete_to` is
/// rewritten alone. Segments `eligible` rejects (not served yet, in a plan, being switched)
/// break runs, so a merge never spans one. `force` (a force merge: `small` is then
/// `u64::MAX`) lists every other eligible segment too, as `kept`. A segment holding rows of a
/// `gone` (dropped) partition is rewritten alone like one with deletes to apply.
#[allow(clippy::too_many_arguments)]
pub fn plan_shard(
    live: &[&SegmentInfo],
    eligible: impl Fn(&SegmentInfo) -> bool,
    small: u64,
    target: u64,
    delete_to: Seq,
    deletes: bool,
    force: bool,
    gone: &[PartitionId],
) -> Vec<Planned> {
    let mut plans = Vec::new();
    let mut run: Vec<&SegmentInfo> = Vec::new();
    let mut run_rows = 0u64;
    let needs_deletes =
        |s: &SegmentInfo| (deletes && s.deletes_applied() < delete_to) || (!gone.is_empty() && s.holds_any(gone));
    let close = |run: &mut Vec<&SegmentInfo>, plans: &mut Vec<Planned>| {
        match run.as_slice() {
            [] => {}
            [one] => {
                if needs_deletes(one) {
                    plans.push(Planned { shard: one.shard, inputs: vec![(*one).clone()], kind: "delete" });
                } else if force {
                    plans.push(Planned { shard: one.shard, inputs: vec![(*one).clone()], kind: "kept" });
                }
            }
            many => plans.push(Planned {
                shard: many[0].shard,
                inputs: many.iter().map(|s| (*s).clone()).collect(),
                kind: "merge",
            }),
        }
        run.clear();
    };
    for &s in live {
        if !eligible(s) {
            close(&mut run, &mut plans);
            run_rows = 0;
            continue;
        }
        if s.rows < small {
            if !run.is_empty() && run_rows + s.rows > target {
                close(&mut run, &mut plans);
                run_rows = 0;
            }
            run.push(s);
            run_rows += s.rows;
        } else {
            close(&mut run, &mut plans);
            run_rows = 0;
            if needs_deletes(s) {
                plans.push(Planned { shard: s.shard, inputs: vec![s.clone()], kind: "delete" });
            }
        }
    }
    close(&mut run, &mut plans);
    plans
}

impl Coordinator {
    /// Background compaction: plans every `compaction.interval` (when enabled), and settles
    /// finished plans every second.
    pub(super) async fn compaction_loop(self: Rc<Self>) -> Result<()> {
        let cfg = self.node.shared.config.compaction.clone();
        let mut last_plan = Instant::now();
        loop {
            tokio::time::sleep(SETTLE_EVERY).await;
            if let Err(e) = self.settle_compactions().await {
                tracing::warn!(error = %e, "settling compactions failed; will retry");
            }
            if cfg.enabled && last_plan.elapsed() >= cfg.interval {
                last_plan = Instant::now();
                let names: Vec<String> = self.catalog.lock().await.collections.keys().cloned().collect();
                for name in names {
                    match self.plan_compaction(&name, Mode::Background).await {
                        Ok(Some(job)) => tracing::info!(collection = %name, job = job.id, plans = job.plans.len(),
                            "background compaction planned"),
                        Ok(None) => {}
                        Err(e) => tracing::debug!(collection = %name, error = %e, "no background compaction"),
                    }
                }
            }
        }
    }

    /// `compact`: plans a compaction of every shard of the collection now (every deleted row
    /// dropped; with `force`, every segment merged up to `target_rows`) and answers with the
    /// job; a collection with nothing to compact gets a completed job without plans.
    pub(super) async fn compact(self: &Rc<Self>, req: CompactRequest) -> Result<CompactionState> {
        let mode = match (req.force, req.target_rows) {
            (false, _) => Mode::Manual,
            (true, 0) => Mode::Force { target_rows: u64::MAX },
            (true, rows) => Mode::Force { target_rows: rows },
        };
        match self.plan_compaction(&req.name, mode).await? {
            Some(job) => Ok(job),
            None => {
                let id = self.alloc_ids(1).await?;
                let job = CompactionState { id, collection: req.name, state: COMPLETED.into(), plans: Vec::new() };
                self.remember_job(job.clone());
                Ok(job)
            }
        }
    }

    /// A job's state, from the jobs kept in memory.
    pub(super) fn compaction_state(&self, req: CompactionJobId) -> Result<CompactionState> {
        self.compactions.borrow().jobs.iter().find(|j| j.id == req.id).cloned().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "compaction {} is unknown: no such job, or it is older than the last {KEPT_JOBS} jobs or than the \
                 coordinator's last restart",
                req.id
            ))
        })
    }

    fn remember_job(&self, job: CompactionState) {
        let mut c = self.compactions.borrow_mut();
        c.jobs.push_back(job);
        while c.jobs.len() > KEPT_JOBS {
            c.jobs.pop_front();
        }
    }

    /// Plans one collection's compaction and queues its tasks; `None` when nothing is worth
    /// doing. A `compact` request rewrites every segment with deletes not applied yet if it
    /// lost any row (a force merge also merges every segment up to its target); a background
    /// round checks deletes only when the log holds many, at most every `delete_interval`, and
    /// rewrites a segment only once `delete_ratio` of it is deleted.
    async fn plan_compaction(self: &Rc<Self>, name: &str, mode: Mode) -> Result<Option<CompactionState>> {
        let manual = mode != Mode::Background;
        let cfg = self.node.shared.config.compaction.clone();
        let max_rows = self.node.shared.config.datanode.segment_max_rows;
        let (info, layout, segments) = {
            let catalog = self.catalog.lock().await;
            let info = catalog.by_name(name)?.clone();
            let layout = catalog.layouts.get(&info.id).cloned().unwrap_or_default();
            (info.clone(), layout, catalog.segments.get(&info.id).cloned().unwrap_or_default())
        };
        let switch = Switch::of(&segments, &layout, info.index.is_some());
        // Dropped partitions: their rows go when their segments are rewritten.
        let gone: Vec<PartitionId> =
            info.partitions.iter().filter(|p| p.state == PartitionState::Dropped).map(|p| p.id).collect();
        let mut planned: Vec<(Planned, Seq)> = Vec::new();
        for shard in &layout.shards {
            let mut live: Vec<&SegmentInfo> = segments.values().filter(|s| s.shard == shard.shard).collect();
            live.sort_by_key(|s| s.start_seq);
            let key = (info.id, shard.shard);
            // Every plan applies the shard's deletes up to its last one (deletes come after the
            // rows they hide in the log, so usually after every sealed segment).
            let last_delete = crate::dml::last_delete_seq(&self.node.shared.bus, info.id, shard.shard).await?;
            let deletes = manual || self.delete_round_due(key, &live, last_delete).await;
            let busy = self.compactions.borrow().busy.clone();
            let eligible =
                |s: &SegmentInfo| s.end_seq <= shard.served_seq && !busy.contains(&s.id) && !switch.involved(s.id);
            let (small, target, force) = match mode {
                Mode::Force { target_rows } => (u64::MAX, target_rows, true),
                _ => (cfg.small_rows(max_rows), cfg.target(max_rows), false),
            };
            let plans = plan_shard(&live, eligible, small, target, last_delete, deletes, force, &gone);
            if deletes {
                self.compactions.borrow_mut().delete_rounds.insert(key, Instant::now());
            }
            planned.extend(plans.into_iter().map(|p| (p, last_delete)));
        }
        if planned.is_empty() {
            return Ok(None);
        }
        let job_id = self.alloc_ids(1).await?;
        let mut job =
            CompactionState { id: job_id, collection: name.to_string(), state: EXECUTING.into(), plans: Vec::new() };
        for (p, delete_to) in planned {
            if p.kind == "kept" {
                let plan = self.alloc_ids(1).await?;
                let id = p.inputs.first().map_or(0, |s| s.id);
                job.plans.push(CompactionPlan {
                    id: plan,
                    shard: p.shard,
                    sources: vec![id],
                    target: id,
                    kind: p.kind.into(),
                    state: COMPLETED.into(),
                    error: String::new(),
                });
                continue;
            }
            let ids = self.alloc_ids(2).await?;
            let (plan, output) = (ids, ids + 1);
            let min_dropped = match (manual, p.inputs.as_slice()) {
                (false, [one]) if !one.holds_any(&gone) => ((one.rows as f64 * cfg.delete_ratio).ceil() as u64).max(1),
                _ => 1,
            };
            let task = CompactTask {
                collection: info.clone(),
                shard: p.shard,
                plan,
                delete_from: p.inputs.iter().map(SegmentInfo::deletes_applied).min().unwrap_or(0),
                delete_to,
                inputs: p.inputs,
                output,
                min_dropped,
            };
            job.plans.push(CompactionPlan {
                id: plan,
                shard: task.shard,
                sources: task.inputs.iter().map(|s| s.id).collect(),
                target: output,
                kind: p.kind.into(),
                state: EXECUTING.into(),
                error: String::new(),
            });
            let mut c = self.compactions.borrow_mut();
            c.busy.extend(task.inputs.iter().map(|s| s.id).chain([task.output]));
            c.queue.push_back((job_id, task));
        }
        if job.plans.iter().all(|p| p.state != EXECUTING) {
            job.state = COMPLETED.into();
        }
        self.remember_job(job.clone());
        self.pump_compactions();
        Ok(Some(job))
    }

    /// Whether a background round should check a shard's segments for deletes: its log holds
    /// `delete_entries` deletes or more not applied everywhere, some segment lags behind the
    /// last one, and the last round is `delete_interval` old.
    async fn delete_round_due(&self, key: (u64, u32), live: &[&SegmentInfo], last_delete: Seq) -> bool {
        let cfg = &self.node.shared.config.compaction;
        if self.compactions.borrow().delete_rounds.get(&key).is_some_and(|t| t.elapsed() < cfg.delete_interval) {
            return false;
        }
        if !live.iter().any(|s| s.deletes_applied() < last_delete) {
            return false;
        }
        match crate::dml::delete_entries(&self.node.shared.bus, key.0, key.1).await {
            Ok(n) => n >= cfg.delete_entries,
            Err(_) => false,
        }
    }

    /// Starts queued tasks while fewer than `compaction.max_parallel` run.
    fn pump_compactions(self: &Rc<Self>) {
        let max = self.node.shared.config.compaction.max_parallel;
        loop {
            let next = {
                let mut c = self.compactions.borrow_mut();
                if c.running >= max {
                    return;
                }
                let Some(next) = c.queue.pop_front() else { return };
                c.running += 1;
                next
            };
            let me = self.clone();
            actix::spawn(async move {
                let (job, task) = next;
                let span = tracing::debug_span!(
                    "compaction",
                    collection = task.collection.id,
                    shard = task.shard,
                    inputs = task.inputs.len()
                );
                let result = me.run_compaction(&task).instrument(span).await;
                {
                    let mut c = me.compactions.borrow_mut();
                    c.running -= 1;
                    for s in &task.inputs {
                        c.busy.remove(&s.id);
                    }
                    c.busy.remove(&task.output);
                }
                me.finish_plan(job, task.plan, result);
                me.reconcile.notify_one();
                me.pump_compactions();
            });
        }
    }

    fn finish_plan(&self, job: u64, plan: u64, result: Result<Option<u64>>) {
        let mut c = self.compactions.borrow_mut();
        let Some(job) = c.jobs.iter_mut().find(|j| j.id == job) else { return };
        if let Some(p) = job.plans.iter_mut().find(|p| p.id == plan) {
            match result {
                Ok(target) => {
                    p.state = COMPLETED.into();
                    p.target = target.unwrap_or(0);
                }
                Err(e) => {
                    tracing::warn!(plan, error = %e, "compaction plan failed");
                    p.state = FAILED.into();
                    p.error = e.to_string();
                }
            }
        }
        if job.plans.iter().all(|p| p.state != EXECUTING) {
            job.state = COMPLETED.into();
        }
    }

    /// Has the shard's data node run one task, then commits its outcome; the merged segment's
    /// id, if one was made. A task that failed or was refused leaves no object behind.
    async fn run_compaction(&self, task: &CompactTask) -> Result<Option<u64>> {
        let owner = {
            let catalog = self.catalog.lock().await;
            let layout = catalog.layouts.get(&task.collection.id);
            layout.and_then(|l| l.shards.iter().find(|s| s.shard == task.shard)).map(|s| s.channel_owner.clone())
        };
        let Some(owner) = owner.filter(|o| !o.is_empty()) else {
            return Err(Error::Unavailable(format!("shard {} has no data node to compact it", task.shard)));
        };
        let bus = &self.node.shared.bus;
        let opts = CallOptions::long(self.node.shared.config.compaction.timeout);
        let outcome = bus.call_node::<datanode::Compact>(owner.as_str(), task, &opts).await;
        let committed = match outcome {
            Ok(outcome) => self.commit_compaction(task, outcome).await,
            Err(e) => Err(e),
        };
        if committed.is_err() {
            let path = keys::paths::segment_data(task.collection.id, task.output);
            let _ = self.node.shared.objects.delete(&path).await;
        }
        committed
    }

    /// Records a task's outcome in the catalog, if its inputs are still what it read.
    async fn commit_compaction(&self, task: &CompactTask, outcome: CompactOutcome) -> Result<Option<u64>> {
        let meta = &self.meta;
        let cid = task.collection.id;
        let ids: Vec<u64> = task.inputs.iter().map(|s| s.id).collect();
        let mut catalog = self.catalog.lock().await;
        let Some(segments) = catalog.segments.get_mut(&cid) else {
            return Err(Error::CollectionNotFound(format!("collection id {cid} was dropped during compaction")));
        };
        if let Some(gone) = ids.iter().find(|id| !segments.contains_key(id)) {
            return Err(Error::Stale(format!("segment {gone} is gone; compaction plan {} is void", task.plan)));
        }
        if let Some(other) = segments.values().find(|s| s.compacted_from.iter().any(|i| ids.contains(i))) {
            return Err(Error::Stale(format!(
                "segment {} already replaces inputs of compaction plan {}",
                other.id, task.plan
            )));
        }
        if outcome.unchanged {
            // One input kept as it is; it has every delete up to `delete_to` applied only if
            // it lost no row.
            if outcome.dropped_rows == 0 {
                if let Some(seg) = segments.get_mut(&ids[0]) {
                    seg.delete_seq = seg.delete_seq.max(task.delete_to);
                    meta.put(&keys::segment(cid, seg.id), &*seg).await?;
                }
            }
            return Ok(None);
        }
        let Some(merged) = outcome.output else {
            // Every row was deleted: the inputs go now (they show no row to any reader).
            let removed: Vec<SegmentInfo> = ids.iter().filter_map(|id| segments.remove(id)).collect();
            for s in &removed {
                meta.delete(&keys::segment(cid, s.id)).await?;
            }
            self.forget_segments(&mut catalog, cid, &ids).await?;
            drop(catalog);
            self.delete_objects(&removed).await;
            self.publish_change(cid).await;
            tracing::info!(plan = task.plan, inputs = ?ids, "compaction: every row was deleted; segments dropped");
            return Ok(None);
        };
        let expected_range = (task.inputs[0].start_seq, task.inputs[task.inputs.len() - 1].end_seq);
        if merged.id != task.output
            || merged.collection != cid
            || merged.shard != task.shard
            || merged.compacted_from != ids
            || (merged.start_seq, merged.end_seq) != expected_range
        {
            return Err(Error::Internal(format!("compaction plan {} came back with a different segment", task.plan)));
        }
        meta.put(&keys::segment(cid, merged.id), &merged).await?;
        tracing::info!(plan = task.plan, segment = merged.id, rows = merged.rows, inputs = ?ids,
            dropped_rows = outcome.dropped_rows, "compacted segment committed; indexing and loading it");
        metrics::counter!("quiver_compactions_total").increment(1);
        let id = merged.id;
        segments.insert(id, merged);
        Ok(Some(id))
    }

    /// Finishes switches: inputs of a merged segment that readers have searched instead of them
    /// for [`SWITCH_GRACE`] are removed (catalog, layout, query nodes, object store). Then moves
    /// each shard's delete floor and purges the log's deletes below the previous one.
    async fn settle_compactions(&self) -> Result<()> {
        let meta = &self.meta;
        let mut removed_all = Vec::new();
        let mut changed = Vec::new();
        let mut purges = Vec::new();
        {
            let mut catalog = self.catalog.lock().await;
            let infos: Vec<CollectionInfo> = catalog.collections.values().cloned().collect();
            for info in infos {
                let cid = info.id;
                let (Some(segments), Some(layout)) = (catalog.segments.get(&cid), catalog.layouts.get(&cid)) else {
                    continue;
                };
                let switch = Switch::of(segments, layout, info.index.is_some());
                let now = Instant::now();
                let mut done: Vec<u64> = Vec::new();
                {
                    let mut c = self.compactions.borrow_mut();
                    for m in segments.values().filter(|s| switch.ready.contains(&s.id)) {
                        let since = *c.switched.entry(m.id).or_insert(now);
                        if since.elapsed() >= SWITCH_GRACE {
                            done.extend(m.compacted_from.iter().copied().filter(|i| segments.contains_key(i)));
                        }
                    }
                    c.switched.retain(|m, _| switch.ready.contains(m));
                }
                let floors: Vec<(u32, Seq)> =
                    layout.shards.iter().map(|s| (s.shard, delete_floor(segments, s))).collect();
                {
                    let mut c = self.compactions.borrow_mut();
                    for (shard, floor) in floors {
                        let (previous, purged) = c.floors.get(&(cid, shard)).copied().unwrap_or((0, 0));
                        // Purge below the floor of the previous round: a query node that opened
                        // the shard with an older floor has read past it by now.
                        if previous > purged {
                            purges.push((cid, shard, previous));
                        }
                        c.floors.insert((cid, shard), (floor, purged.max(previous)));
                    }
                }
                if done.is_empty() {
                    continue;
                }
                let Some(segments) = catalog.segments.get_mut(&cid) else { continue };
                let removed: Vec<SegmentInfo> = done.iter().filter_map(|id| segments.remove(id)).collect();
                for s in &removed {
                    meta.delete(&keys::segment(cid, s.id)).await?;
                }
                tracing::info!(collection = cid, segments = ?done, "compacted segments' inputs removed");
                self.forget_segments(&mut catalog, cid, &done).await?;
                removed_all.extend(removed);
                changed.push(cid);
            }
        }
        self.delete_objects(&removed_all).await;
        for cid in changed {
            self.publish_change(cid).await;
            self.reconcile.notify_one();
        }
        for (cid, shard, below) in purges {
            if let Err(e) = crate::dml::purge_deletes(&self.node.shared.bus, cid, shard, below).await {
                tracing::debug!(collection = cid, shard, error = %e, "could not purge applied deletes");
            }
        }
        Ok(())
    }

    /// Drops removed segments from a collection's layout (targets, holders) and persists it.
    async fn forget_segments(&self, catalog: &mut super::Catalog, cid: u64, ids: &[u64]) -> Result<()> {
        let Some(layout) = catalog.layouts.get_mut(&cid) else { return Ok(()) };
        for id in ids {
            layout.holders.remove(id);
            for g in &mut layout.replicas {
                g.targets.remove(id);
            }
        }
        layout.version += 1;
        self.meta.put(&keys::layout(cid), layout).await?;
        Ok(())
    }

    async fn delete_objects(&self, segments: &[SegmentInfo]) {
        let objects = &self.node.shared.objects;
        for s in segments {
            let _ = objects.delete(&s.data_path).await;
            if let Some(p) = &s.index_path {
                let _ = objects.delete(p).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use quiver_schemas::SegmentState;

    use super::super::catalog::{ReplicaLayout, ShardLeader};
    use super::*;

    fn seg(id: u64, start: Seq, end: Seq, rows: u64) -> SegmentInfo {
        SegmentInfo {
            partitions: Default::default(),
            id,
            collection: 1,
            shard: 0,
            rows,
            start_seq: start,
            end_seq: end,
            data_path: String::new(),
            index_path: Some(format!("i{id}")),
            state: SegmentState::Indexed,
            mem_size: 0,
            delete_seq: 0,
            compacted_from: Vec::new(),
        }
    }

    fn ids(plans: &[Planned]) -> Vec<(Vec<u64>, &'static str)> {
        plans.iter().map(|p| (p.inputs.iter().map(|s| s.id).collect(), p.kind)).collect()
    }

    #[test]
    fn consecutive_small_segments_merge_up_to_the_target() {
        let segs: Vec<SegmentInfo> =
            (0..7).map(|i| seg(i + 1, i * 10 + 1, i * 10 + 10, if i == 3 { 500 } else { 40 })).collect();
        let live: Vec<&SegmentInfo> = segs.iter().collect();
        let plans = plan_shard(&live, |_| true, 100, 100, 70, false, false, &[]);
        // 1,2,3 (120 > 100 splits after two), then 4 is large, then 5,6,7.
        assert_eq!(ids(&plans), [(vec![1, 2], "merge"), (vec![5, 6], "merge")]);
        let plans = plan_shard(&live, |_| true, 100, 1000, 70, false, false, &[]);
        assert_eq!(ids(&plans), [(vec![1, 2, 3], "merge"), (vec![5, 6, 7], "merge")]);
    }

    #[test]
    fn an_ineligible_segment_breaks_a_run_and_deletes_rewrite_the_rest() {
        let mut segs: Vec<SegmentInfo> = (0..5).map(|i| seg(i + 1, i * 10 + 1, i * 10 + 10, 10)).collect();
        segs[4].rows = 1000;
        segs[0].delete_seq = 50; // has every delete applied already
        let live: Vec<&SegmentInfo> = segs.iter().collect();
        let plans = plan_shard(&live, |s| s.id != 3, 100, 1000, 50, true, false, &[]);
        assert_eq!(ids(&plans), [(vec![1, 2], "merge"), (vec![4], "delete"), (vec![5], "delete")]);
        let plans = plan_shard(&live, |s| s.id != 3, 100, 1000, 50, false, false, &[]);
        assert_eq!(ids(&plans), [(vec![1, 2], "merge")], "no delete round: single segments stay");
    }

    #[test]
    fn a_force_merge_merges_every_segment_up_to_its_target_and_lists_the_rest() {
        let mut segs: Vec<SegmentInfo> = (0..6).map(|i| seg(i + 1, i * 10 + 1, i * 10 + 10, 1_000)).collect();
        segs[5].delete_seq = 60;
        let live: Vec<&SegmentInfo> = segs.iter().collect();
        // No limit: one merged segment per shard, big segments included.
        let plans = plan_shard(&live, |_| true, u64::MAX, u64::MAX, 60, true, true, &[]);
        assert_eq!(ids(&plans), [(vec![1, 2, 3, 4, 5, 6], "merge")]);
        // 2,500 rows at most; a segment not served yet breaks the runs.
        let plans = plan_shard(&live, |s| s.id != 4, u64::MAX, 2_500, 60, true, true, &[]);
        assert_eq!(ids(&plans), [(vec![1, 2], "merge"), (vec![3], "delete"), (vec![5, 6], "merge")]);
        // A lone segment with nothing to drop is already merged: listed, not rewritten.
        let one = [&segs[5]];
        assert_eq!(ids(&plan_shard(&one, |_| true, u64::MAX, u64::MAX, 60, true, true, &[])), [(vec![6], "kept")]);
        assert!(plan_shard(&one, |_| true, 100, 1000, 60, true, false, &[]).is_empty(), "a plain compact leaves it");
    }

    #[test]
    fn segments_holding_a_dropped_partition_are_rewritten() {
        let mut segs: Vec<SegmentInfo> = (0..3).map(|i| seg(i + 1, i * 10 + 1, i * 10 + 10, 1_000)).collect();
        segs[0].partitions = vec![0, 2];
        segs[1].partitions = vec![3];
        // segs[2] holds `_default` alone (an empty list).
        let live: Vec<&SegmentInfo> = segs.iter().collect();
        assert!(plan_shard(&live, |_| true, 100, 1000, 0, false, false, &[]).is_empty());
        assert_eq!(ids(&plan_shard(&live, |_| true, 100, 1000, 0, false, false, &[2])), [(vec![1], "delete")]);
        assert_eq!(ids(&plan_shard(&live, |_| true, 100, 1000, 0, false, false, &[3, 4])), [(vec![2], "delete")]);
        assert!(segs[2].holds_any(&[0]) && !segs[2].holds_any(&[1]) && segs[0].holds_any(&[0]));
    }

    #[test]
    fn the_delete_floor_is_the_lowest_applied_position_capped_by_the_served_one() {
        let mut segments: BTreeMap<u64, SegmentInfo> = BTreeMap::new();
        segments.insert(1, seg(1, 11, 20, 5));
        segments.insert(2, seg(2, 21, 30, 5));
        let shard = ShardLayout { shard: 0, served_seq: 30, ..Default::default() };
        assert_eq!(delete_floor(&segments, &shard), 10, "deletes at or before 10 hide no row of segment 1");
        segments.get_mut(&1).unwrap().delete_seq = 30;
        assert_eq!(delete_floor(&segments, &shard), 20);
        segments.get_mut(&2).unwrap().delete_seq = 40;
        assert_eq!(delete_floor(&segments, &shard), 30, "never above the served position");
        assert_eq!(delete_floor(&BTreeMap::new(), &shard), 30);
    }

    #[test]
    fn readers_switch_from_the_inputs_to_the_merged_segment_in_one_step() {
        let mut segments: BTreeMap<u64, SegmentInfo> = BTreeMap::new();
        segments.insert(1, seg(1, 1, 10, 5));
        segments.insert(2, seg(2, 11, 20, 5));
        segments.insert(3, seg(3, 21, 30, 5));
        let mut m = seg(9, 1, 20, 8);
        m.compacted_from = vec![1, 2];
        m.index_path = None;
        segments.insert(9, m);
        let group = |id, nodes: &[&str]| ReplicaLayout {
            id,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            leaders: vec![ShardLeader::default()],
            targets: BTreeMap::new(),
        };
        let mut layout = Layout { replicas: vec![group(0, &["a"]), group(1, &["b"])], ..Default::default() };
        let listed = |segments: &BTreeMap<u64, SegmentInfo>, layout: &Layout| {
            let switch = Switch::of(segments, layout, true);
            segments.values().filter(|s| switch.listed(s)).map(|s| s.id).collect::<Vec<_>>()
        };
        assert_eq!(listed(&segments, &layout), [1, 2, 3], "not indexed yet");
        assert!(!Switch::placeable(&segments[&9], true) && Switch::placeable(&segments[&9], false));
        segments.get_mut(&9).unwrap().index_path = Some("i9".into());
        layout.holders.insert(9, vec!["a".into()]);
        assert_eq!(listed(&segments, &layout), [1, 2, 3], "held in one replica group of two");
        layout.holders.insert(9, vec!["a".into(), "b".into()]);
        assert_eq!(listed(&segments, &layout), [3, 9], "held everywhere: the inputs leave, never both");
        let switch = Switch::of(&segments, &layout, true);
        assert!(switch.involved(1) && switch.involved(9) && !switch.involved(3));
        layout.holders.clear();
        segments.remove(&1);
        assert_eq!(listed(&segments, &layout), [3, 9], "once an input is removed there is no way back");
        segments.remove(&2);
        let switch = Switch::of(&segments, &layout, true);
        assert!(!switch.involved(9), "a merged segment without inputs is an ordinary one");
    }
}
