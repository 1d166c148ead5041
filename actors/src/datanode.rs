//! The data node: consumes the DML log of the shards the coordinator assigns to it (pushed as
//! `WatchChannels`, the node's full set, each shard with its checkpoint), keeps growing
//! segments, seals them by size, age or on request, writes them to the object store and
//! reports them to the coordinator. A shard's checkpoint is the end of its last flushed
//! segment, so a restarted or new owner resumes exactly there. A shard taken away is flushed
//! first and released only then (the hand-over protocol: `coordinator/channels.rs`). It also
//! runs the coordinator's compaction tasks (`compact.rs`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use quiver_runtime::bus::RequestContext;
use quiver_runtime::{Error, Result, RoleContext};
use quiver_schemas::protocol::{coord, keys, DataNodeRequest};
use quiver_schemas::{
    Alloc, CollectionInfo, CollectionName, DmlEntry, Empty, FlushResult, SegmentFlushed, SegmentInfo, SegmentState,
    Seq, WatchChannels,
};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

mod compact;

use crate::dml::{self, ShardLog};
use crate::node::{start_role, Node, RoleHandler};
use crate::rows::{encode_segment, RowStore};

/// How long a flush asks its shard's log for the position to flush to while the log has no
/// leader (a nats-server of the cluster died with it); the flush fails after that.
const FLUSH_POSITION_WAIT: Duration = Duration::from_secs(15);

/// How long one call of a shard writer to the coordinator may take, and how long it is sent
/// again while no coordinator answers (a standby takes over within `coordinator.lease_ttl`; a
/// metadata bucket whose nats-server died elects a new leader within seconds).
const COORDINATOR_TRY: Duration = Duration::from_secs(5);
const COORDINATOR_PATIENCE: Duration = Duration::from_secs(60);

type FlushReply = oneshot::Sender<Result<Vec<u64>>>;

/// What a shard writer is asked to do besides consuming the log.
enum WriterCommand {
    /// Catch up with everything acknowledged so far and seal it.
    Flush(FlushReply),
    /// Flush, then stop consuming: the shard can be handed over at its checkpoint.
    Stop(FlushReply),
}

struct Writer {
    collection: String,
    commands: mpsc::UnboundedSender<WriterCommand>,
    task: tokio::task::JoinHandle<()>,
    rows: Rc<std::cell::Cell<usize>>,
}

impl Writer {
    /// Asks the writer to flush what it consumed and stop; the segments it sealed.
    async fn stop(self) -> Result<Vec<u64>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.commands.send(WriterCommand::Stop(tx));
        rx.await.map_err(|_| Error::Unavailable("shard writer ended before it flushed; retry".into()))?
    }
}

pub struct DataNode {
    node: Node,
    writers: RefCell<HashMap<(u64, u32), Writer>>,
    /// Serialises channel changes, so two pushes never race on the same shard.
    watching: tokio::sync::Mutex<()>,
}

/// Starts the data node role on the current arbiter.
pub fn start(rc: RoleContext) {
    start_role(
        rc,
        Box::new(|node| {
            Box::pin(async move { Ok(DataNode { node, writers: Default::default(), watching: Default::default() }) })
        }),
    );
}

impl DataNode {
    /// Consumes exactly the shards of `req`: shards no longer wanted are flushed and released
    /// (their writers stop after sealing what they consumed), new ones start at their
    /// checkpoint. Answers once the released shards are flushed.
    async fn watch_channels(&self, req: WatchChannels) -> Result<Empty> {
        let _serial = self.watching.lock().await;
        let wanted: HashSet<(u64, u32)> = req.channels.iter().map(|c| (c.collection.id, c.shard)).collect();
        let stopping: Vec<((u64, u32), Writer)> = {
            let mut writers = self.writers.borrow_mut();
            let gone: Vec<(u64, u32)> = writers
                .iter()
                .filter(|(key, w)| !wanted.contains(key) || w.task.is_finished())
                .map(|(key, _)| *key)
                .collect();
            gone.into_iter().filter_map(|key| writers.remove(&key).map(|w| (key, w))).collect()
        };
        // Every released writer is asked to stop, even after one failed (a failure stops the
        // role, whose restart replays from the checkpoints).
        let mut failure = None;
        for ((collection, shard), writer) in stopping {
            if writer.task.is_finished() {
                continue;
            }
            match writer.stop().await {
                Ok(sealed) => tracing::info!(collection, shard, ?sealed, "shard flushed and released"),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if self.node.draining() {
            return Ok(Empty {});
        }
        let mut writers = self.writers.borrow_mut();
        for channel in req.channels {
            let key = (channel.collection.id, channel.shard);
            if writers.contains_key(&key) {
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let rows = Rc::new(std::cell::Cell::new(0));
            let info = channel.collection;
            let shard = ShardWriter::new(self.node.clone(), info.clone(), key.1, rows.clone());
            let task = self.node.spawn_loop("shard writer", shard.run(channel.checkpoint, rx));
            tracing::info!(collection = %info.schema.name, shard = key.1, checkpoint = channel.checkpoint,
                "data node consuming shard");
            writers.insert(key, Writer { collection: info.schema.name.clone(), commands: tx, task, rows });
        }
        Ok(Empty {})
    }

    /// Flushes and stops every writer (no other node takes the shards while this one drains).
    async fn release_all(&self) {
        let writers: Vec<Writer> = self.writers.borrow_mut().drain().map(|(_, w)| w).collect();
        for writer in writers {
            let collection = writer.collection.clone();
            match writer.stop().await {
                Ok(sealed) => tracing::info!(%collection, ?sealed, "shard flushed before stopping"),
                Err(e) => tracing::warn!(%collection, error = %e,
                    "could not flush before stopping; the next owner replays from the checkpoint"),
            }
        }
    }

    async fn flush(&self, req: CollectionName) -> Result<FlushResult> {
        let waits: Vec<_> = self
            .writers
            .borrow()
            .values()
            .filter(|w| w.collection == req.name)
            .map(|w| {
                let (tx, rx) = oneshot::channel();
                let _ = w.commands.send(WriterCommand::Flush(tx));
                rx
            })
            .collect();
        if waits.is_empty() {
            return Err(Error::Unavailable(format!("this data node does not consume {:?} yet; retry", req.name)));
        }
        let mut segments = Vec::new();
        for w in waits {
            let ids =
                w.await.map_err(|_| Error::Unavailable("shard writer restarted during flush; retry".into()))??;
            segments.extend(ids);
        }
        Ok(FlushResult { segments })
    }
}

impl RoleHandler for DataNode {
    type Request = DataNodeRequest;

    fn handle(self: Rc<Self>, req: DataNodeRequest, _ctx: RequestContext) -> LocalBoxFuture<'static, Result<Vec<u8>>> {
        Box::pin(async move {
            match req {
                DataNodeRequest::Flush(r) => r.serve(|r| self.flush(r)).await,
                DataNodeRequest::WatchChannels(r) => r.serve(|r| self.watch_channels(r)).await,
                DataNodeRequest::Compact(r) => r.serve(|r| compact::run(&self.node, r)).await,
            }
        })
    }

    /// The coordinator sees the node draining and takes its shards away (each flushed here
    /// first, then resumed by another data node at its checkpoint: no row lost or written
    /// twice). Without another data node, the node flushes everything itself and stops; the
    /// shards wait in the log for the next owner.
    fn drain(self: Rc<Self>) -> LocalBoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                if self.writers.borrow().is_empty() {
                    tracing::info!(node = %self.node.id, "every shard handed over");
                    return;
                }
                if !self.node.has_serving_peer().await {
                    tracing::info!(node = %self.node.id, "no other data node serves; flushing every shard and stopping");
                    self.release_all().await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    fn heartbeat(&self) -> (u32, String) {
        let writers = self.writers.borrow();
        let growing: usize = writers.values().map(|w| w.rows.get()).sum();
        let mut detail = format!("{} shards, {growing} growing rows", writers.len());
        if let Some(note) = crate::dml::quarantine_note() {
            detail.push_str(&note);
        }
        (writers.len() as u32, detail)
    }
}

/// The growing segment of one shard, as bookkeeping: the rows applied since the last seal, the
/// log positions a sealed segment covers and when to seal. No I/O (the [`ShardWriter`] does it).
struct Growing {
    rows: RowStore,
    /// Last log position applied.
    applied: Seq,
    /// First log position of the growing segment.
    first_seq: Seq,
    oldest: Option<Instant>,
}

impl Growing {
    /// An empty growing segment of `dim`-dimensional rows, after log position `checkpoint`.
    fn new(dim: usize, checkpoint: Seq) -> Growing {
        Growing { rows: RowStore::new(dim), applied: checkpoint, first_seq: 0, oldest: None }
    }

    /// Applies one log entry: inserts add rows (the first one starts the segment); every entry
    /// moves the applied position, so a seal covers the deletes read since the last insert too.
    fn apply(&mut self, entry: dml::LogEntry) {
        self.applied = entry.seq;
        if let Some(DmlEntry::Insert { rows, partition, .. }) = entry.entry {
            if self.rows.is_empty() {
                self.first_seq = entry.seq;
                self.oldest = Some(Instant::now());
            }
            self.rows.append(&rows, entry.seq, partition);
        }
    }

    /// Full: sealed as soon as an entry brings it to `max_rows` (so a segment holds at most
    /// `max_rows` plus one log entry's rows).
    fn full(&self, max_rows: u64) -> bool {
        self.rows.len() as u64 >= max_rows
    }

    /// Holds rows older than `seal_after`.
    fn too_old(&self, seal_after: Duration) -> bool {
        self.oldest.is_some_and(|t| t.elapsed() >= seal_after)
    }

    /// Takes the rows as sealed segment `id` of `collection`'s `shard`, covering the log from
    /// the first insert to the last entry applied, and starts an empty segment. `None` when
    /// there are no rows.
    fn seal(&mut self, id: u64, collection: u64, shard: u32) -> Option<(SegmentInfo, RowStore)> {
        if self.rows.is_empty() {
            return None;
        }
        let dim = self.rows.dim;
        let rows = std::mem::replace(&mut self.rows, RowStore::new(dim));
        self.oldest = None;
        let info = SegmentInfo {
            id,
            collection,
            shard,
            rows: rows.len() as u64,
            start_seq: self.first_seq,
            end_seq: self.applied,
            data_path: keys::paths::segment_data(collection, id),
            index_path: None,
            state: SegmentState::Flushed,
            mem_size: rows.mem_bytes(),
            delete_seq: 0,
            compacted_from: Vec::new(),
            partitions: rows.partition_set(),
        };
        Some((info, rows))
    }
}

/// The growing segment of one shard: reads the shard's log, seals and writes segments.
struct ShardWriter {
    node: Node,
    info: CollectionInfo,
    shard: u32,
    growing: Growing,
    gauge: Rc<std::cell::Cell<usize>>,
}

impl ShardWriter {
    fn new(node: Node, info: CollectionInfo, shard: u32, gauge: Rc<std::cell::Cell<usize>>) -> ShardWriter {
        let growing = Growing::new(info.dim() as usize, 0);
        ShardWriter { node, info, shard, growing, gauge }
    }

    /// Consumes the shard until stopped; a collection dropped meanwhile ends the writer quietly
    /// (its log and metadata are gone; the coordinator's next push leaves it out).
    async fn run(self, checkpoint: Seq, commands: mpsc::UnboundedReceiver<WriterCommand>) -> Result<()> {
        let (collection, shard) = (self.info.id, self.shard);
        match self.consume(checkpoint, commands).await {
            Err(Error::CollectionNotFound(why)) => {
                tracing::info!(collection, shard, %why, "shard writer ended: the collection was dropped");
                Ok(())
            }
            other => other,
        }
    }

    async fn consume(mut self, checkpoint: Seq, mut commands: mpsc::UnboundedReceiver<WriterCommand>) -> Result<()> {
        self.growing = Growing::new(self.info.dim() as usize, checkpoint);
        let bus = self.node.shared.bus.clone();
        let mut log = ShardLog::open(&bus, &self.info, self.shard, checkpoint, 0, Some("datanode")).await?;
        let cfg = self.node.shared.config.datanode.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                entry = log.next() => {
                    let Some(entry) = entry else {
                        return Err(Error::Unavailable("DML consumer ended".into()));
                    };
                    self.apply(entry?);
                    if self.growing.full(cfg.segment_max_rows) {
                        self.seal().await?;
                    }
                }
                Some(command) = commands.recv() => {
                    let (reply, stop) = match command {
                        WriterCommand::Flush(reply) => (reply, false),
                        WriterCommand::Stop(reply) => (reply, true),
                    };
                    let target = match dml::last_seq_within(&bus, self.info.id, self.shard, FLUSH_POSITION_WAIT).await {
                        Ok(target) => target,
                        // Nothing has changed yet: only this flush fails (a writer asked to
                        // stop stops anyway; its next owner replays from the checkpoint).
                        Err(e) => {
                            let dropped = matches!(e, Error::CollectionNotFound(_));
                            let _ = reply.send(if dropped && stop {
                                Ok(Vec::new())
                            } else {
                                Err(Error::Unavailable(format!("flush of shard {} failed: {e}", self.shard)))
                            });
                            if stop {
                                // A dropped collection has nothing left to flush.
                                return if dropped { Ok(()) } else { Err(e) };
                            }
                            continue;
                        }
                    };
                    match self.flush_to(&mut log, target).await {
                        Ok(sealed) => {
                            let _ = reply.send(Ok(sealed));
                            if stop {
                                // Everything read is in flushed segments: the checkpoint is
                                // exactly where this writer stops.
                                return Ok(());
                            }
                        }
                        Err(e @ Error::CollectionNotFound(_)) => {
                            let _ = reply.send(if stop { Ok(Vec::new()) } else { Err(Error::Unavailable(e.to_string())) });
                            return Err(e);
                        }
                        Err(e) => {
                            // As for the size and age seals above: a seal that failed has taken
                            // the growing rows (or recorded the segment without hearing so), so
                            // the writer stops and starts again from its checkpoint. Going on
                            // would lose those rows: the next segment would start after them.
                            let _ = reply.send(Err(Error::Unavailable(format!(
                                "flush of shard {} failed ({e}); its writer restarts, retry",
                                self.shard
                            ))));
                            return Err(e);
                        }
                    }
                }
                _ = tick.tick() => {
                    if self.growing.too_old(cfg.seal_after) {
                        self.seal().await?;
                    }
                }
            }
        }
    }

    fn apply(&mut self, entry: dml::LogEntry) {
        self.growing.apply(entry);
        self.gauge.set(self.growing.rows.len());
    }

    /// Catches up with the log up to `target` (everything acknowledged when the flush came),
    /// then seals. Catching up seals full segments on the way, so a flush never makes a segment
    /// larger than `segment_max_rows` (plus one log entry).
    async fn flush_to(&mut self, log: &mut ShardLog, target: Seq) -> Result<Vec<u64>> {
        let max_rows = self.node.shared.config.datanode.segment_max_rows;
        let mut sealed = Vec::new();
        while self.growing.applied < target {
            match log.next().await {
                Some(entry) => self.apply(entry?),
                None => return Err(Error::Unavailable("DML consumer ended".into())),
            }
            if self.growing.full(max_rows) {
                sealed.extend(self.seal().await?);
            }
        }
        sealed.extend(self.seal().await?);
        Ok(sealed)
    }

    async fn seal(&mut self) -> Result<Option<u64>> {
        if self.growing.rows.is_empty() {
            return Ok(None);
        }
        let span =
            tracing::debug_span!("seal", collection = self.info.id, shard = self.shard, rows = self.growing.rows.len());
        let started = std::time::Instant::now();
        let sealed = self.seal_growing().instrument(span).await;
        metrics::histogram!("quiver_datanode_seal_seconds").record(started.elapsed().as_secs_f64());
        sealed
    }

    /// [`Self::seal`]: ids, encode, store, report.
    async fn seal_growing(&mut self) -> Result<Option<u64>> {
        let shared = &self.node.shared;
        // Both calls are idempotent (ids granted twice are skipped; a segment reported twice is
        // stored once), so they are sent again while the coordinator fails over.
        let bus = &shared.bus;
        let id =
            bus.call_again::<coord::AllocIds>(&Alloc { count: 1 }, COORDINATOR_TRY, COORDINATOR_PATIENCE).await?.start;
        let Some((info, rows)) = self.growing.seal(id, self.info.id, self.shard) else { return Ok(None) };
        let (info, bytes) = tokio::task::spawn_blocking(move || encode_segment(&info, &rows).map(|b| (info, b)))
            .await
            .map_err(Error::internal)??;
        // Durable once put returns (fsynced locally): only then may the coordinator hear of the
        // segment, since it purges the segment's inserts from the log once it is served.
        shared.objects.put(&info.data_path, bytes.into()).await?;
        let flushed = SegmentFlushed { segment: info.clone() };
        bus.call_again::<coord::SegmentFlushed>(&flushed, COORDINATOR_TRY, COORDINATOR_PATIENCE).await?;
        self.gauge.set(0);
        metrics::counter!("quiver_segments_flushed_total").increment(1);
        // The coordinator purges these inserts from the log once a query node serves the segment.
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use quiver_schemas::{Column, PrimaryKey, RowBatch, ScalarValue};

    use super::*;
    use crate::rows::decode_segment;

    fn insert(seq: Seq, keys: std::ops::Range<i64>) -> dml::LogEntry {
        let rows = RowBatch {
            pks: keys.clone().map(PrimaryKey::Int64).collect(),
            dim: 2,
            vectors: keys.clone().flat_map(|k| [k as f32, -(k as f32)]).collect(),
            columns: vec![Column { name: "n".into(), values: keys.map(ScalarValue::Int64).collect() }],
            dynamic: Vec::new(),
        };
        dml::LogEntry {
            seq,
            prev: seq - 1,
            entry: Some(DmlEntry::Insert { timestamp: seq, rows, partition: 0 }),
            batch_rest: 0,
        }
    }

    fn delete(seq: Seq, key: i64) -> dml::LogEntry {
        dml::LogEntry {
            seq,
            prev: seq - 1,
            entry: Some(DmlEntry::Delete { timestamp: seq, pks: vec![PrimaryKey::Int64(key)] }),
            batch_rest: 0,
        }
    }

    #[test]
    fn a_sealed_segment_covers_its_log_positions_and_round_trips() {
        let mut g = Growing::new(2, 10);
        g.apply(delete(11, 1));
        assert!(g.rows.is_empty() && g.oldest.is_none(), "a delete starts no segment");
        assert!(g.seal(1, 7, 3).is_none(), "nothing to seal");
        g.apply(insert(12, 0..3));
        g.apply(delete(13, 0));
        g.apply(insert(14, 3..5));
        g.apply(delete(15, 4));
        let (info, rows) = g.seal(99, 7, 3).unwrap();
        assert_eq!((info.id, info.collection, info.shard), (99, 7, 3));
        assert_eq!((info.start_seq, info.end_seq, info.rows), (12, 15, 5), "first insert to last entry read");
        assert_eq!(info.data_path, "collections/7/segments/99/data");
        assert_eq!(info.state, SegmentState::Flushed);
        assert_eq!(rows.seqs, [12, 12, 12, 14, 14]);
        let (back_info, back) = decode_segment(&encode_segment(&info, &rows).unwrap()).unwrap();
        assert_eq!(back_info, info);
        assert_eq!((back.dim, &back.pks, &back.seqs, &back.vectors), (2, &rows.pks, &rows.seqs, &rows.vectors));
        assert_eq!(back.columns, rows.columns);
        assert_eq!(back.vectors[6..8], [3.0, -3.0], "row 3's vector where it belongs");
        // Sealing starts an empty segment; the next one starts at its own first insert.
        assert!(g.rows.is_empty() && g.oldest.is_none() && g.seal(100, 7, 3).is_none());
        g.apply(delete(16, 2));
        g.apply(insert(17, 5..6));
        let (next, _) = g.seal(100, 7, 3).unwrap();
        assert_eq!((next.start_seq, next.end_seq, next.rows), (17, 17, 1));
    }

    #[test]
    fn segments_split_at_segment_max_rows() {
        // What the writer does: seal whenever an entry fills the segment, and at the end (flush).
        let max_rows = 4;
        let mut g = Growing::new(2, 0);
        let mut sealed = Vec::new();
        for seq in 1..=5 {
            let first = (seq as i64 - 1) * 3;
            g.apply(insert(seq, first..first + 3));
            assert_eq!(g.full(max_rows), seq % 2 == 0, "after entry {seq}");
            if g.full(max_rows) {
                sealed.extend(g.seal(seq, 7, 0));
            }
        }
        sealed.extend(g.seal(6, 7, 0));
        let ranges: Vec<(Seq, Seq, u64)> = sealed.iter().map(|(i, _)| (i.start_seq, i.end_seq, i.rows)).collect();
        assert_eq!(ranges, [(1, 2, 6), (3, 4, 6), (5, 5, 3)], "at most max_rows plus one entry, no gap, no overlap");
        let keys: Vec<PrimaryKey> = sealed.iter().flat_map(|(_, r)| r.pks.clone()).collect();
        assert_eq!(keys, (0..15).map(PrimaryKey::Int64).collect::<Vec<_>>(), "every row once, in log order");
    }

    #[test]
    fn a_segment_is_old_from_its_first_insert() {
        let mut g = Growing::new(2, 0);
        assert!(!g.too_old(Duration::ZERO), "nothing to seal");
        g.apply(delete(1, 1));
        assert!(!g.too_old(Duration::ZERO));
        g.apply(insert(2, 0..1));
        assert!(g.too_old(Duration::ZERO));
        assert!(!g.too_old(Duration::from_secs(3600)));
        assert!(!g.full(2) && g.full(1));
    }
}
