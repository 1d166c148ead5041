//! Inserts, deletes and upserts: validate, allocate ids and a timestamp, split by shard, append
//! to the shards' JetStream logs and acknowledge only after JetStream acknowledged every part.
//!
//! A shard's share of a write is one log message, or several appended as one atomic JetStream
//! batch (all or nothing): an upsert's delete and insert, or a share too large for one message.
//! Shards are separate streams, so a write over several shards can land on some and not on
//! others; the error then says exactly which rows landed.

use std::time::Duration;
use tracing::Instrument;

use async_nats::HeaderMap;
use bytes::Bytes;
use quiver_runtime::bus::RequestContext;
use quiver_runtime::retry::{retry, Backoff};
use quiver_runtime::{Error, Result};
use quiver_schemas::protocol::subjects::DmlKind;
use quiver_schemas::protocol::QueueCall;
use quiver_schemas::{
    Alloc, CollectionInfo, Consistency, Delete, Distribution, DmlEntry, Expr, Get, Insert, MutationResult, PartitionId,
    PrimaryKey, Query, RowBatch, Wire,
};

use super::validate::{check_insert, check_pk, select_rows, shard_of};
use super::{partitions, Proxy};
use crate::dml::{BATCH_REST_HEADER, KIND_HEADER};

/// Room left in each log message for headers and framing.
const PAYLOAD_MARGIN: usize = 64 * 1024;
/// Keys per delete message: ~30 bytes each on the wire, well under any payload limit.
const KEYS_PER_MESSAGE: usize = 100_000;
/// Longest a single-message append is sent again for (within the caller's deadline).
const MAX_APPEND_RETRYING: Duration = Duration::from_secs(20);
/// JetStream's limit on the messages of one atomic batch.
const MAX_BATCH_MESSAGES: usize = 1000;

/// One shard's share of a write: its log entries, appended together.
struct ShardWrite {
    shard: u32,
    /// Rows (inserts) or keys (deletes) it carries, for the report of a partial write.
    rows: usize,
    entries: Vec<(DmlKind, Vec<u8>)>,
}

/// A digest of a write's keys (16 hex digits). With the request id it names the write's log
/// messages: the same rows sent again under the same id are stored once, while another write
/// that reuses an id (a client sending one for its own tracing) is not taken for a resend
/// unless it names the very same keys within JetStream's 2-minute duplicate window.
fn keys_digest(pks: &[PrimaryKey]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for pk in pks {
        match pk {
            PrimaryKey::Int64(v) => {
                h.update([0]);
                h.update(v.to_le_bytes());
            }
            PrimaryKey::VarChar(s) => {
                h.update([1]);
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Proxy {
    /// `count` timestamps (`coord::AllocTs`) or ids (`coord::AllocIds`) straight from the
    /// coordinator; the first of them. Writes take theirs from the proxy's blocks (`grants.rs`).
    pub(super) async fn alloc<C: QueueCall<Request = Alloc, Reply = quiver_schemas::AllocRange>>(
        &self,
        count: u64,
        ctx: &RequestContext,
    ) -> Result<u64> {
        Ok(self.forward::<C>(&Alloc { count }, ctx).await?.start)
    }

    pub(super) async fn insert(&self, mut req: Insert, ctx: &RequestContext) -> Result<MutationResult> {
        self.write_awake(ctx).await;
        let dist = self.distribution_with(&req.collection, &[&req.partition], ctx).await?;
        self.admit_write(&dist, "an insert")?;
        let info = &dist.collection;
        let partition = partitions::write_target(info, &req.partition)?;
        let max_rows = self.node.shared.config.proxy.max_insert_rows;
        let n = check_insert(info, &mut req.rows, max_rows, &self.node.shared.config.limits)?;
        let auto_keys = req.rows.pks.is_empty();
        if auto_keys {
            let start = self.grants.ids(n as u64, ctx).await? as i64;
            req.rows.pks = (start..start + n as i64).map(PrimaryKey::Int64).collect();
        }
        let timestamp = self.grants.timestamp(ctx).await?;
        let writes = self.shard_writes(info, &req.rows, partition, None, timestamp);
        // Rows with the client's keys, under the client's request id: a resend after a lost
        // connection is stored once. (Keys assigned here differ on a resend: no dedup key.)
        let dedup = match (&ctx.request_id, auto_keys) {
            (Some(id), false) => Some(format!("{id}.{}", keys_digest(&req.rows.pks))),
            _ => None,
        };
        self.write(info, writes, "insert", timestamp, ctx, dedup.as_deref()).await?;
        metrics::counter!("quiver_rows_inserted_total").increment(n as u64);
        Ok(MutationResult { pks: req.rows.pks, timestamp, count: n as u64 })
    }

    /// Replaces rows by primary key. Each shard's delete of the keys and insert of the rows
    /// are one atomic log batch, so a failed upsert leaves the old rows in place; the delete
    /// comes first in the log, so it hides only the rows before it, never the new ones.
    pub(super) async fn upsert(&self, mut req: Insert, ctx: &RequestContext) -> Result<MutationResult> {
        self.write_awake(ctx).await;
        let dist = self.distribution_with(&req.collection, &[&req.partition], ctx).await?;
        self.admit_write(&dist, "an upsert")?;
        let info = &dist.collection;
        let partition = partitions::write_target(info, &req.partition)?;
        if req.rows.pks.is_empty() {
            return Err(Error::InvalidArgument("upsert needs the primary key of every row".into()));
        }
        let max_rows = self.node.shared.config.proxy.max_insert_rows;
        let n = check_insert(info, &mut req.rows, max_rows, &self.node.shared.config.limits)?;
        let timestamp = self.grants.timestamp(ctx).await?;
        let writes = self.shard_writes(info, &req.rows, partition, Some(timestamp), timestamp);
        self.write(info, writes, "upsert", timestamp, ctx, None).await?;
        metrics::counter!("quiver_rows_inserted_total").increment(n as u64);
        Ok(MutationResult { pks: req.rows.pks, timestamp, count: n as u64 })
    }

    /// Refuses a write of rows while this process, or a query node serving the collection, is
    /// above its memory high-water mark (`quota.rs`).
    fn admit_write(&self, dist: &Distribution, what: &str) -> Result<()> {
        self.node.shared.memory.admit(what)?;
        self.quota.admit(dist, what, self.node.shared.config.limits.memory_high_water_percentage)
    }

    /// Splits checked rows of `partition` by shard into log entries under the payload limit;
    /// with `delete_first`, each shard's entries start with a delete of its keys at that
    /// timestamp.
    fn shard_writes(
        &self,
        info: &CollectionInfo,
        rows: &RowBatch,
        partition: PartitionId,
        delete_first: Option<u64>,
        timestamp: u64,
    ) -> Vec<ShardWrite> {
        let n = rows.pks.len();
        let shards = info.schema.num_shards;
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); shards as usize];
        for (i, pk) in rows.pks.iter().enumerate() {
            by_shard[shard_of(pk, shards) as usize].push(i);
        }
        let max_payload = self.node.shared.bus.client().server_info().max_payload.max(1 << 20);
        let row_bytes = (info.dim() as usize * 4 + 64).max(1);
        let rows_per_msg = ((max_payload.saturating_sub(PAYLOAD_MARGIN)) / row_bytes).max(1);
        let mut writes = Vec::new();
        for (shard, indices) in by_shard.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            let mut entries = Vec::new();
            if let Some(ts) = delete_first {
                for keys in indices.chunks(KEYS_PER_MESSAGE) {
                    let pks = keys.iter().map(|&i| rows.pks[i].clone()).collect();
                    entries.push((DmlKind::Delete, DmlEntry::Delete { timestamp: ts, pks }.to_bytes()));
                }
            }
            for chunk in indices.chunks(rows_per_msg) {
                let part = if chunk.len() == n { rows.clone() } else { select_rows(rows, chunk) };
                entries.push((DmlKind::Insert, DmlEntry::Insert { timestamp, rows: part, partition }.to_bytes()));
            }
            writes.push(ShardWrite { shard: shard as u32, rows: indices.len(), entries });
        }
        writes
    }

    /// Appends every shard's share (concurrently) and waits for the log's acknowledgements.
    /// When some shards acknowledged and others did not, the error says which rows landed:
    /// retrying the whole write would repeat those.
    async fn write(
        &self,
        info: &CollectionInfo,
        writes: Vec<ShardWrite>,
        what: &str,
        ts: u64,
        ctx: &RequestContext,
        dedup: Option<&str>,
    ) -> Result<()> {
        let n: usize = writes.iter().map(|w| w.rows).sum();
        let results = futures::future::join_all(writes.iter().map(|w| self.append(info.id, w, ctx, dedup))).await;
        let mut landed = Vec::new();
        let mut failed = Vec::new();
        for (w, result) in writes.iter().zip(results) {
            match result {
                Ok(()) => landed.push(w),
                Err(e) => failed.push((w, e)),
            }
        }
        let Some((_, first_error)) = failed.first() else { return Ok(()) };
        if landed.is_empty() {
            return Err(Error::Unavailable(format!(
                "the log did not acknowledge the {what} of {n} rows into {:?}: {first_error}",
                info.schema.name
            )));
        }
        let shards = |ws: &mut dyn Iterator<Item = &ShardWrite>| {
            ws.map(|w| format!("shard {} ({} rows)", w.shard, w.rows)).collect::<Vec<_>>().join(", ")
        };
        let written: usize = landed.iter().map(|w| w.rows).sum();
        // Not retryable: a blind retry would write the landed rows twice.
        Err(Error::Internal(format!(
            "the {what} into {:?} partly landed: {written} of {n} rows were written at timestamp {ts} ({}); \
             the rows of {} were not acknowledged ({first_error}). Upsert the rows to make the write whole \
             (a plain insert retry would duplicate the written rows)",
            info.schema.name,
            shards(&mut landed.iter().copied()),
            shards(&mut failed.iter().map(|(w, _)| *w)),
        )))
    }

    /// Deletes rows by key or by filter; naming a partition deletes only keys found in it
    /// (their delete then hides the key in every partition: keys are meant to be unique in a
    /// collection).
    pub(super) async fn delete(&self, req: Delete, ctx: &RequestContext) -> Result<MutationResult> {
        self.write_awake(ctx).await;
        let info = self.collection_with(&req.collection, &[&req.partition], ctx).await?;
        if !req.partition.is_empty() {
            partitions::write_target(&info, &req.partition)?;
        }
        if !req.filter.trim().is_empty() {
            crate::limits::ReadLimits::of(&self.node.shared.config).check_filter(&req.filter)?;
            if !req.pks.is_empty() {
                return Err(Error::InvalidArgument("delete takes primary keys or a filter, not both".into()));
            }
            return self.delete_where(&info, &req.filter, &req.partition, ctx).await;
        }
        if req.pks.is_empty() {
            return Err(Error::InvalidArgument("delete needs at least one primary key or a filter".into()));
        }
        let pks = self.keys_in(&info, req.pks, &req.partition, ctx).await?;
        self.delete_keys(&info, pks, ctx).await
    }

    /// Those of `pks` that partition `partition` holds (all of them when it is empty).
    async fn keys_in(
        &self,
        info: &CollectionInfo,
        pks: Vec<PrimaryKey>,
        partition: &str,
        ctx: &RequestContext,
    ) -> Result<Vec<PrimaryKey>> {
        if partition.is_empty() || pks.is_empty() {
            return Ok(pks);
        }
        for pk in &pks {
            check_pk(info, pk)?;
        }
        let get = Get {
            collection: info.schema.name.clone(),
            pks,
            output_fields: Vec::new(),
            consistency: Consistency::Strong,
        };
        Ok(self.get_in(get, &[partition.to_string()], ctx).await?.rows.pks)
    }

    async fn delete_keys(
        &self,
        info: &CollectionInfo,
        pks: Vec<PrimaryKey>,
        ctx: &RequestContext,
    ) -> Result<MutationResult> {
        for pk in &pks {
            check_pk(info, pk)?;
        }
        let timestamp = self.grants.timestamp(ctx).await?;
        let shards = info.schema.num_shards;
        let mut by_shard: Vec<Vec<PrimaryKey>> = vec![Vec::new(); shards as usize];
        for pk in &pks {
            by_shard[shard_of(pk, shards) as usize].push(pk.clone());
        }
        let writes: Vec<ShardWrite> = by_shard
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(shard, keys)| ShardWrite {
                shard: shard as u32,
                rows: keys.len(),
                entries: keys
                    .chunks(KEYS_PER_MESSAGE)
                    .map(|c| (DmlKind::Delete, DmlEntry::Delete { timestamp, pks: c.to_vec() }.to_bytes()))
                    .collect(),
            })
            .collect();
        self.write(info, writes, "delete", timestamp, ctx, None).await?;
        let count = pks.len() as u64;
        Ok(MutationResult { pks, timestamp, count })
    }

    /// Deletes every row a filter matches, however many: a page of matching keys is read
    /// (Strong consistency) and deleted, then the next, until none match. Each page's delete
    /// is acknowledged before the next read, which therefore no longer sees those rows, so
    /// the first page is always the next one and no cursor is needed. As in Milvus, the
    /// result counts the rows and lists no keys. A filter that names only keys deletes them
    /// directly (and lists them).
    async fn delete_where(
        &self,
        info: &CollectionInfo,
        filter: &str,
        partition: &str,
        ctx: &RequestContext,
    ) -> Result<MutationResult> {
        let (expr, _) = super::read::parse_filter(info, filter)?;
        if let Some(pks) = expr.as_ref().and_then(Expr::primary_keys) {
            let pks = self.keys_in(info, pks, partition, ctx).await?;
            return self.delete_keys(info, pks, ctx).await;
        }
        let page = u64::from(self.node.shared.config.proxy.max_top_k);
        let mut deleted = 0u64;
        let mut timestamp = None;
        let mut previous: Option<Vec<PrimaryKey>> = None;
        loop {
            ctx.check(format_args!("deleting rows of {:?} by filter after {deleted} rows", info.schema.name))?;
            let query = Query {
                collection: info.schema.name.clone(),
                filter: filter.to_string(),
                output_fields: Vec::new(),
                limit: page,
                offset: 0,
                consistency: Consistency::Strong,
                partitions: if partition.is_empty() { Vec::new() } else { vec![partition.to_string()] },
            };
            let found = self.query(query, ctx).await?.rows.pks;
            if found.is_empty() {
                break;
            }
            if previous.as_ref() == Some(&found) {
                // The delete was acknowledged but a Strong read still sees the rows.
                return Err(Error::Internal(format!(
                    "delete by filter on {:?}: {} rows still match after their delete was acknowledged \
                     ({deleted} rows were deleted before)",
                    info.schema.name,
                    found.len()
                )));
            }
            let full = found.len() as u64 == page;
            let out = self.delete_keys(info, found.clone(), ctx).await?;
            deleted += out.count;
            timestamp = Some(out.timestamp);
            if !full {
                break;
            }
            previous = Some(found);
        }
        let timestamp = match timestamp {
            Some(ts) => ts,
            None => self.grants.timestamp(ctx).await?,
        };
        Ok(MutationResult { pks: Vec::new(), timestamp, count: deleted })
    }

    /// Appends one shard's entries and waits for the log's acknowledgement: a single message,
    /// or an atomic JetStream batch (ADR-50: every message carries the batch id and its
    /// sequence, the last one the commit; the first is acknowledged on its own so a stream
    /// that refuses batches fails fast, the commit's acknowledgement covers the batch).
    /// Appends one shard's share. `dedup` (the client's request id) names the log message, so a
    /// write sent again is stored once; without it the message gets a fresh id, which still
    /// makes this function's own resends safe.
    async fn append(
        &self,
        collection: u64,
        write: &ShardWrite,
        ctx: &RequestContext,
        dedup: Option<&str>,
    ) -> Result<()> {
        let span = tracing::debug_span!("append", collection, shard = write.shard, messages = write.entries.len());
        self.append_entries(collection, write, ctx, dedup).instrument(span).await
    }

    /// [`Proxy::append`], in its span.
    async fn append_entries(
        &self,
        collection: u64,
        write: &ShardWrite,
        ctx: &RequestContext,
        dedup: Option<&str>,
    ) -> Result<()> {
        let bus = &self.node.shared.bus;
        let subjects = bus.subjects();
        let unacked = |e: &dyn std::fmt::Display| Error::Unavailable(format!("shard {}: {e}", write.shard));
        let headers = |kind: DmlKind| {
            let mut h = HeaderMap::new();
            h.insert(KIND_HEADER, kind.as_str());
            h
        };
        let last = write.entries.len().saturating_sub(1);
        if write.entries.len() > MAX_BATCH_MESSAGES {
            return Err(Error::InvalidArgument(format!(
                "shard {} would need {} log messages, more than the {MAX_BATCH_MESSAGES} of one atomic batch; \
                 write fewer rows per request",
                write.shard,
                write.entries.len()
            )));
        }
        if last == 0 {
            let Some((kind, payload)) = write.entries.first() else { return Ok(()) };
            let subject = subjects.dml_entry(collection, write.shard, *kind);
            // Sent again until acknowledged, within the caller's deadline: a nats-server lost
            // with the acknowledgement, or a stream between leaders ("no stream found"). The
            // message id makes JetStream store it once (its duplicate window is 2 minutes).
            let mut h = headers(*kind);
            let id = match dedup {
                Some(request) => format!("{request}.{collection}.{}", write.shard),
                None => nuid::next().to_string(),
            };
            h.insert("Nats-Msg-Id", id.as_str());
            let payload = Bytes::from(payload.clone());
            let within = ctx.remaining().unwrap_or(bus.default_timeout()).min(MAX_APPEND_RETRYING);
            let backoff = Backoff::within(within, Duration::from_millis(50), Duration::from_millis(500));
            let retryable = |e: &async_nats::jetstream::context::PublishError| {
                tracing::debug!(shard = write.shard, error = %e, "log append not acknowledged; sending it again");
                metrics::counter!("quiver_proxy_append_retries_total").increment(1);
                true
            };
            let send = || async {
                let ack = bus.jetstream().publish_with_headers(subject.clone(), h.clone(), payload.clone()).await?;
                ack.await.map(drop)
            };
            return retry(backoff, retryable, send).await.map_err(|e| unacked(&e));
        }
        let batch = nuid::next().to_string();
        for (i, (kind, payload)) in write.entries.iter().enumerate() {
            let subject = subjects.dml_entry(collection, write.shard, *kind);
            let mut h = headers(*kind);
            h.insert("Nats-Batch-Id", batch.as_str());
            h.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            h.insert(BATCH_REST_HEADER, (last - i).to_string().as_str());
            let payload = Bytes::from(payload.clone());
            if i == last {
                h.insert("Nats-Batch-Commit", "1");
                let ack = bus.jetstream().publish_with_headers(subject, h, payload).await.map_err(|e| unacked(&e))?;
                return ack.await.map(drop).map_err(|e| unacked(&e));
            }
            if i == 0 {
                let reply = bus.client().request_with_headers(subject, h, payload).await.map_err(|e| unacked(&e))?;
                if !reply.payload.is_empty() {
                    let text = String::from_utf8_lossy(&reply.payload);
                    if text.contains("\"error\"") {
                        return Err(unacked(&format!("the log refused the batch: {text}")));
                    }
                }
            } else {
                bus.client().publish_with_headers(subject, h, payload).await.map_err(|e| unacked(&e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_digests_tell_writes_apart_and_not_resends() {
        let ints = |v: &[i64]| v.iter().map(|k| PrimaryKey::Int64(*k)).collect::<Vec<_>>();
        assert_eq!(keys_digest(&ints(&[1, 2, 3])), keys_digest(&ints(&[1, 2, 3])));
        assert_eq!(keys_digest(&ints(&[1, 2, 3])).len(), 16);
        assert_ne!(keys_digest(&ints(&[1, 2, 3])), keys_digest(&ints(&[1, 2, 4])));
        assert_ne!(keys_digest(&ints(&[1, 2])), keys_digest(&ints(&[2, 1])));
        // An integer key and the text of it, and text split differently, are other keys.
        assert_ne!(keys_digest(&ints(&[1])), keys_digest(&[PrimaryKey::VarChar("1".into())]));
        let text = |v: &[&str]| v.iter().map(|k| PrimaryKey::VarChar(k.to_string())).collect::<Vec<_>>();
        assert_ne!(keys_digest(&text(&["ab", "c"])), keys_digest(&text(&["a", "bc"])));
    }
}
