//! Searches, gets and queries: route each sealed segment to one of the nodes holding it
//! (router policy; with replicas every group's copy is a candidate), send each shard's growing
//! part to one of its leaders, scatter the per-node requests, gather and merge. A failed or
//! stale share is retried alone on a fresh layout, on another replica when there is one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_policy::router::RouteRequest;
use quiver_runtime::bus::{now_ms, CallOptions, RequestContext};
use quiver_runtime::{trace, Error, Result};
use quiver_schemas::protocol::querynode;
use quiver_schemas::{
    ts_compose, CollectionInfo, Consistency, Distribution, Expr, Get, GetResults, Hits, NodeGet, NodeQuery, NodeSearch,
    NodeSearchResults, Query, QueryResults, RowBatch, ScalarValue, Search, SearchResults, SegmentPlacement,
    ShardPlacement, ShardView, COUNT_STAR,
};

use super::load::NodeLoads;
use super::reply::{self, pk_type, RowsShape, SearchShape};
use super::slow::{self, NodeStep, SlowSearch, Steps};
use super::validate::{check_output_fields, check_pk, check_search, select_rows};
use super::{partitions, Proxy};
use crate::limits::ReadLimits;
use crate::querynode::metric_of;
use crate::vector::higher_is_better;
use tracing::Instrument;

/// How long a read keeps retrying failed shares (backoff 20 ms doubling to 1 s), unless its
/// caller's deadline comes first: long enough for the coordinator to declare a killed query
/// node dead and have its work loaded elsewhere, even on a busy machine.
const RETRY_WINDOW: Duration = Duration::from_secs(30);

/// Room a node's search request keeps for everything but its query vectors.
const SEARCH_PAYLOAD_MARGIN: usize = 64 * 1024;

/// Queries of `dim` floats that fit one NATS message of `max_payload` bytes beside the rest of a
/// node's search request (all of them when the server names no limit).
fn queries_per_message(max_payload: usize, dim: usize) -> Result<usize> {
    if max_payload == 0 {
        return Ok(usize::MAX);
    }
    match max_payload.saturating_sub(SEARCH_PAYLOAD_MARGIN) / (dim.max(1) * std::mem::size_of::<f32>()) {
        0 => Err(Error::InvalidArgument(format!(
            "one query of {dim} floats does not fit a message of the NATS server's max_payload ({max_payload} bytes); \
             raise max_payload in the nats-server configuration"
        ))),
        n => Ok(n),
    }
}

/// One node's share of a read.
#[derive(Debug, Default, Clone)]
pub(super) struct NodeShare {
    segments: Vec<u64>,
    growing: Vec<ShardPlacement>,
}

/// What a read still needs after some shares failed: sealed segments, and per shard everything
/// after the log position the failed request's view had sealed (segments sealed since then
/// plus the growing rows after the fresh view's position).
#[derive(Default)]
struct Pending {
    segments: HashSet<u64>,
    shards: BTreeMap<u32, u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.shards.is_empty()
    }

    /// A segment that keeps what is still needed from being asked for alone on `dist`, if any:
    /// a pending segment `dist` no longer lists (compacted or dropped: its rows are now in a
    /// segment other shares may have answered for already), or a segment of `dist` that spans a
    /// pending shard's position (a merge of segments answered already with ones that were not).
    fn unplannable_on(&self, dist: &Distribution) -> Option<u64> {
        let gone = self.segments.iter().copied().find(|id| !dist.segments.iter().any(|s| s.segment.id == *id));
        gone.or_else(|| {
            dist.segments.iter().map(|s| &s.segment).find_map(|s| {
                let after = self.shards.get(&s.shard)?;
                (s.start_seq <= *after && s.end_seq > *after && !self.segments.contains(&s.id)).then_some(s.id)
            })
        })
    }

    fn add(&mut self, share: NodeShare) {
        self.segments.extend(share.segments);
        for g in share.growing {
            let after = self.shards.entry(g.shard).or_insert(g.sealed_seq);
            *after = (*after).min(g.sealed_seq);
        }
    }
}

/// Splits a read over the nodes of the layout: each shard's growing rows to one of its leaders
/// (the least loaded), each sealed segment to one of its holders (`route`: the router policy).
/// Only what `pending` names when given; nodes in `avoid` (they just failed) are passed over
/// when another node can serve the part.
fn plan(
    dist: &Distribution,
    pending: Option<&Pending>,
    avoid: &HashSet<String>,
    sequence: u64,
    loads: &NodeLoads,
    route: impl FnOnce(&RouteRequest) -> Vec<Option<u32>>,
) -> Result<BTreeMap<String, NodeShare>> {
    if dist.released {
        return Err(Error::not_loaded(&dist.collection.schema.name));
    }
    let mut shares: BTreeMap<String, NodeShare> = BTreeMap::new();
    let mut shards: Vec<u32> = dist.shards.iter().map(|s| s.shard).collect();
    shards.dedup();
    for shard in shards.into_iter().filter(|s| pending.is_none_or(|p| p.shards.contains_key(s))) {
        let leaders: Vec<&ShardPlacement> = dist.leaders_of(shard).collect();
        let usable: Vec<&ShardPlacement> = leaders.iter().copied().filter(|l| !avoid.contains(&l.leader)).collect();
        let choices = if usable.is_empty() { &leaders } else { &usable };
        let Some(leader) = least_loaded(loads, choices, sequence.wrapping_add(u64::from(shard))) else {
            return Err(Error::Unavailable(format!(
                "shard {shard} of {:?} has no query node yet",
                dist.collection.schema.name
            )));
        };
        shares.entry(leader.leader.clone()).or_default().growing.push(leader.clone());
    }
    let wanted = |s: &SegmentPlacement| match pending {
        None => true,
        Some(p) => {
            p.segments.contains(&s.segment.id)
                || p.shards.get(&s.segment.shard).is_some_and(|&after| s.segment.start_seq > after)
        }
    };
    let mut request = RouteRequest { sequence, collection: dist.collection.id, ..RouteRequest::default() };
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut routed_segments = Vec::new();
    for s in dist.segments.iter().filter(|s| wanted(s)) {
        let usable = s.nodes.iter().any(|n| !avoid.contains(n));
        let holders: Vec<u32> = s
            .nodes
            .iter()
            .filter(|n| !usable || !avoid.contains(*n))
            .map(|n| {
                *index.entry(n.as_str()).or_insert_with(|| {
                    request.nodes.push(loads.of(n));
                    request.nodes.len() as u32 - 1
                })
            })
            .collect();
        request.push_segment(s.segment.id, s.segment.rows, holders);
        routed_segments.push(s.segment.id);
    }
    let routed = if routed_segments.is_empty() { Vec::new() } else { route(&request) };
    for (id, choice) in routed_segments.into_iter().zip(routed) {
        let Some(node) = choice.and_then(|i| request.nodes.get(i as usize)) else {
            return Err(Error::Unavailable(format!("segment {id} has no query node")));
        };
        shares.entry(node.node_id.clone()).or_default().segments.push(id);
    }
    Ok(shares)
}

/// The first leader view that comes from a newer layout than `dist` and lists other segments
/// for its shard than `dist` does.
fn newer_view<'a>(dist: &Distribution, views: &'a [ShardView]) -> Option<&'a ShardView> {
    views.iter().filter(|v| v.version > dist.version).find(|view| {
        let cached = dist.segments.iter().filter(|s| s.segment.shard == view.shard).map(|s| s.segment.id);
        !cached.eq(view.segments.iter().copied())
    })
}

/// The leader with the lowest expected wait (sub-requests in flight × smoothed latency); equal
/// ones take turns by `spread`.
fn least_loaded<'a>(loads: &NodeLoads, leaders: &[&'a ShardPlacement], spread: u64) -> Option<&'a ShardPlacement> {
    if leaders.len() <= 1 {
        return leaders.first().copied();
    }
    let cost = |l: &ShardPlacement| {
        let load = loads.of(&l.leader);
        u64::from(load.in_flight + 1) * u64::from(load.latency_us.max(1))
    };
    let costs: Vec<u64> = leaders.iter().map(|l| cost(l)).collect();
    let best = costs.iter().copied().min()?;
    let tied: Vec<usize> = (0..leaders.len()).filter(|&i| costs[i] == best).collect();
    tied.get((spread % tied.len() as u64) as usize).map(|&i| leaders[i])
}

impl Proxy {
    fn guarantee(&self, consistency: Consistency) -> u64 {
        match consistency {
            Consistency::Bounded => {
                let staleness = self.node.shared.config.proxy.bounded_staleness.as_millis() as u64;
                ts_compose(now_ms().saturating_sub(staleness), 0)
            }
            _ => 0,
        }
    }

    /// Scatters a read over the layout's nodes (`send` sends one node's share with the call
    /// options of its try) and gathers the answers. A share that fails for a reason a refresh
    /// can fix (node gone, layout stale) is planned again on a fresh layout, away from the
    /// nodes that failed (another replica when there is one), and only that share is sent
    /// again (MISSION S2.5); the other answers are kept. Every try is bounded by
    /// `min(caller's remaining time, per-try patience)`; retries until the caller's deadline
    /// passes or for `RETRY_WINDOW`, whichever is first.
    /// Each layout lookup is a `get_routing` span; its time is added to `steps`.
    pub(super) async fn scatter<T, F, Fut>(
        &self,
        collection: &str,
        ctx: &RequestContext,
        steps: &Steps,
        send: F,
    ) -> Result<Vec<T>>
    where
        F: Fn(Arc<Distribution>, String, NodeShare, CallOptions) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let routed = Instant::now();
        let mut dist = self.distribution(collection, ctx).instrument(routing_span(collection, false)).await?;
        steps.routed(routed.elapsed());
        let mut parts = Vec::new();
        let mut pending: Option<Pending> = None;
        let mut avoid = self.load.failing();
        let mut delay = Duration::from_millis(20);
        let mut last: Option<Error> = None;
        let patience = self.node.shared.bus.default_timeout();
        let give_up = std::time::Instant::now() + RETRY_WINDOW;
        for attempt in 0u64.. {
            if ctx.expired() || std::time::Instant::now() >= give_up {
                break;
            }
            let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
            let planned = plan(&dist, pending.as_ref(), &avoid, sequence, &self.load, |r| self.route(r));
            let mut failed = Pending::default();
            match planned {
                Ok(shares) => {
                    let shares: Vec<(String, NodeShare)> = shares.into_iter().collect();
                    // With replicas, a node that does not answer in time (killed mid-request,
                    // stuck) is given up on and its share asked of another replica. Only in the
                    // first round: a read that is slow everywhere (huge nq or k) still finishes.
                    let replicated = dist.replicas.len() > 1 && attempt == 0;
                    let max_wait = self.node.shared.config.proxy.replica_timeout;
                    let mut calls = Vec::with_capacity(shares.len());
                    for (node, share) in &shares {
                        let patience = if replicated { self.load.patience(node, max_wait) } else { patience };
                        let opts = ctx.try_options(patience, "a read's next try")?;
                        calls.push(send(dist.clone(), node.clone(), share.clone(), opts));
                    }
                    let results = futures::future::join_all(calls).await;
                    for ((node, share), result) in shares.into_iter().zip(results) {
                        match result {
                            Ok(part) => parts.push(part),
                            // A node whose own try ran out while the caller still waits: retry.
                            Err(e) if e.is_retryable() || matches!(e, Error::DeadlineExceeded(_)) && !ctx.expired() => {
                                tracing::debug!(collection, node = %node, attempt, error = %e, "node share failed; retrying it elsewhere");
                                if matches!(e, Error::Unavailable(_) | Error::NotServed(_) | Error::Timeout { .. }) {
                                    self.load.failed(&node);
                                }
                                avoid.insert(node);
                                failed.add(share);
                                last = Some(e);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    if failed.is_empty() {
                        return Ok(parts);
                    }
                    metrics::counter!("quiver_proxy_failovers_total").increment(1);
                    pending = Some(failed);
                }
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
            // The first retry goes out at once (another replica usually has the part); later
            // ones back off while the coordinator moves the work.
            if attempt > 0 {
                let wait = ctx.remaining().map_or(delay, |left| left.min(delay));
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(Duration::from_millis(1000));
            }
            if ctx.expired() {
                break;
            }
            let routed = Instant::now();
            dist = self.refresh(collection, ctx).instrument(routing_span(collection, true)).await?;
            steps.routed(routed.elapsed());
            if let Some(segment) = pending.as_ref().and_then(|p| p.unplannable_on(&dist)) {
                // Compaction moved rows of the failed share together with rows other shares
                // answered for: only a read planned afresh on the new layout counts every row once.
                tracing::debug!(collection, segment, "the layout changed under a failed share; reading again");
                metrics::counter!("quiver_proxy_read_restarts_total").increment(1);
                parts.clear();
                pending = None;
            }
        }
        match last {
            Some(e) if ctx.expired() => Err(Error::DeadlineExceeded(format!(
                "reading {collection:?}: no complete answer before the caller's deadline (last failure: {e})"
            ))),
            Some(e) => Err(e),
            None => Err(Error::DeadlineExceeded(format!("reading {collection:?}: the caller's deadline passed"))),
        }
    }

    /// A search. Every node's share carries all of the request's queries in one NATS message,
    /// so a batch larger than the server's `max_payload` (1 MB by default, 8 MB for the
    /// nats-server Quiver starts) goes out in parts of as many queries as fit, one after another.
    pub(super) async fn search_now(&self, mut req: Search, ctx: &RequestContext) -> Result<SearchResults> {
        let names: Vec<&str> = req.partitions.iter().map(String::as_str).collect();
        let info = self.collection_with(&req.collection, &names, ctx).await?;
        self.node.shared.memory.admit_read("a search")?;
        let nq = check_search(&info, &mut req, &ReadLimits::of(&self.node.shared.config))?;
        let max_payload = self.node.shared.bus.client().server_info().max_payload;
        let per_message = queries_per_message(max_payload, req.dim as usize)?;
        if nq <= per_message {
            return self.search_checked(&info, req, nq, ctx).await;
        }
        let dim = req.dim as usize;
        let mut results = Vec::with_capacity(nq);
        for chunk in req.vectors.chunks(per_message * dim) {
            let part = Search {
                collection: req.collection.clone(),
                dim: req.dim,
                vectors: chunk.to_vec(),
                top_k: req.top_k,
                params: req.params,
                output_fields: req.output_fields.clone(),
                consistency: req.consistency,
                filter: req.filter.clone(),
                partitions: req.partitions.clone(),
            };
            results.extend(self.search_checked(&info, part, chunk.len() / dim, ctx).await?.results);
        }
        Ok(SearchResults { results })
    }

    async fn search_checked(
        &self,
        info: &CollectionInfo,
        req: Search,
        nq: usize,
        ctx: &RequestContext,
    ) -> Result<SearchResults> {
        let started = Instant::now();
        let steps = Steps::default();
        let (collection, top_k, consistency) = (req.collection.clone(), req.top_k, req.consistency);
        let mut merge_took = Duration::ZERO;
        let result = self.search_steps(info, req, nq, ctx, &steps, &mut merge_took).await;
        let took = started.elapsed();
        if took >= self.node.shared.config.tracing.slow_search {
            let search = SlowSearch {
                at_ms: now_ms(),
                collection,
                nq,
                top_k,
                consistency: format!("{consistency:?}"),
                ms: slow::ms(took),
                routing_ms: 0.0,
                merge_ms: slow::ms(merge_took),
                nodes: Vec::new(),
                error: result.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
                trace_id: trace::trace_id_of(&tracing::Span::current()).unwrap_or_default(),
            };
            self.slow.record(steps, search);
        }
        result
    }

    /// A search's steps: routing (in [`Proxy::scatter`]), one `do_search` span per query
    /// node's share, and the `do_merge` of their answers.
    async fn search_steps(
        &self,
        info: &CollectionInfo,
        req: Search,
        nq: usize,
        ctx: &RequestContext,
        steps: &Steps,
        merge_took: &mut Duration,
    ) -> Result<SearchResults> {
        let filter = Arc::new(read_filter(info, &req.filter, &req.partitions)?.1);
        let req = Arc::new(req);
        let guarantee_ts = self.guarantee(req.consistency);
        let bus = &self.node.shared.bus;
        let shape = &SearchShape { nq, k: req.top_k as usize, fields: &req.output_fields, pk_type: pk_type(info) };
        metrics::counter!("quiver_proxy_searches_total").increment(1);
        let parts = self
            .scatter(&req.collection, ctx, steps, |dist, node, share, opts| {
                metrics::counter!("quiver_proxy_node_calls_total", "method" => "search").increment(1);
                let (segments, growing) = (share.segments.len(), share.growing.len());
                let span = tracing::debug_span!(
                    "do_search",
                    otel.kind = "client",
                    node = %node,
                    segments,
                    growing,
                    nq,
                    top_k = req.top_k,
                    rows_searched = tracing::field::Empty,
                    status = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                    otel.status_message = tracing::field::Empty,
                );
                let msg = NodeSearch {
                    collection: dist.collection.id,
                    search: (*req).clone(),
                    segments: share.segments,
                    growing: share.growing,
                    guarantee_ts,
                    filter: (*filter).clone(),
                };
                let traced = span.clone();
                async move {
                    let started = Instant::now();
                    let answer: Result<NodeSearchResults> = async {
                        let call = self.load.start(&node);
                        let part: NodeSearchResults = bus.call_node::<querynode::Search>(&node, &msg, &opts).await?;
                        drop(call);
                        reply::check_search(&node, &part, shape)?;
                        Ok(part)
                    }
                    .await;
                    let rows_searched = answer.as_ref().map_or(0, |part| part.rows_searched);
                    traced.record("rows_searched", rows_searched);
                    match &answer {
                        Ok(_) => traced.record("status", "ok"),
                        Err(e) => {
                            trace::record_error(&traced, e);
                            traced.record("status", e.code().name())
                        }
                    };
                    let error = answer.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
                    let ms = slow::ms(started.elapsed());
                    steps.node(NodeStep { node: node.clone(), segments, growing, rows_searched, ms, error });
                    let part = answer?;
                    self.load.report(&node, part.in_flight);
                    self.check_views(&dist, &part.shards);
                    Ok(SearchResults { results: part.results })
                }
                .instrument(span)
            })
            .await?;
        let better = higher_is_better(metric_of(info));
        let merging = Instant::now();
        let merged = tracing::debug_span!("do_merge", parts = parts.len(), nq, top_k = req.top_k)
            .in_scope(|| merge(parts, nq, req.top_k as usize, better));
        *merge_took = merging.elapsed();
        Ok(merged)
    }

    /// Compares the shard leaders' authoritative segment lists with the cached layout they
    /// were read with (MISSION S2.6): a newer, different list means the cache is stale, so the
    /// next read fetches the layout again.
    fn check_views(&self, dist: &Distribution, views: &[ShardView]) {
        if let Some(view) = newer_view(dist, views) {
            let name = &dist.collection.schema.name;
            tracing::debug!(collection = %name, shard = view.shard, cached = dist.version, leader = view.version,
                "shard leader's segment list differs from the cached layout; refreshing it");
            metrics::counter!("quiver_proxy_cache_invalidations_total", "reason" => "shard_leader").increment(1);
            self.layouts.remove_if(name, |_, c| c.dist.version < view.version);
        }
    }

    pub(super) async fn get_now(&self, req: Get, ctx: &RequestContext) -> Result<GetResults> {
        self.get_scoped(req, &[], ctx).await
    }

    /// A get of rows in the partitions `names` (none named: every loaded one).
    pub(super) async fn get_scoped(&self, mut req: Get, names: &[String], ctx: &RequestContext) -> Result<GetResults> {
        let named: Vec<&str> = names.iter().map(String::as_str).collect();
        let info = self.collection_with(&req.collection, &named, ctx).await?;
        let scope = partitions::read_scope(&info, names)?.unwrap_or_default();
        if req.pks.is_empty() {
            return Err(Error::InvalidArgument("get needs at least one primary key".into()));
        }
        self.node.shared.memory.admit_read("a get")?;
        ReadLimits::of(&self.node.shared.config).check_rows(req.pks.len() as u64, Some(info.dim()), "a get")?;
        for pk in &req.pks {
            check_pk(&info, pk)?;
        }
        req.output_fields = check_output_fields(&info, &req.output_fields)?;
        let req = Arc::new(req);
        let guarantee_ts = self.guarantee(req.consistency);
        let bus = &self.node.shared.bus;
        let shape = &RowsShape {
            max_rows: req.pks.len(),
            columns: &req.output_fields,
            dim: Some(info.dim() as usize),
            pk_type: pk_type(&info),
        };
        let parts = self
            .scatter(&req.collection, ctx, &Steps::default(), |dist, node, share, opts| {
                let msg = NodeGet {
                    collection: dist.collection.id,
                    get: (*req).clone(),
                    segments: share.segments,
                    growing: share.growing,
                    guarantee_ts,
                    partitions: scope.clone(),
                };
                async move {
                    let _call = self.load.start(&node);
                    let part = bus.call_node::<querynode::Get>(&node, &msg, &opts).await?;
                    reply::check_rows(&node, &part, shape)?;
                    Ok(part)
                }
            })
            .await?;
        Ok(merge_get(parts, &req, info.dim()))
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

/// [`parse_filter`] for a read of the partitions `names` (none named: every loaded one).
pub(super) fn read_filter(info: &CollectionInfo, text: &str, names: &[String]) -> Result<(Option<Expr>, String)> {
    let scope = partitions::read_scope(info, names)?;
    if scope.is_none() {
        return parse_filter(info, text);
    }
    let expr = partitions::restrict(parse_filter(info, text)?.0, scope);
    let json = match &expr {
        Some(e) => serde_json::to_string(e).map_err(Error::internal)?,
        None => String::new(),
    };
    Ok((expr, json))
}

impl Proxy {
    /// Rows matching a filter in primary-key order (or their count).
    pub(super) async fn query_now(&self, mut req: Query, ctx: &RequestContext) -> Result<QueryResults> {
        let names: Vec<&str> = req.partitions.iter().map(String::as_str).collect();
        let info = self.collection_with(&req.collection, &names, ctx).await?;
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
        self.node.shared.memory.admit_read("a query")?;
        let limits = ReadLimits::of(&self.node.shared.config);
        limits.check_filter(&req.filter)?;
        let (expr, filter) = read_filter(&info, &req.filter, &req.partitions)?;
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
            let mut found = self.get(get, ctx).await?.rows;
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
        if !count {
            let rows = node_limit.saturating_add(req.offset);
            let dim = wants_vector.then_some(info.dim());
            limits.check_rows(rows, dim, "a query")?;
        }
        let req = Arc::new(req);
        let filter = Arc::new(filter);
        let guarantee_ts = self.guarantee(req.consistency);
        let bus = &self.node.shared.bus;
        let scalars: Vec<String> = req.output_fields.iter().filter(|f| **f != vector).cloned().collect();
        let shape = &RowsShape {
            max_rows: usize::try_from(node_limit.saturating_add(req.offset)).unwrap_or(usize::MAX),
            columns: &scalars,
            dim: wants_vector.then_some(info.dim() as usize),
            pk_type: pk_type(&info),
        };
        let parts: Vec<GetResults> = self
            .scatter(&req.collection, ctx, &Steps::default(), |dist, node, share, opts| {
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
                async move {
                    let _call = self.load.start(&node);
                    let part = bus.call_node::<querynode::Query>(&node, &msg, &opts).await?;
                    if count {
                        reply::check_count(&node, &part)?;
                    } else {
                        reply::check_rows(&node, &part, shape)?;
                    }
                    Ok(part)
                }
            })
            .await?;
        if count {
            return Ok(QueryResults { rows: merge_count(&parts) });
        }
        let merged = merge_query(parts, info.dim());
        if req.limit == 0 && merged.rows.pks.len() as u64 > max {
            return Err(Error::InvalidArgument(format!(
                "the filter matches more than {max} rows; page through them with limit and offset"
            )));
        }
        Ok(QueryResults { rows: page(merged.rows, req.offset, req.limit) })
    }
}

/// The total of the nodes' `count(*)` answers (each checked to hold one count), as the one
/// `count(*)` column. A key is served by one node, except a key inserted twice without upsert,
/// which Milvus does not deduplicate across nodes either.
fn merge_count(parts: &[GetResults]) -> RowBatch {
    let n = parts
        .iter()
        .filter_map(|p| p.rows.columns.first().and_then(|c| c.values.first()))
        .map(|v| if let ScalarValue::Int64(n) = v { *n } else { 0 })
        .fold(0i64, i64::saturating_add);
    let column = quiver_schemas::Column { name: COUNT_STAR.into(), values: vec![ScalarValue::Int64(n)] };
    RowBatch { columns: vec![column], ..Default::default() }
}

/// A page of merged rows: skips `offset` rows (in key order) and keeps at most `limit` (0: all).
fn page(rows: RowBatch, offset: u64, limit: u64) -> RowBatch {
    let total = rows.pks.len();
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
    let end = match usize::try_from(limit) {
        Ok(0) => total,
        Ok(limit) => start.saturating_add(limit).min(total),
        Err(_) => total,
    };
    if (start, end) == (0, total) {
        return rows;
    }
    select_rows(&rows, &(start..end).collect::<Vec<_>>())
}

/// Row `i`'s vector in `rows`, if the rows carry vectors (the reply checks made sure that rows
/// with vectors carry one for every row).
fn vector_of(rows: &RowBatch, i: usize) -> Option<&[f32]> {
    let d = rows.dim as usize;
    rows.vectors.get(i.checked_mul(d)?..i.checked_add(1)?.checked_mul(d)?)
}

/// Keeps the latest version of every key across nodes (the highest log position; on a tie
/// the first node's), in primary-key order.
fn merge_query(parts: Vec<GetResults>, dim: u32) -> GetResults {
    let mut best: BTreeMap<&quiver_schemas::PrimaryKey, (u64, &RowBatch, usize)> = BTreeMap::new();
    for part in &parts {
        for (i, (pk, &seq)) in part.rows.pks.iter().zip(&part.seqs).enumerate() {
            if best.get(pk).is_none_or(|b| seq > b.0) {
                best.insert(pk, (seq, &part.rows, i));
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
    for (pk, (seq, src, i)) in best {
        rows.pks.push(pk.clone());
        if let Some(v) = vector_of(src, i) {
            rows.vectors.extend_from_slice(v);
        }
        for (out, col) in rows.columns.iter_mut().zip(&src.columns) {
            out.values.push(col.values.get(i).cloned().unwrap_or(ScalarValue::Null));
        }
        seqs.push(seq);
    }
    GetResults { rows, seqs }
}

/// Merges per-node top-k lists into the global top-k per query: best score first in the
/// metric's direction (ties in node order), each key once (with its best score: a key inserted
/// twice without upsert, as Milvus, keeps its better version).
pub fn merge(parts: Vec<SearchResults>, nq: usize, k: usize, higher_is_better: bool) -> SearchResults {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let mut results = Vec::with_capacity(nq);
    for q in 0..nq {
        let mut cands: Vec<(f32, &quiver_schemas::PrimaryKey, &Hits, usize)> = Vec::new();
        for h in parts.iter().filter_map(|part| part.results.get(q)) {
            cands.extend(h.pks.iter().zip(&h.scores).enumerate().map(|(i, (pk, s))| (*s, pk, h, i)));
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
        for (score, pk, h, i) in cands {
            if hits.pks.len() == k {
                break;
            }
            if !seen.insert(pk) {
                continue;
            }
            hits.pks.push(pk.clone());
            hits.scores.push(score);
            for (out, col) in hits.columns.iter_mut().zip(&h.columns) {
                out.values.push(col.values.get(i).cloned().unwrap_or(ScalarValue::Null));
            }
        }
        results.push(hits);
    }
    SearchResults { results }
}

/// Keeps, per requested key, the latest version any node returned (the highest log position;
/// on a tie the first node's), in request order, each key once.
fn merge_get(parts: Vec<GetResults>, req: &Get, dim: u32) -> GetResults {
    let mut best: HashMap<&quiver_schemas::PrimaryKey, (u64, &RowBatch, usize)> = HashMap::new();
    for part in &parts {
        for (i, (pk, &seq)) in part.rows.pks.iter().zip(&part.seqs).enumerate() {
            if best.get(pk).is_none_or(|b| seq > b.0) {
                best.insert(pk, (seq, &part.rows, i));
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
        let Some(&(seq, src, i)) = best.get(pk) else { continue };
        if !emitted.insert(pk) {
            continue;
        }
        rows.pks.push(pk.clone());
        if let Some(v) = vector_of(src, i) {
            rows.vectors.extend_from_slice(v);
        }
        for (out, col) in rows.columns.iter_mut().zip(&src.columns) {
            out.values.push(col.values.get(i).cloned().unwrap_or(ScalarValue::Null));
        }
        seqs.push(seq);
    }
    GetResults { rows, seqs }
}

/// The span of one layout lookup (`get_routing`): a cached layout is a map lookup, a fresh
/// one a call to the coordinator.
fn routing_span(collection: &str, refresh: bool) -> tracing::Span {
    tracing::debug_span!("get_routing", collection, refresh)
}

#[cfg(test)]
mod merge_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use quiver_policy::router::{Rendezvous, Router};
    use quiver_schemas::{CollectionSchema, ReplicaGroup, SegmentInfo, SegmentState};

    use super::*;

    fn segment(id: u64, start_seq: u64, end_seq: u64, nodes: &[&str]) -> SegmentPlacement {
        SegmentPlacement {
            segment: SegmentInfo {
                partitions: Default::default(),
                id,
                collection: 7,
                shard: 0,
                rows: 100,
                start_seq,
                end_seq,
                data_path: String::new(),
                index_path: None,
                state: SegmentState::Flushed,
                mem_size: 0,
                delete_seq: 0,
                compacted_from: Vec::new(),
            },
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    /// Shard 0 led by `qa` (group 0) and `qb` (group 1), sealed up to 100 in segments 1 and 2,
    /// each held in both groups.
    fn dist() -> Distribution {
        let schema = CollectionSchema {
            name: "docs".into(),
            description: String::new(),
            fields: Vec::new(),
            enable_dynamic_field: false,
            num_shards: 1,
            consistency: Consistency::Bounded,
        };
        let leader =
            |leader: &str, replica| ShardPlacement { shard: 0, leader: leader.into(), sealed_seq: 100, replica };
        Distribution {
            collection: CollectionInfo {
                partitions: Default::default(),
                id: 7,
                schema,
                index: None,
                created_ts: 0,
                scalar_indexes: Vec::new(),
            },
            shards: vec![leader("qa", 0), leader("qb", 1)],
            segments: vec![segment(1, 1, 50, &["qa", "qb"]), segment(2, 51, 100, &["qa", "qb"])],
            version: 3,
            released: false,
            replicas: vec![
                ReplicaGroup { id: 0, nodes: vec!["qa".into()] },
                ReplicaGroup { id: 1, nodes: vec!["qb".into()] },
            ],
            unserved: Vec::new(),
        }
    }

    fn plan_of(
        d: &Distribution,
        pending: Option<&Pending>,
        avoid: &[&str],
        loads: &NodeLoads,
    ) -> Result<BTreeMap<String, NodeShare>> {
        let avoid: HashSet<String> = avoid.iter().map(|s| s.to_string()).collect();
        plan(d, pending, &avoid, 0, loads, |r| Rendezvous.route(r))
    }

    /// A node's share as (node, segments, growing parts as (shard, sealed position)).
    type ShareSummary = (String, Vec<u64>, Vec<(u32, u64)>);

    /// Every node's share, segments sorted.
    fn summary(shares: &BTreeMap<String, NodeShare>) -> Vec<ShareSummary> {
        shares
            .iter()
            .map(|(n, s)| {
                let mut segs = s.segments.clone();
                segs.sort_unstable();
                (n.clone(), segs, s.growing.iter().map(|g| (g.shard, g.sealed_seq)).collect())
            })
            .collect()
    }

    #[test]
    fn each_part_goes_to_exactly_one_replica() {
        let shares = plan_of(&dist(), None, &[], &NodeLoads::default()).unwrap();
        let mut segments: Vec<u64> = shares.values().flat_map(|s| s.segments.clone()).collect();
        segments.sort_unstable();
        assert_eq!(segments, [1, 2], "every sealed segment once");
        let growing: Vec<u32> = shares.values().flat_map(|s| s.growing.iter().map(|g| g.shard)).collect();
        assert_eq!(growing, [0], "the shard's growing rows from one of its two leaders");
    }

    #[test]
    fn growing_rows_go_to_the_less_busy_leader() {
        let loads = NodeLoads::default();
        let _busy = [loads.start("qa"), loads.start("qa")];
        for _ in 0..4 {
            let shares = plan_of(&dist(), None, &[], &loads).unwrap();
            assert!(shares.get("qb").is_some_and(|s| s.growing.len() == 1), "{:?}", summary(&shares));
        }
    }

    #[test]
    fn a_failed_node_is_avoided_while_another_replica_serves_the_part() {
        let loads = NodeLoads::default();
        let shares = plan_of(&dist(), None, &["qa"], &loads).unwrap();
        assert_eq!(summary(&shares), [("qb".to_string(), vec![1, 2], vec![(0, 100)])]);
        // When every copy is on avoided nodes, they are tried anyway (they may have recovered).
        let shares = plan_of(&dist(), None, &["qa", "qb"], &loads).unwrap();
        assert_eq!(shares.values().map(|s| s.segments.len()).sum::<usize>(), 2);
    }

    #[test]
    fn a_failed_share_is_planned_again_on_the_fresh_layout() {
        // Node qa failed with segment 1 and the growing rows after 100; meanwhile rows up to 150
        // were sealed into segment 3. Segment 2 (answered by qb) is not asked again.
        let mut fresh = dist();
        for s in &mut fresh.shards {
            s.sealed_seq = 150;
        }
        fresh.segments.push(segment(3, 101, 150, &["qa", "qb"]));
        let mut pending = Pending::default();
        pending.add(NodeShare { segments: vec![1], growing: vec![dist().shards[0].clone()] });
        let shares = plan_of(&fresh, Some(&pending), &["qa"], &NodeLoads::default()).unwrap();
        assert_eq!(summary(&shares), [("qb".to_string(), vec![1, 3], vec![(0, 150)])]);
    }

    #[test]
    fn a_failed_segment_gone_from_the_fresh_layout_means_reading_again() {
        // Compacted away: its rows are now in a segment that other shares may have answered
        // for already, so the scatter starts over rather than skip it or ask for the new one.
        let pending = Pending { segments: HashSet::from([9]), shards: BTreeMap::new() };
        assert_eq!(pending.unplannable_on(&dist()), Some(9));
        let pending = Pending { segments: HashSet::from([1]), shards: BTreeMap::from([(0, 100)]) };
        assert_eq!(pending.unplannable_on(&dist()), None);
    }

    #[test]
    fn a_merge_across_a_failed_growing_part_means_reading_again() {
        // qa answered segment 1 (rows up to 50); qb failed the growing rows after 50. Meanwhile
        // rows up to 100 were sealed and merged with segment 1 into segment 3 (1..=100): asking
        // for segments that start after 50 would skip 51..=100, asking for 3 would count 1..=50
        // twice.
        let mut fresh = dist();
        fresh.segments = vec![segment(3, 1, 100, &["qa", "qb"])];
        let pending = Pending { segments: HashSet::new(), shards: BTreeMap::from([(0, 50)]) };
        assert_eq!(pending.unplannable_on(&fresh), Some(3));
        // A segment sealed after the failed part's position is simply asked for.
        let pending = Pending { segments: HashSet::new(), shards: BTreeMap::from([(0, 100)]) };
        assert_eq!(pending.unplannable_on(&fresh), None);
    }

    #[test]
    fn a_newer_different_leader_view_marks_the_cache_stale() {
        let d = dist();
        let view = |version, segments: &[u64]| ShardView { shard: 0, version, segments: segments.to_vec() };
        assert!(newer_view(&d, &[view(3, &[1, 2])]).is_none(), "same version");
        assert!(newer_view(&d, &[view(2, &[1])]).is_none(), "an older view says nothing");
        assert!(newer_view(&d, &[view(4, &[1, 2])]).is_none(), "newer but the same segments");
        assert_eq!(newer_view(&d, &[view(4, &[1, 2, 3])]).map(|v| v.version), Some(4), "a segment the cache lacks");
        assert!(newer_view(&d, &[view(5, &[2])]).is_some(), "a segment the cache still lists is gone");
    }

    #[test]
    fn unserved_layouts_are_explained() {
        let released = Distribution { released: true, ..dist() };
        let err = plan_of(&released, None, &[], &NodeLoads::default()).unwrap_err();
        assert!(matches!(&err, Error::NotLoaded(_)), "{err}");
        let mut leaderless = dist();
        leaderless.shards = vec![ShardPlacement { shard: 0, leader: String::new(), sealed_seq: 100, replica: 0 }];
        let err = plan_of(&leaderless, None, &[], &NodeLoads::default()).unwrap_err();
        assert!(matches!(&err, Error::Unavailable(m) if m.contains("no query node yet")), "{err}");
    }
}
