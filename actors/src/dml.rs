//! Reading a shard's DML log: an ordered JetStream consumer from a given position, and the
//! catch-up check that consistency and flush rely on.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::push::{self, OrderedErrorKind};
use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;
use quiver_runtime::{Bus, Error, Result};
use quiver_schemas::{DmlEntry, Seq, Wire};

/// Header naming the kind of a DML message, so readers can skip payloads they do not need.
pub const KIND_HEADER: &str = "Quiver-Dml";

/// A decoded log entry with its position.
pub struct LogEntry {
    pub seq: Seq,
    pub entry: Option<DmlEntry>,
}

/// An ordered push consumer over one shard stream, starting after `after`.
///
/// Survives NATS server restarts: when the client has reconnected since the consumer was
/// created, or the consumer stops sending heartbeats, a fresh consumer resumes right after
/// the last delivered position. (The client's own ordered consumer can miss a quick
/// disconnect/reconnect and then wait on a consumer the restarted server no longer has.)
pub struct ShardLog {
    bus: Bus,
    collection: u64,
    shard: u32,
    messages: push::Ordered,
    skip_inserts_until: Seq,
    /// Last position delivered (or the start position): a new consumer resumes after it.
    last: Seq,
    /// The client's connection count when `messages` was created.
    connects: u64,
}

/// How often an idle reader checks whether the NATS connection was re-established.
const RECONNECT_CHECK: Duration = Duration::from_secs(1);
/// How long a reader keeps trying to recreate its consumer before giving up (role restart).
const REOPEN_LIMIT: Duration = Duration::from_secs(30);

fn connects(bus: &Bus) -> u64 {
    bus.client().statistics().connects.load(Ordering::Relaxed)
}

async fn ordered_consumer(bus: &Bus, collection: u64, shard: u32, after: Seq) -> Result<push::Ordered> {
    let name = bus.subjects().dml_stream(collection, shard);
    let stream = bus.jetstream().get_stream(&name).await.map_err(|e| stream_error(&name, collection, e))?;
    let deliver_policy =
        if after == 0 { DeliverPolicy::All } else { DeliverPolicy::ByStartSequence { start_sequence: after + 1 } };
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: bus.client().new_inbox(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::Unavailable(format!("cannot read DML stream {name}: {e}")))?;
    consumer.messages().await.map_err(|e| Error::Unavailable(format!("cannot read DML stream {name}: {e}")))
}

impl ShardLog {
    /// Opens the shard log of `collection/shard` from sequence `after + 1`. Insert payloads at or
    /// below `skip_inserts_until` are not decoded (the reader already has them sealed).
    pub async fn open(bus: &Bus, collection: u64, shard: u32, after: Seq, skip_inserts_until: Seq) -> Result<ShardLog> {
        let connects = connects(bus);
        let messages = ordered_consumer(bus, collection, shard, after).await?;
        Ok(ShardLog { bus: bus.clone(), collection, shard, messages, skip_inserts_until, last: after, connects })
    }

    /// Replaces the consumer with a new one starting after the last delivered position,
    /// retrying while the server is not ready.
    async fn reopen(&mut self, why: &str) -> Result<()> {
        tracing::debug!(
            collection = self.collection,
            shard = self.shard,
            after = self.last,
            why,
            "reopening DML consumer"
        );
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let connects = connects(&self.bus);
            match ordered_consumer(&self.bus, self.collection, self.shard, self.last).await {
                Ok(messages) => {
                    tracing::info!(
                        collection = self.collection,
                        shard = self.shard,
                        after = self.last,
                        why,
                        "DML consumer reopened"
                    );
                    self.messages = messages;
                    self.connects = connects;
                    return Ok(());
                }
                Err(e) if started.elapsed() < REOPEN_LIMIT => {
                    tracing::warn!(error = %e, "cannot reopen DML consumer yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next entry; `None` when the consumer ended. Positions only grow: an entry at or
    /// below one already delivered (a replay across a consumer switch) is skipped.
    pub async fn next(&mut self) -> Option<Result<LogEntry>> {
        let (msg, seq) = loop {
            if connects(&self.bus) != self.connects {
                if let Err(e) = self.reopen("reconnected to NATS").await {
                    return Some(Err(e));
                }
            }
            match tokio::time::timeout(RECONNECT_CHECK, self.messages.next()).await {
                Err(_) => continue,
                Ok(None) => return None,
                Ok(Some(Ok(m))) => match m.info() {
                    Ok(info) if info.stream_sequence <= self.last => continue,
                    Ok(info) => {
                        let seq = info.stream_sequence;
                        break (m, seq);
                    }
                    Err(e) => return Some(Err(Error::Internal(format!("DML message without metadata: {e}")))),
                },
                Ok(Some(Err(e))) if e.kind() == OrderedErrorKind::MissingHeartbeat => {
                    if let Err(e) = self.reopen("missed heartbeats").await {
                        return Some(Err(e));
                    }
                }
                Ok(Some(Err(e))) => return Some(Err(Error::Unavailable(format!("DML stream: {e}")))),
            }
        };
        self.last = seq;
        let is_insert = msg.headers.as_ref().and_then(|h| h.get(KIND_HEADER)).is_some_and(|v| v.as_str() == "insert");
        if is_insert && seq <= self.skip_inserts_until {
            return Some(Ok(LogEntry { seq, entry: None }));
        }
        match DmlEntry::from_bytes(&msg.payload) {
            Ok(entry) => Some(Ok(LogEntry { seq, entry: Some(entry) })),
            Err(e) => {
                tracing::error!(seq, error = %e, "skipping undecodable DML entry");
                Some(Ok(LogEntry { seq, entry: None }))
            }
        }
    }
}

/// A shard stream that cannot be opened: gone with its dropped collection (`CollectionNotFound`),
/// or out of reach for now (`Unavailable`).
fn stream_error(name: &str, collection: u64, e: async_nats::jetstream::context::GetStreamError) -> Error {
    match e.kind() {
        async_nats::jetstream::context::GetStreamErrorKind::JetStream(js)
            if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
        {
            Error::CollectionNotFound(format!("DML stream {name} does not exist (collection {collection} was dropped)"))
        }
        _ => Error::Unavailable(format!("DML stream {name}: {e}")),
    }
}

/// The last sequence currently in a shard's stream (0 when empty).
pub async fn last_seq(bus: &Bus, collection: u64, shard: u32) -> Result<Seq> {
    let name = bus.subjects().dml_stream(collection, shard);
    let stream = bus.jetstream().get_stream(&name).await.map_err(|e| stream_error(&name, collection, e))?;
    Ok(stream.cached_info().state.last_sequence)
}

/// Removes inserts below `before` from a shard stream (they are sealed in segments). Deletes stay:
/// query nodes replay them when loading segments.
pub async fn purge_inserts(bus: &Bus, collection: u64, shard: u32, before: Seq) -> Result<()> {
    let name = bus.subjects().dml_stream(collection, shard);
    let stream = bus
        .jetstream()
        .get_stream_no_info(&name)
        .await
        .map_err(|e| Error::Unavailable(format!("DML stream {name}: {e}")))?;
    stream
        .purge()
        .filter(format!("{}.insert", bus.subjects().dml(collection, shard)))
        .sequence(before)
        .await
        .map_err(|e| Error::Unavailable(format!("purge of {name}: {e}")))?;
    Ok(())
}
