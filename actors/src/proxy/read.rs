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
    ts_compose, Consistency, Distribution, Get, GetResults, Hits, NodeGet, NodeSearch, RowBatch, Search, SearchResults,
    ShardPlacement,
};

use super::validate::{check_output_fields, check_pk, check_search};
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
        let req = Arc::new(req);
        let opts = CallOptions { timeout: None, traceparent };
        self.with_retries(&req.collection.clone(), |dist| {
            let req = req.clone();
            let opts = opts.clone();
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
                        filter: String::new(),
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
