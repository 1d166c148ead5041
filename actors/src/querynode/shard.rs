//! One shard as a query node sees it: the delete log (always) and, when this node is the
//! shard leader, the growing rows after the sealed position. Fed by an ordered consumer of
//! the shard's DML stream; `applied` tells waiting searches how far the log has been read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use quiver_runtime::{bus::now_ms, Error, Result};
use quiver_schemas::{
    ts_physical_ms, CollectionInfo, Consistency, DmlEntry, MemoryMarkEvent, MetricType, PrimaryKey, Seq, Timestamp,
};
use tokio::sync::watch;

use crate::dml::{self, ShardLog};
use crate::node::Node;
use crate::rows::RowStore;
use crate::vector::FlatVectors;

/// Growing rows of a led shard, with their brute-force search structure.
pub struct Growing {
    pub rows: RowStore,
    pub flat: FlatVectors,
}

/// Latest delete position per primary key of a shard.
#[derive(Default)]
pub struct Deletes {
    pub by_pk: HashMap<PrimaryKey, Seq>,
    /// Bumped on every applied delete (cache key for per-segment counts).
    pub version: u64,
}

impl Deletes {
    /// Whether the row `(pk, seq)` was deleted after it was written.
    pub fn hides(&self, pk: &PrimaryKey, seq: Seq) -> bool {
        self.by_pk.get(pk).is_some_and(|d| *d > seq)
    }
}

/// State shared between the log reader and searches (searches run on blocking threads).
pub struct ShardData {
    pub collection: u64,
    pub shard: u32,
    pub leader: bool,
    pub growing: RwLock<Growing>,
    pub deletes: RwLock<Deletes>,
    pub sealed_seq: std::sync::atomic::AtomicU64,
    /// The log lost entries at or below this position before the reader got to them: the
    /// coordinator purges inserts once segments serve them, and may do so between sending this
    /// node a lead sealed at an older position and the reader catching up. Growing rows are
    /// complete only after it.
    lost_to: std::sync::atomic::AtomicU64,
    applied: watch::Sender<Seq>,
    /// Wall-clock ms at which the reader was last known to be caught up with the stream.
    caught_up_ms: std::sync::atomic::AtomicU64,
}

pub struct Shard {
    pub data: Arc<ShardData>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shard {
    /// Starts reading the shard log after `delete_floor` (the deletes at or below it are applied
    /// in every segment of the shard: compaction) and keeps growing rows after `sealed_seq`
    /// when `leader`.
    pub fn open(
        node: &Node,
        info: &CollectionInfo,
        shard: u32,
        metric: MetricType,
        leader: bool,
        sealed_seq: Seq,
        delete_floor: Seq,
    ) -> Shard {
        let dim = info.dim() as usize;
        let data = Arc::new(ShardData::new(info.id, shard, dim, metric, leader, sealed_seq));
        // A leader's growing rows start after `sealed_seq`: deletes after it must all be read.
        let floor = if leader { delete_floor.min(sealed_seq) } else { delete_floor };
        data.applied.send_replace(floor);
        let task = node.spawn_loop("shard log reader", read_log(node.clone(), info.clone(), data.clone(), floor));
        Shard { data, task }
    }
}

/// Tells the proxies at once when this node's resident memory crosses its high-water mark,
/// either way: growing rows come from the log, with no request here to refuse, so the proxies
/// refuse inserts into this node's collections meanwhile (`proxy/quota.rs`; their reading of
/// the heartbeats is the fallback for an event lost).
async fn report_memory(node: &Node) {
    let memory = &node.shared.memory;
    let Some((over, used)) = memory.mark_crossed() else { return };
    let event = MemoryMarkEvent { node_id: node.id.clone(), over, used, budget: memory.limit(), at_ms: now_ms() };
    if over {
        tracing::warn!(
            used_mib = used >> 20,
            budget_mib = memory.limit() >> 20,
            "resident memory above the high-water mark: proxies refuse inserts into this node's collections"
        );
    } else {
        tracing::info!(used_mib = used >> 20, "resident memory back under the high-water mark: inserts resume");
    }
    let payload = match serde_json::to_vec(&event) {
        Ok(p) => p,
        Err(e) => return tracing::warn!(error = %e, "could not encode a memory event"),
    };
    let subject = node.subjects().memory_events();
    if let Err(e) = node.shared.bus.client().publish(subject, payload.into()).await {
        tracing::warn!(error = %e, "could not publish a memory event; proxies will read the heartbeat");
    }
}

/// How long the rest of an atomic batch of the log that is in the log is waited for before
/// what came of it is applied on its own (a safety net: it comes right after, however loaded
/// the machine, unless the reader is starved for longer).
const BATCH_WAIT: Duration = Duration::from_secs(30);

async fn read_log(node: Node, info: CollectionInfo, data: Arc<ShardData>, floor: Seq) -> Result<()> {
    let bus = node.shared.bus.clone();
    let skip = if data.leader { data.sealed_seq.load(std::sync::atomic::Ordering::Acquire) } else { Seq::MAX };
    let mut log = ShardLog::open(&bus, &info, data.shard, floor, skip, Some("querynode")).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // Entries of an atomic batch read so far (an upsert's delete, then its inserts): applied
    // together once its last one is in, so no reader sees the old rows gone and the new ones
    // not there yet.
    let mut batch: Vec<dml::LogEntry> = Vec::new();
    let mut batch_since = Instant::now();
    loop {
        tokio::select! {
            biased;
            entry = log.next() => {
                let Some(entry) = entry else { return Err(Error::Unavailable("DML consumer ended".into())) };
                let entry = entry?;
                // An entry that does not continue the batch held (the rest of it was purged, or
                // the reader started inside it) ends that batch first.
                if batch.last().is_some_and(|b| b.batch_rest != entry.batch_rest + 1 || entry.seq != b.seq + 1) {
                    data.apply_all(std::mem::take(&mut batch))?;
                }
                if entry.batch_rest > 0 {
                    if batch.is_empty() {
                        batch_since = Instant::now();
                    }
                    batch.push(entry);
                    continue;
                }
                batch.push(entry);
                data.apply_all(std::mem::take(&mut batch))?;
                report_memory(&node).await;
            }
            _ = tick.tick() => {
                report_memory(&node).await;
                // Keep Bounded reads from waiting when the log is idle. Bounded in time: a
                // request lost to a NATS reconnect must not hold up applying entries for a
                // whole request timeout.
                let started = now_ms();
                let last = tokio::time::timeout(Duration::from_secs(1), dml::last_seq(&bus, data.collection, data.shard)).await;
                if let Ok(Ok(last)) = last {
                    // The log is committed whole: the rest of a batch held is on its way unless
                    // the log ends before it (purged with the segment that holds it), and then
                    // nothing more will come to end the batch.
                    if batch.last().is_some_and(|b| last <= b.seq) {
                        data.apply_all(std::mem::take(&mut batch))?;
                    }
                    if *data.applied.borrow() >= last {
                        data.caught_up_ms.fetch_max(started, std::sync::atomic::Ordering::AcqRel);
                    }
                }
                // A safety net only: the rest of a batch that is in the log but does not come.
                if !batch.is_empty() && batch_since.elapsed() >= BATCH_WAIT {
                    tracing::warn!(collection = data.collection, shard = data.shard, entries = batch.len(),
                        "the rest of an atomic log batch did not come; applying what came of it");
                    data.apply_all(std::mem::take(&mut batch))?;
                }
            }
        }
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Internal("shard state lock poisoned".into())
}

impl ShardData {
    /// A shard with nothing read yet: no deletes, no growing rows (kept after `sealed_seq`
    /// when `leader`).
    pub(super) fn new(
        collection: u64,
        shard: u32,
        dim: usize,
        metric: MetricType,
        leader: bool,
        sealed_seq: Seq,
    ) -> ShardData {
        let (applied, _) = watch::channel(0);
        ShardData {
            collection,
            shard,
            leader,
            growing: RwLock::new(Growing { rows: RowStore::new(dim), flat: FlatVectors::new(dim, metric) }),
            deletes: RwLock::new(Deletes::default()),
            sealed_seq: sealed_seq.into(),
            lost_to: 0.into(),
            applied,
            caught_up_ms: 0.into(),
        }
    }

    /// Applies one entry of the shard's log (in log order): deletes always, inserts after the
    /// sealed position when leading.
    #[cfg(test)]
    pub(super) fn apply(&self, entry: dml::LogEntry) -> Result<()> {
        self.apply_all(vec![entry])
    }

    /// Applies entries of the shard's log (in log order) as one step for readers: they hold the
    /// growing rows' lock while they read, and see either none of `entries` or all of them.
    pub(super) fn apply_all(&self, entries: Vec<dml::LogEntry>) -> Result<()> {
        let Some(last) = entries.last().map(|e| e.seq) else { return Ok(()) };
        let sealed = self.sealed_seq.load(std::sync::atomic::Ordering::Acquire);
        let takes_rows =
            |e: &dml::LogEntry| self.leader && e.seq > sealed && matches!(e.entry, Some(DmlEntry::Insert { .. }));
        // Only the locks needed, the growing rows' first (as readers take them).
        let mut growing = match entries.iter().any(takes_rows) {
            true => Some(self.growing.write().map_err(poisoned)?),
            false => None,
        };
        let mut deletes = match entries.iter().any(|e| matches!(e.entry, Some(DmlEntry::Delete { .. }))) {
            true => Some(self.deletes.write().map_err(poisoned)?),
            false => None,
        };
        // Read again under the lock: a seal that moved it meanwhile dropped those rows here.
        let sealed = self.sealed_seq.load(std::sync::atomic::Ordering::Acquire);
        for entry in entries {
            self.note_gap(&entry);
            match entry.entry {
                Some(DmlEntry::Insert { rows, partition, .. }) if self.leader && entry.seq > sealed => {
                    if let Some(g) = growing.as_mut() {
                        g.flat.push(&rows.vectors).map_err(|e| Error::Internal(e.to_string()))?;
                        g.rows.append(&rows, entry.seq, partition);
                    }
                }
                Some(DmlEntry::Delete { pks, .. }) => {
                    if let Some(d) = deletes.as_mut() {
                        for pk in pks {
                            let slot = d.by_pk.entry(pk).or_insert(0);
                            *slot = (*slot).max(entry.seq);
                        }
                        d.version += 1;
                    }
                }
                _ => {}
            }
        }
        drop((deletes, growing));
        self.applied.send_replace(last);
        Ok(())
    }

    /// Records entries purged before this reader got to them (between `entry.prev` and `entry.seq`).
    fn note_gap(&self, entry: &dml::LogEntry) {
        if entry.seq > entry.prev.saturating_add(1) {
            // Recorded before `applied` moves, so a read that waited for this entry sees it.
            let lost_to = entry.seq - 1;
            let before = self.lost_to.fetch_max(lost_to, std::sync::atomic::Ordering::AcqRel);
            let sealed = self.sealed_seq.load(std::sync::atomic::Ordering::Acquire);
            if self.leader && lost_to > before.max(sealed) {
                tracing::debug!(
                    collection = self.collection,
                    shard = self.shard,
                    sealed,
                    from = entry.prev,
                    to = lost_to,
                    "log entries after this lead's sealed position were purged before they were read; \
                     reads with an older view are refused"
                );
            }
        }
    }

    /// Compares growing rows with `metric` from now on (the collection's index chose it).
    pub fn set_metric(&self, metric: MetricType) -> Result<()> {
        let mut g = self.growing.write().map_err(poisoned)?;
        if g.flat.metric() != metric {
            let dim = g.flat.dim();
            g.flat = FlatVectors::from_vec(dim, metric, g.rows.vectors.clone())
                .map_err(|e| Error::Internal(e.to_string()))?;
        }
        Ok(())
    }

    /// Whether the growing rows can answer a request whose view of the layout has sealed rows up
    /// to `after`: not when rows past `after` were sealed since (dropped from growing, and the
    /// request's segment list lacks them), nor when the log lost entries past `after` before
    /// they were read (purged once a newer layout served them). Either way the request must be
    /// planned again on a fresh layout rather than silently miss rows. Call with the growing
    /// rows' lock held (sealing drops rows under it).
    pub fn check_view(&self, after: Seq) -> Result<()> {
        let sealed = self.sealed_seq.load(std::sync::atomic::Ordering::Acquire);
        if sealed > after {
            return Err(Error::Stale(format!(
                "shard {} sealed up to {sealed} while the request's view ends at {after}; refresh",
                self.shard
            )));
        }
        let lost = self.lost_to.load(std::sync::atomic::Ordering::Acquire);
        if lost > after {
            return Err(Error::Stale(format!(
                "shard {}'s log was purged up to {lost} (served from segments) before this node read it, \
                 while the request's view ends at {after}; refresh",
                self.shard
            )));
        }
        Ok(())
    }

    /// Moves the sealed position: growing rows at or below it are now served from segments.
    pub fn advance_sealed(&self, sealed_seq: Seq) -> Result<()> {
        let old = self.sealed_seq.fetch_max(sealed_seq, std::sync::atomic::Ordering::AcqRel);
        if sealed_seq <= old {
            return Ok(());
        }
        let mut g = self.growing.write().map_err(poisoned)?;
        let n = g.rows.seqs.iter().take_while(|s| **s <= sealed_seq).count();
        if n > 0 {
            g.rows.drain_front(n);
            let (dim, metric) = (g.flat.dim(), g.flat.metric());
            g.flat = FlatVectors::from_vec(dim, metric, g.rows.vectors.clone())
                .map_err(|e| Error::Internal(e.to_string()))?;
        }
        Ok(())
    }

    /// Waits until this shard's state satisfies the consistency level of a request that
    /// arrived at `arrived_ms`.
    pub async fn wait_consistent(
        &self,
        node: &Node,
        consistency: Consistency,
        guarantee_ts: Timestamp,
        arrived_ms: u64,
    ) -> Result<()> {
        let caught_up = || self.caught_up_ms.load(std::sync::atomic::Ordering::Acquire);
        match consistency {
            Consistency::Eventually => return Ok(()),
            Consistency::Bounded if caught_up() >= ts_physical_ms(guarantee_ts) => return Ok(()),
            Consistency::Strong if caught_up() >= arrived_ms => return Ok(()),
            _ => {}
        }
        // Anything acknowledged before the request was sent is at or below the stream's last
        // position as read now.
        let started = now_ms();
        let limit = node.shared.config.querynode.max_consistency_wait;
        let give_up = Instant::now() + limit;
        let target = dml::last_seq_within(&node.shared.bus, self.collection, self.shard, limit).await?;
        let mut rx = self.applied.subscribe();
        let wait = async move { rx.wait_for(|applied| *applied >= target).await.map(|_| ()) };
        match tokio::time::timeout_at(give_up.into(), wait).await {
            Ok(Ok(_)) => {
                self.caught_up_ms.fetch_max(started, std::sync::atomic::Ordering::AcqRel);
                Ok(())
            }
            Ok(Err(_)) => Err(Error::Unavailable("shard reader stopped".into())),
            Err(_) => Err(Error::Unavailable(format!(
                "shard {} is still {} log entries behind after {limit:?}; retry",
                self.shard,
                target.saturating_sub(*self.applied.borrow())
            ))),
        }
    }
}
