//! The data node: consumes the DML log of the shards the coordinator assigns to it (pushed as
//! `WatchChannels`, the node's full set, each shard with its checkpoint), keeps growing
//! segments, seals them by size, age or on request, writes them to the object store and
//! reports them to the coordinator. A shard's checkpoint is the end of its last flushed
//! segment, so a restarted or new owner resumes exactly there. A shard taken away is flushed
//! first and released only then (the hand-over protocol: `coordinator/channels.rs`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use quiver_runtime::bus::{CallOptions, RequestContext};
use quiver_runtime::{Error, Result, RoleContext};
use quiver_schemas::protocol::{coord, keys, DataNodeRequest};
use quiver_schemas::{
    Alloc, CollectionInfo, CollectionName, DmlEntry, Empty, FlushResult, NodeState, Role, SegmentFlushed, SegmentInfo,
    SegmentState, Seq, WatchChannels,
};
use tokio::sync::{mpsc, oneshot};

use crate::dml::{self, ShardLog};
use crate::node::{start_role, Node, RoleHandler};
use crate::rows::{encode_segment, RowStore};

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
        for ((collection, shard), writer) in stopping {
            if writer.task.is_finished() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let _ = writer.commands.send(WriterCommand::Stop(tx));
            let sealed =
                rx.await.map_err(|_| Error::Unavailable("shard writer ended before it flushed; retry".into()))??;
            tracing::info!(collection, shard, ?sealed, "shard flushed and released");
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

    /// Whether another data node serves and could take this one's shards.
    async fn has_peer(&self) -> bool {
        let nodes = self.node.shared.registry.nodes().await.unwrap_or_default();
        nodes.iter().any(|n| {
            n.role == Role::DataNode && n.node_id != self.node.id && n.healthy && n.state == NodeState::Serving
        })
    }

    /// Flushes and stops every writer (no other node takes the shards while this one drains).
    async fn release_all(&self) {
        let stops: Vec<(String, oneshot::Receiver<Result<Vec<u64>>>)> = self
            .writers
            .borrow_mut()
            .drain()
            .map(|(_, w)| {
                let (tx, rx) = oneshot::channel();
                let _ = w.commands.send(WriterCommand::Stop(tx));
                (w.collection, rx)
            })
            .collect();
        for (collection, stopped) in stops {
            match stopped.await {
                Ok(Ok(sealed)) => tracing::info!(%collection, ?sealed, "shard flushed before stopping"),
                Ok(Err(e)) => tracing::warn!(%collection, error = %e,
                    "could not flush before stopping; the next owner replays from the checkpoint"),
                Err(_) => tracing::warn!(%collection, "shard writer ended before it flushed"),
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
                if !self.has_peer().await {
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
        (writers.len() as u32, format!("{} shards, {growing} growing rows", writers.len()))
    }
}

/// The growing segment of one shard.
struct ShardWriter {
    node: Node,
    info: CollectionInfo,
    shard: u32,
    rows: RowStore,
    /// Last log position applied.
    applied: Seq,
    /// First log position of the growing segment.
    first_seq: Seq,
    oldest: Option<Instant>,
    gauge: Rc<std::cell::Cell<usize>>,
}

impl ShardWriter {
    fn new(node: Node, info: CollectionInfo, shard: u32, gauge: Rc<std::cell::Cell<usize>>) -> ShardWriter {
        let dim = info.dim() as usize;
        ShardWriter { node, info, shard, rows: RowStore::new(dim), applied: 0, first_seq: 0, oldest: None, gauge }
    }

    async fn run(mut self, checkpoint: Seq, mut commands: mpsc::UnboundedReceiver<WriterCommand>) -> Result<()> {
        self.applied = checkpoint;
        let bus = self.node.shared.bus.clone();
        let mut log = ShardLog::open(&bus, self.info.id, self.shard, checkpoint, 0).await?;
        let cfg = self.node.shared.config.datanode.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                entry = log.next() => {
                    let Some(entry) = entry else {
                        return Err(Error::Unavailable("DML consumer ended".into()));
                    };
                    self.apply(entry?);
                    if self.rows.len() as u64 >= cfg.segment_max_rows {
                        self.seal().await?;
                    }
                }
                Some(command) = commands.recv() => match command {
                    WriterCommand::Flush(reply) => {
                        let result = self.flush_now(&mut log).await;
                        let _ = reply.send(result);
                    }
                    WriterCommand::Stop(reply) => {
                        let result = self.flush_now(&mut log).await;
                        let failed = result.is_err();
                        let _ = reply.send(result);
                        // A failed flush stops the role: a restart replays from the checkpoint.
                        return if failed { Err(Error::Unavailable("flush before stopping failed".into())) } else { Ok(()) };
                    }
                },
                _ = tick.tick() => {
                    if self.oldest.is_some_and(|t| t.elapsed() >= cfg.seal_after) {
                        self.seal().await?;
                    }
                }
            }
        }
    }

    fn apply(&mut self, entry: dml::LogEntry) {
        self.applied = entry.seq;
        if let Some(DmlEntry::Insert { rows, .. }) = entry.entry {
            if self.rows.is_empty() {
                self.first_seq = entry.seq;
                self.oldest = Some(Instant::now());
            }
            self.rows.append(&rows, entry.seq);
            self.gauge.set(self.rows.len());
        }
    }

    /// Catches up with everything acknowledged so far, then seals. Catching up seals full
    /// segments on the way, so a flush never makes a segment larger than `segment_max_rows`
    /// (plus one log entry).
    async fn flush_now(&mut self, log: &mut ShardLog) -> Result<Vec<u64>> {
        let target = dml::last_seq(&self.node.shared.bus, self.info.id, self.shard).await?;
        let max_rows = self.node.shared.config.datanode.segment_max_rows;
        let mut sealed = Vec::new();
        while self.applied < target {
            match log.next().await {
                Some(entry) => self.apply(entry?),
                None => return Err(Error::Unavailable("DML consumer ended".into())),
            }
            if self.rows.len() as u64 >= max_rows {
                sealed.extend(self.seal().await?);
            }
        }
        sealed.extend(self.seal().await?);
        Ok(sealed)
    }

    async fn seal(&mut self) -> Result<Option<u64>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        let shared = &self.node.shared;
        let opts = CallOptions::default();
        let id = shared.bus.call::<coord::AllocIds>(&Alloc { count: 1 }, &opts).await?.start;
        let rows = std::mem::replace(&mut self.rows, RowStore::new(self.info.dim() as usize));
        let info = SegmentInfo {
            id,
            collection: self.info.id,
            shard: self.shard,
            rows: rows.len() as u64,
            start_seq: self.first_seq,
            end_seq: self.applied,
            data_path: keys::paths::segment_data(self.info.id, id),
            index_path: None,
            state: SegmentState::Flushed,
            mem_size: rows.mem_bytes(),
        };
        let (info, bytes) = tokio::task::spawn_blocking(move || encode_segment(&info, &rows).map(|b| (info, b)))
            .await
            .map_err(Error::internal)??;
        shared.objects.put(&info.data_path, bytes.into()).await?;
        shared.bus.call::<coord::SegmentFlushed>(&SegmentFlushed { segment: info.clone() }, &opts).await?;
        self.oldest = None;
        self.gauge.set(0);
        metrics::counter!("quiver_segments_flushed_total").increment(1);
        // The coordinator purges these inserts from the log once a query node serves the segment.
        Ok(Some(id))
    }
}
