//! Reading a shard's DML log: an ordered JetStream consumer from a given position, and the
//! catch-up check that consistency and flush rely on.

use async_nats::jetstream::consumer::{push, DeliverPolicy};
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
pub struct ShardLog {
    messages: push::Ordered,
    skip_inserts_until: Seq,
}

impl ShardLog {
    /// Opens the shard log of `collection/shard` from sequence `after + 1`. Insert payloads at or
    /// below `skip_inserts_until` are not decoded (the reader already has them sealed).
    pub async fn open(bus: &Bus, collection: u64, shard: u32, after: Seq, skip_inserts_until: Seq) -> Result<ShardLog> {
        let name = bus.subjects().dml_stream(collection, shard);
        let stream = bus
            .jetstream()
            .get_stream(&name)
            .await
            .map_err(|e| Error::Unavailable(format!("DML stream {name}: {e}")))?;
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
        let messages =
            consumer.messages().await.map_err(|e| Error::Unavailable(format!("cannot read DML stream {name}: {e}")))?;
        Ok(ShardLog { messages, skip_inserts_until })
    }

    /// The next entry; `None` when the consumer ended.
    pub async fn next(&mut self) -> Option<Result<LogEntry>> {
        let msg = match self.messages.next().await? {
            Ok(m) => m,
            Err(e) => return Some(Err(Error::Unavailable(format!("DML stream: {e}")))),
        };
        let seq = match msg.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => return Some(Err(Error::Internal(format!("DML message without metadata: {e}")))),
        };
        let is_insert = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(KIND_HEADER))
            .is_some_and(|v| v.as_str() == "insert");
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

/// The last sequence currently in a shard's stream (0 when empty).
pub async fn last_seq(bus: &Bus, collection: u64, shard: u32) -> Result<Seq> {
    let name = bus.subjects().dml_stream(collection, shard);
    let stream = bus
        .jetstream()
        .get_stream(&name)
        .await
        .map_err(|e| Error::Unavailable(format!("DML stream {name}: {e}")))?;
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
