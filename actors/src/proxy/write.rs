//! Inserts and deletes: validate, allocate ids and a timestamp, split by shard, append to the
//! shards' JetStream logs and acknowledge only after JetStream acknowledged every part.

use async_nats::HeaderMap;
use bytes::Bytes;
use quiver_runtime::bus::RequestContext;
use quiver_runtime::{Error, Result};
use quiver_schemas::protocol::subjects::DmlKind;
use quiver_schemas::protocol::{coord, QueueCall};
use quiver_schemas::{
    Alloc, CollectionInfo, Consistency, Delete, DmlEntry, Insert, MutationResult, PrimaryKey, Query, Wire,
};

use super::validate::{check_insert, check_pk, select_rows, shard_of};
use super::Proxy;
use crate::dml::KIND_HEADER;

/// Room left in each log message for headers and framing.
const PAYLOAD_MARGIN: usize = 64 * 1024;

impl Proxy {
    /// `count` timestamps (`coord::AllocTs`) or ids (`coord::AllocIds`); the first of them.
    pub(super) async fn alloc<C: QueueCall<Request = Alloc, Reply = quiver_schemas::AllocRange>>(
        &self,
        count: u64,
        ctx: &RequestContext,
    ) -> Result<u64> {
        Ok(self.forward::<C>(&Alloc { count }, ctx).await?.start)
    }

    pub(super) async fn insert(&self, mut req: Insert, ctx: &RequestContext) -> Result<MutationResult> {
        let info = self.collection(&req.collection, ctx).await?;
        let max_rows = self.node.shared.config.proxy.max_insert_rows;
        let n = check_insert(&info, &mut req.rows, max_rows)?;
        self.append_rows(&info, req, n, ctx).await
    }

    /// Appends rows already checked against the schema (`n` of them) to the shards' logs.
    async fn append_rows(
        &self,
        info: &CollectionInfo,
        mut req: Insert,
        n: usize,
        ctx: &RequestContext,
    ) -> Result<MutationResult> {
        if req.rows.pks.is_empty() {
            let start = self.alloc::<coord::AllocIds>(n as u64, ctx).await? as i64;
            req.rows.pks = (start..start + n as i64).map(PrimaryKey::Int64).collect();
        }
        let timestamp = self.alloc::<coord::AllocTs>(1, ctx).await?;
        let shards = info.schema.num_shards;
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); shards as usize];
        for (i, pk) in req.rows.pks.iter().enumerate() {
            by_shard[shard_of(pk, shards) as usize].push(i);
        }
        // Keep each log message under the server's payload limit.
        let max_payload = self.node.shared.bus.client().server_info().max_payload.max(1 << 20);
        let row_bytes = (info.dim() as usize * 4 + 64).max(1);
        let rows_per_msg = ((max_payload.saturating_sub(PAYLOAD_MARGIN)) / row_bytes).max(1);
        let mut acks = Vec::new();
        for (shard, rows) in by_shard.iter().enumerate() {
            for chunk in rows.chunks(rows_per_msg) {
                let part = if chunk.len() == n { req.rows.clone() } else { select_rows(&req.rows, chunk) };
                let entry = DmlEntry::Insert { timestamp, rows: part };
                acks.push(self.append(info.id, shard as u32, DmlKind::Insert, entry.to_bytes()).await?);
            }
        }
        for ack in acks {
            ack.await.map_err(|e| Error::Unavailable(format!("the log did not acknowledge the insert: {e}")))?;
        }
        metrics::counter!("quiver_rows_inserted_total").increment(n as u64);
        Ok(MutationResult { pks: req.rows.pks, timestamp })
    }

    pub(super) async fn delete(&self, mut req: Delete, ctx: &RequestContext) -> Result<MutationResult> {
        let info = self.collection(&req.collection, ctx).await?;
        if !req.filter.trim().is_empty() {
            if !req.pks.is_empty() {
                return Err(Error::InvalidArgument("delete takes primary keys or a filter, not both".into()));
            }
            req.pks = self.matching_keys(&info, &req.filter, ctx).await?;
            if req.pks.is_empty() {
                return Ok(MutationResult { pks: Vec::new(), timestamp: self.alloc::<coord::AllocTs>(1, ctx).await? });
            }
        }
        if req.pks.is_empty() {
            return Err(Error::InvalidArgument("delete needs at least one primary key or a filter".into()));
        }
        for pk in &req.pks {
            check_pk(&info, pk)?;
        }
        let timestamp = self.alloc::<coord::AllocTs>(1, ctx).await?;
        let shards = info.schema.num_shards;
        let mut by_shard: Vec<Vec<PrimaryKey>> = vec![Vec::new(); shards as usize];
        for pk in &req.pks {
            by_shard[shard_of(pk, shards) as usize].push(pk.clone());
        }
        let mut acks = Vec::new();
        for (shard, pks) in by_shard.into_iter().enumerate().filter(|(_, p)| !p.is_empty()) {
            let entry = DmlEntry::Delete { timestamp, pks };
            acks.push(self.append(info.id, shard as u32, DmlKind::Delete, entry.to_bytes()).await?);
        }
        for ack in acks {
            ack.await.map_err(|e| Error::Unavailable(format!("the log did not acknowledge the delete: {e}")))?;
        }
        Ok(MutationResult { pks: req.pks, timestamp })
    }

    /// Keys of the rows a delete filter selects (the filter's own keys when it only names keys).
    async fn matching_keys(
        &self,
        info: &CollectionInfo,
        filter: &str,
        ctx: &RequestContext,
    ) -> Result<Vec<PrimaryKey>> {
        let (expr, _) = super::read::parse_filter(info, filter)?;
        if let Some(pks) = expr.as_ref().and_then(quiver_schemas::Expr::primary_keys) {
            return Ok(pks);
        }
        let mut keys = Vec::new();
        let page = u64::from(self.node.shared.config.proxy.max_top_k);
        loop {
            let query = Query {
                collection: info.schema.name.clone(),
                filter: filter.to_string(),
                output_fields: Vec::new(),
                limit: page,
                offset: 0,
                consistency: Consistency::Strong,
            };
            let mut found = self.query(query, ctx).await?.rows.pks;
            // Pages are in key order; later pages start after the last key seen.
            found.retain(|pk| keys.last().is_none_or(|last| pk > last));
            let done = (found.len() as u64) < page;
            keys.extend(found);
            if done || keys.len() > 10_000_000 {
                return Ok(keys);
            }
        }
    }

    /// Replaces rows by primary key: a delete of the keys followed by an insert of the rows
    /// (checked once, before anything is written).
    pub(super) async fn upsert(&self, mut req: Insert, ctx: &RequestContext) -> Result<MutationResult> {
        let info = self.collection(&req.collection, ctx).await?;
        if req.rows.pks.is_empty() {
            return Err(Error::InvalidArgument("upsert needs the primary key of every row".into()));
        }
        let max_rows = self.node.shared.config.proxy.max_insert_rows;
        let n = check_insert(&info, &mut req.rows, max_rows)?;
        let delete = Delete { collection: req.collection.clone(), pks: req.rows.pks.clone(), filter: String::new() };
        self.delete(delete, ctx).await?;
        self.append_rows(&info, req, n, ctx).await
    }

    async fn append(
        &self,
        collection: u64,
        shard: u32,
        kind: DmlKind,
        payload: Vec<u8>,
    ) -> Result<async_nats::jetstream::context::PublishAckFuture> {
        let bus = &self.node.shared.bus;
        let subject = bus.subjects().dml_entry(collection, shard, kind);
        let mut headers = HeaderMap::new();
        headers.insert(KIND_HEADER, kind.as_str());
        bus.jetstream()
            .publish_with_headers(subject, headers, Bytes::from(payload))
            .await
            .map_err(|e| Error::Unavailable(format!("cannot append to the log: {e}")))
    }
}
