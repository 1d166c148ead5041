//! Searches and gets: route each sealed segment to one of the nodes holding it (router
//! policy), send each shard's growing part to its leader, scatter the per-node requests,
//! gather and merge. A stale or failed node reply refreshes the cached layout and retries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use quiver_policy::router::RouteRequest;
use quiver_runtime::bus::{now_ms, CallOptions};
use quiver_runtime::{Error, Result};
use quiver_schemas::{
    ts_compose, CollectionInfo, Consistency, Distribution, Expr, Get, GetResults, Hits, NodeGet, NodeQuery, NodeSearch,
    Query, QueryResults, RowBatch, ScalarValue, Search, SearchResults, ShardPlacement, COUNT_STAR,
};

use super::validate::{check_output_fields, check_pk, check_search, select_rows};
use super::Proxy;
use crate::querynode::metric_of;
use crate::vector::higher_is_better;

/// Attempts for a read before the error goes back to the client (backoff 20 ms doubling to 1 s: ~5 s in all).
const READ_ATTEMPTS: u32 = 10;

/// One node's share of a read.
#[derive(Default)]
struct NodeShare {
    segments: Vec<u64>,
    growing: Vec<ShardPlacement>,
}

impl Proxy {
    /// Splits a read over the nodes of the layout.
    fn plan(&self, dist: &Distribution) -> Result<BTreeMap<String, NodeShare>> {
        if dist.released {
            return Err(Error::InvalidArgument(format!(
                "collection {:?} is not loaded; load it first (LoadCollection)",
                dist.collection.schema.name
            )));
        }
        let mut shares: BTreeMap<String, NodeShare> = BTreeMap::new();
        for shard in &dist.shards {
            if shard.leader.is_empty() {
                return Err(Error::Unavailable(format!(
                    "shard {} of {:?} has no query node yet",
                    shard.shard, dist.collection.schema.name
                )));
            }
            shares.entry(shard.leader.clone()).or_default().growing.push(shard.clone());
        }
        let mut request = RouteRequest {
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
            collection: dist.collection.id,
            ..RouteRequest::default()
        };
        let mut index: HashMap<&str, u32> = HashMap::new();
        for s in &dist.segments {
            let holders: Vec<u32> = s
                .nodes
                .iter()
                .map(|n| {
                    *index.entry(n.as_str()).or_insert_with(|| {
                        request.nodes.push(self.load.of(n));
                        request.nodes.len() as u32 - 1
                    })
                })
                .collect();
            request.push_segment(s.segment.id, s.segment.rows, holders);
        }
        let routed = self.route(&request);
        for (seg, choice) in dist.segments.iter().zip(routed) {
            let Some(node) = choice.and_then(|i| request.nodes.get(i as usize)) else {
                return Err(Error::Unavailable(format!("segment {} has no query node", seg.segment.id)));
            };
            shares.entry(node.node_id.clone()).or_default().segments.push(seg.segment.id);
        }
        Ok(shares)
    }

    fn guarantee(&self, consistency: Consistency) -> u64 {
        match consistency {
            Consistency::Bounded => {
                let staleness = self.node.shared.config.proxy.bounded_staleness.as_millis() as u64;
                ts_compose(now_ms().saturating_sub(staleness), 0)
            }
            _ => 0,
        }
    }

    /// Runs `attempt` until it succeeds or fails for a reason a refresh cannot fix.
    async fn with_retries<T, F, Fut>(&self, collection: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(Arc<Distribution>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut delay = Duration::from_millis(20);
        let mut last = None;
        for n in 0..READ_ATTEMPTS {
            let dist = if n == 0 { self.distribution(collection).await? } else { self.refresh(collection).await? };
            match attempt(dist).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    tracing::debug!(collection, attempt = n, error = %e, "read failed; refreshing layout");
                    last = Some(e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(1000));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("read failed".into())))
    }

    pub(super) async fn search(&self, mut req: Search, traceparent: Option<String>) -> Result<SearchResults> {
        let info = self.collection(&req.collection).await?;
        let cfg = &self.node.shared.config.proxy;
        let nq = check_search(&info, &mut req, cfg.max_top_k, cfg.max_nq)?;
        let filter = Arc::new(parse_filter(&info, &req.filter)?.1);
        let req = Arc::new(req);
        let opts = CallOptions { timeout: None, traceparent };
        self.with_retries(&req.collection.clone(), |dist| {
            let req = req.clone();
            let opts = opts.clone();
            let filter = filter.clone();
            async move {
                let shares = self.plan(&dist)?;
                let guarantee_ts = self.guarantee(req.consistency);
                let bus = &self.node.shared.bus;
                let calls = shares.into_iter().map(|(node, share)| {
                    let msg = NodeSearch {
                        collection: dist.collection.id,
                        search: (*req).clone(),
                        segments: share.segments,
                        growing: share.growing,
                        guarantee_ts,
                        filter: (*filter).clone(),
                    };
                    let subject = bus.subjects().node(&node, "search");
                    let opts = opts.clone();
                    async move {
                        let _call = self.load.start(&node);
                        bus.request_with::<_, SearchResults>(subject, &msg, &opts).await
                    }
                });
                let parts = futures::future::try_join_all(calls).await?;
                let better = higher_is_better(metric_of(&dist.collection));
                Ok(merge(parts, nq, req.top_k as usize, better))
            }
        })
        .await
    }

    pub(super) async fn get(&self, mut req: Get) -> Result<GetResults> {
        let info = self.collection(&req.collection).await?;
        if req.pks.is_empty() {
            return Err(Error::InvalidArgument("get needs at least one primary key".into()));
        }
        for pk in &req.pks {
            check_pk(&info, pk)?;
        }
        req.output_fields = check_output_fields(&info, &req.output_fields)?;
        let req = Arc::new(req);
        self.with_retries(&req.collection.clone(), |dist| {
            let req = req.clone();
            async move {
                let shares = self.plan(&dist)?;
                let guarantee_ts = self.guarantee(req.consistency);
                let bus = &self.node.shared.bus;
                let calls = shares.into_iter().map(|(node, share)| {
                    let msg = NodeGet {
                        collection: dist.collection.id,
                        get: (*req).clone(),
                        segments: share.segments,
                        growing: share.growing,
                        guarantee_ts,
                    };
                    let subject = bus.subjects().node(&node, "get");
                    async move { bus.request::<_, GetResults>(subject, &msg).await }
                });
                let parts = futures::future::try_join_all(calls).await?;
                Ok(merge_get(parts, &req, dist.collection.dim()))
            }
        })
        .await
    }
}

/// Parses a filter against the collection's schema: the expression and its JSON form for the
/// query nodes (both empty / `None` for an empty filter).
pub(super) fn parse_filter(info: &CollectionInfo, text: &str) -> Result<(Option<Expr>, String)> {
    if text.trim().is_empty() {
        return Ok((None, String::new()));
    }
    let expr = quiver_schemas::expr::parse(text, &info.schema).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let json = serde_json::to_string(&expr).map_err(Error::internal)?;
    Ok((Some(expr), json))
}

impl Proxy {
    /// Rows matching a filter in primary-key order (or their count).
    pub(super) async fn query(&self, mut req: Query) -> Result<QueryResults> {
        let info = self.collection(&req.collection).await?;
        let max = u64::from(self.node.shared.config.proxy.max_top_k);
        let count = req.output_fields.iter().any(|f| f.trim() == COUNT_STAR);
        if count && req.output_fields.len() > 1 {
            return Err(Error::InvalidArgument(format!(
                "{COUNT_STAR} cannot be combined with other output fields ({:?})",
                req.output_fields
            )));
        }
        if req.filter.trim().is_empty() && req.limit == 0 && !count {
            return Err(Error::InvalidArgument("a query with an empty filter needs a limit".into()));
        }
        if req.limit.saturating_add(req.offset) > max {
            return Err(Error::InvalidArgument(format!(
                "offset + limit is {}; at most {max} rows can be paged through (proxy.max_top_k)",
                req.limit.saturating_add(req.offset)
            )));
        }
        let (expr, filter) = parse_filter(&info, &req.filter)?;
        let vector = info.vector_field().map(|f| f.name.clone()).unwrap_or_default();
        let wants_vector = req.output_fields.contains(&vector);
        let scalar: Vec<String> = req.output_fields.iter().filter(|f| **f != vector).cloned().collect();
        req.output_fields = if count { vec![COUNT_STAR.to_string()] } else { check_output_fields(&info, &scalar)? };
        if wants_vector {
            req.output_fields.push(vector.clone());
        }
        // Get by key is the cheaper path when the filter only names primary keys.
        if let Some(pks) = expr.as_ref().and_then(Expr::primary_keys).filter(|_| !count && req.offset == 0) {
            let get = Get {
                collection: req.collection.clone(),
                pks,
                output_fields: req.output_fields.iter().filter(|f| **f != vector).cloned().collect(),
                consistency: req.consistency,
            };
            let mut found = self.get(get).await?.rows;
            if !wants_vector {
                found.vectors.clear();
            }
            if req.limit > 0 && found.pks.len() as u64 > req.limit {
                found = select_rows(&found, &(0..req.limit as usize).collect::<Vec<_>>());
            }
            return Ok(QueryResults { rows: found });
        }
        // Unbounded queries stop at `max` rows (+1 to tell that there were more).
        let node_limit = if req.limit == 0 && !count { max + 1 } else { req.limit };
        let req = Arc::new(req);
        let filter = Arc::new(filter);
        let parts: Vec<GetResults> = self
            .with_retries(&req.collection.clone(), |dist| {
                let req = req.clone();
                let filter = filter.clone();
                async move {
                    let shares = self.plan(&dist)?;
                    let guarantee_ts = self.guarantee(req.consistency);
                    let bus = &self.node.shared.bus;
                    let calls = shares.into_iter().map(|(node, share)| {
                        let mut query = (*req).clone();
                        query.limit = node_limit;
                        let msg = NodeQuery {
                            collection: dist.collection.id,
                            query,
                            segments: share.segments,
                            growing: share.growing,
                            guarantee_ts,
                            filter: (*filter).clone(),
                        };
                        let subject = bus.subjects().node(&node, "query");
                        async move { bus.request::<_, GetResults>(subject, &msg).await }
                    });
                    futures::future::try_join_all(calls).await
                }
            })
            .await?;
        if count {
            // Each node counted its rows (a key is served by one node, except a key inserted
            // twice without upsert, which Milvus does not deduplicate across nodes either).
            let n: i64 = parts
                .iter()
                .filter_map(|p| p.rows.columns.first().and_then(|c| c.values.first()))
                .map(|v| if let ScalarValue::Int64(n) = v { *n } else { 0 })
                .sum();
            let column = quiver_schemas::Column { name: COUNT_STAR.into(), values: vec![ScalarValue::Int64(n)] };
            return Ok(QueryResults { rows: RowBatch { columns: vec![column], ..Default::default() } });
        }
        let mut merged = merge_query(parts, info.dim());
        if req.limit == 0 && merged.rows.pks.len() as u64 > max {
            return Err(Error::InvalidArgument(format!(
                "the filter matches more than {max} rows; page through them with limit and offset"
            )));
        }
        // The page: skip `offset` rows (in key order), keep at most `limit`.
        let total = merged.rows.pks.len();
        let start = (req.offset as usize).min(total);
        let end = if req.limit > 0 { start.saturating_add(req.limit as usize).min(total) } else { total };
        if (start, end) != (0, total) {
            merged.rows = select_rows(&merged.rows, &(start..end).collect::<Vec<_>>());
        }
        Ok(QueryResults { rows: merged.rows })
    }
}

/// Keeps the latest version of every key across nodes, in primary-key order.
fn merge_query(parts: Vec<GetResults>, dim: u32) -> GetResults {
    let mut best: BTreeMap<&quiver_schemas::PrimaryKey, (u64, usize, usize)> = BTreeMap::new();
    for (p, part) in parts.iter().enumerate() {
        for (i, pk) in part.rows.pks.iter().enumerate() {
            let seq = part.seqs.get(i).copied().unwrap_or(0);
            if best.get(pk).is_none_or(|b| seq > b.0) {
                best.insert(pk, (seq, p, i));
            }
        }
    }
    let names: Vec<String> =
        parts.first().map(|p| p.rows.columns.iter().map(|c| c.name.clone()).collect()).unwrap_or_default();
    let mut rows = RowBatch {
        dim,
        columns: names.into_iter().map(|name| quiver_schemas::Column { name, values: Vec::new() }).collect(),
        ..Default::default()
    };
    let mut seqs = Vec::with_capacity(best.len());
    for (pk, (seq, p, i)) in best {
        let src = &parts[p].rows;
        rows.pks.push(pk.clone());
        let d = src.dim as usize;
        if src.vectors.len() >= (i + 1) * d {
            rows.vectors.extend_from_slice(&src.vectors[i * d..(i + 1) * d]);
        }
        for (out, col) in rows.columns.iter_mut().zip(&src.columns) {
            out.values.push(col.values.get(i).cloned().unwrap_or(ScalarValue::Null));
        }
        seqs.push(seq);
    }
    GetResults { rows, seqs }
}

/// Merges per-node top-k lists into the global top-k per query (keys deduplicated).
pub fn merge(parts: Vec<SearchResults>, nq: usize, k: usize, higher_is_better: bool) -> SearchResults {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let mut results = Vec::with_capacity(nq);
    for q in 0..nq {
        let mut cands: Vec<(f32, usize, usize)> = Vec::new();
        for (p, part) in parts.iter().enumerate() {
            if let Some(h) = part.results.get(q) {
                cands.extend(h.scores.iter().enumerate().map(|(i, s)| (*s, p, i)));
            }
        }
        if higher_is_better {
            cands.sort_by(|a, b| b.0.total_cmp(&a.0));
        } else {
            cands.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let names: Vec<String> = parts
            .iter()
            .find_map(|p| p.results.get(q).map(|h| h.columns.iter().map(|c| c.name.clone()).collect()))
            .unwrap_or_default();
        let mut hits = Hits {
            columns: names.into_iter().map(|name| quiver_schemas::Column { name, values: Vec::new() }).collect(),
            ..Default::default()
        };
        let mut seen = HashSet::new();
        for (score, p, i) in cands {
            if hits.pks.len() == k {
                break;
            }
            let h = &parts[p].results[q];
            if !seen.insert(&h.pks[i]) {
                continue;
            }
            hits.pks.push(h.pks[i].clone());
            hits.scores.push(score);
            for (out, col) in hits.columns.iter_mut().zip(&h.columns) {
                out.values.push(col.values[i].clone());
            }
        }
        results.push(hits);
    }
    SearchResults { results }
}

/// Keeps, per requested key, the latest version any node returned, in request order.
fn merge_get(parts: Vec<GetResults>, req: &Get, dim: u32) -> GetResults {
    let mut best: HashMap<&quiver_schemas::PrimaryKey, (u64, usize, usize)> = HashMap::new();
    for (p, part) in parts.iter().enumerate() {
        for (i, pk) in part.rows.pks.iter().enumerate() {
            let seq = part.seqs.get(i).copied().unwrap_or(0);
            if best.get(pk).is_none_or(|b| seq > b.0) {
                best.insert(pk, (seq, p, i));
            }
        }
    }
    let mut rows = RowBatch {
        dim,
        columns: req
            .output_fields
            .iter()
            .map(|name| quiver_schemas::Column { name: name.clone(), values: Vec::new() })
            .collect(),
        ..Default::default()
    };
    let mut seqs = Vec::new();
    let mut emitted = HashSet::new();
    for pk in &req.pks {
        let Some(&(seq, p, i)) = best.get(pk) else { continue };
        if !emitted.insert(pk) {
            continue;
        }
        let src = &parts[p].rows;
        let d = src.dim as usize;
        rows.pks.push(pk.clone());
        rows.vectors.extend_from_slice(&src.vectors[i * d..(i + 1) * d]);
        for (out, col) in rows.columns.iter_mut().zip(&src.columns) {
            out.values.push(col.values[i].clone());
        }
        seqs.push(seq);
    }
    GetResults { rows, seqs }
}
