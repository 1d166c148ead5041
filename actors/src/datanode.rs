//! The data node: consumes the DML log of the shards assigned to it, keeps growing segments,
//! seals them by size, age or on request, writes them to the object store and reports them
//! to the coordinator. Its log position (checkpoint) is the end of the last flushed segment of
//! each shard, kept in the metadata bucket, so a restarted data node resumes exactly there.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_nats::Message;
use futures::future::LocalBoxFuture;
use quiver_runtime::{Error, Result, RoleContext};
use quiver_schemas::{
    CollectionInfo, CollectionName, DmlEntry, Empty, FlushResult, SegmentFlushed, SegmentInfo, SegmentState, Seq,
};
use tokio::sync::{mpsc, oneshot};

use crate::coordinator::Layout;
use crate::dml::{self, ShardLog};
use crate::node::{start_role, Node, RoleHandler};
use crate::rows::{encode_segment, RowStore};

type FlushReply = oneshot::Sender<Result<Vec<u64>>>;

struct Writer {
    collection: String,
    flush: mpsc::UnboundedSender<FlushReply>,
    task: tokio::task::JoinHandle<()>,
    rows: Rc<std::cell::Cell<usize>>,
}

pub struct DataNode {
    node: Node,
    writers: RefCell<HashMap<(u64, u32), Writer>>,
}

/// Starts the data node role on the current arbiter.
pub fn start(rc: RoleContext) {
    start_role(rc, Box::new(|node| Box::pin(async move { Ok(DataNode { node, writers: Default::default() }) })));
}

impl DataNode {
    /// Starts writers for shards assigned to this node and stops the others.
    async fn sync_channels(&self) -> Result<()> {
        let meta = &self.node.shared.meta;
        let infos: Vec<CollectionInfo> = meta.values("collection.").await?;
        let mut wanted = HashMap::new();
        for info in infos {
            let Some(layout) = meta.get::<Layout>(&format!("layout.{}", info.id)).await? else { continue };
            for s in layout.shards.iter().filter(|s| s.channel_owner == self.node.id) {
                wanted.insert((info.id, s.shard), info.clone());
            }
        }
        let mut writers = self.writers.borrow_mut();
        writers.retain(|key, w| {
            let keep = wanted.contains_key(key) && !w.task.is_finished();
            if !keep {
                w.task.abort();
            }
            keep
        });
        for (key, info) in wanted {
            if writers.contains_key(&key) {
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let rows = Rc::new(std::cell::Cell::new(0));
            let shard = ShardWriter::new(self.node.clone(), info.clone(), key.1, rows.clone());
            let task = self.node.spawn_loop("shard writer", shard.run(rx));
            tracing::info!(collection = %info.schema.name, shard = key.1, "data node consuming shard");
            writers.insert(key, Writer { collection: info.schema.name.clone(), flush: tx, task, rows });
        }
        Ok(())
    }

    async fn flush(&self, req: CollectionName) -> Result<FlushResult> {
        let waits: Vec<_> = self
            .writers
            .borrow()
            .values()
            .filter(|w| w.collection == req.name)
            .map(|w| {
                let (tx, rx) = oneshot::channel();
                let _ = w.flush.send(tx);
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
    fn subscriptions(&self, node: &Node) -> Vec<(String, Option<String>)> {
        vec![(node.subject("flush"), None)]
    }

    fn handle(self: Rc<Self>, msg: Message) -> LocalBoxFuture<'static, ()> {
        Box::pin(async move {
            let node = self.node.clone();
            if msg.subject.ends_with(".flush") {
                node.serve(&msg, |r| self.flush(r)).await;
            } else {
                node.unknown_method(&msg).await;
            }
        })
    }

    fn start(self: Rc<Self>) {
        let me = self.clone();
        self.node.spawn_loop("channel sync", async move {
            loop {
                if let Err(e) = me.sync_channels().await {
                    tracing::warn!(error = %e, "cannot read channel assignments");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
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

    async fn checkpoint(&self) -> Result<Seq> {
        let segments: Vec<SegmentInfo> = self.node.shared.meta.values(&format!("segment.{}.", self.info.id)).await?;
        Ok(segments.iter().filter(|s| s.shard == self.shard).map(|s| s.end_seq).max().unwrap_or(0))
    }

    async fn run(mut self, mut flushes: mpsc::UnboundedReceiver<FlushReply>) -> Result<()> {
        let checkpoint = self.checkpoint().await?;
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
                Some(reply) = flushes.recv() => {
                    let result = self.flush_now(&mut log).await;
                    let _ = reply.send(result);
                }
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
        let range: quiver_schemas::AllocRange =
            shared.bus.request(shared.bus.subjects().coord("alloc_ids"), &quiver_schemas::Alloc { count: 1 }).await?;
        let id = range.start;
        let rows = std::mem::replace(&mut self.rows, RowStore::new(self.info.dim() as usize));
        let info = SegmentInfo {
            id,
            collection: self.info.id,
            shard: self.shard,
            rows: rows.len() as u64,
            start_seq: self.first_seq,
            end_seq: self.applied,
            data_path: format!("collections/{}/segments/{id}/data", self.info.id),
            index_path: None,
            state: SegmentState::Flushed,
            mem_size: rows.mem_bytes(),
        };
        let (info, bytes) = tokio::task::spawn_blocking(move || encode_segment(&info, &rows).map(|b| (info, b)))
            .await
            .map_err(Error::internal)??;
        shared.objects.put(&info.data_path, bytes.into()).await?;
        let _: Empty = shared
            .bus
            .request(shared.bus.subjects().coord("segment_flushed"), &SegmentFlushed { segment: info.clone() })
            .await?;
        self.oldest = None;
        self.gauge.set(0);
        metrics::counter!("quiver_segments_flushed_total").increment(1);
        // The coordinator purges these inserts from the log once a query node serves the segment.
        Ok(Some(id))
    }
}
