//! Search and get over what one query node holds: sealed segments (faiss index, or brute
//! force until the index is built) and growing rows of led shards. Searches run in pieces on
//! the node's [`SearchPool`]; gets and queries on a blocking thread.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use quiver_runtime::{Error, Result};
use quiver_schemas::{
    Column, Expr, Hits, MetricType, PrimaryKey, RowBatch, ScalarValue, SearchParams, SearchResults, SegmentInfo, Seq,
    COUNT_STAR,
};

use super::pool::SearchPool;
use super::shard::{Deletes, Growing, ShardData};
use crate::filter::{evaluate, evaluate_indexed, search_allowed, Bitmap, SegmentIndexes, SegmentVectors};
use crate::rows::RowStore;
use crate::vector::{higher_is_better, FlatVectors, VectorIndex};

/// Filters whose row bitmaps a segment keeps (most recent first): applications repeat their
/// filters (a tenant, a category), and evaluating one costs a pass over the segment's rows.
const CACHED_FILTERS: usize = 8;

/// A filter as the proxy shipped it: its JSON (the key of the segments' filter caches) and the
/// parsed tree.
pub struct Filter {
    pub json: String,
    pub expr: Expr,
}

impl Filter {
    /// The filter of a node request (empty JSON = none).
    pub fn from_json(json: &str) -> Result<Option<Filter>> {
        if json.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(json)
            .map(|expr| Some(Filter { json: json.to_string(), expr }))
            // The proxy parsed the user's filter already: a bad one here is a peer's fault.
            .map_err(|e| Error::Internal(format!("malformed filter from proxy: {e}")))
    }

    /// The partitions the read covers when the proxy narrowed it to some ([`Expr::Partition`],
    /// alone or in the top-level `and`), and the filter without that term.
    fn split_partitions(&self) -> Result<Option<(&[u32], Option<Filter>)>> {
        let rest = match &self.expr {
            Expr::Partition(ids) => return Ok(Some((ids, None))),
            Expr::And(items) => items,
            _ => return Ok(None),
        };
        let Some(ids) = rest.iter().find_map(|e| match e {
            Expr::Partition(ids) => Some(ids.as_slice()),
            _ => None,
        }) else {
            return Ok(None);
        };
        let mut rest: Vec<Expr> = rest.iter().filter(|e| !matches!(e, Expr::Partition(_))).cloned().collect();
        let expr = match rest.len() {
            0 => return Ok(Some((ids, None))),
            1 => rest.remove(0),
            _ => Expr::And(rest),
        };
        let json = serde_json::to_string(&expr).map_err(Error::internal)?;
        Ok(Some((ids, Some(Filter { json, expr }))))
    }
}

/// A read's partitions at one query node: which of its segments hold only rows of them.
#[derive(Default)]
pub struct Scope {
    /// Per segment of the plan: all its rows are in the read's partitions.
    pub inside: Vec<bool>,
    /// The read's filter without its partition term, for those segments.
    pub inside_filter: Option<Filter>,
}

impl Scope {
    /// Leaves out the sealed segments holding no row of the partitions `filter` covers; the
    /// segments holding only such rows are searched without the partition term (often with no
    /// filter at all, the fast path).
    pub fn narrow(segments: &mut Vec<(Arc<Sealed>, Arc<ShardData>)>, filter: Option<&Filter>) -> Result<Scope> {
        let Some((ids, inside_filter)) = filter.map(Filter::split_partitions).transpose()?.flatten() else {
            return Ok(Scope::default());
        };
        segments.retain(|(s, _)| s.info.holds_any(ids));
        let inside = segments.iter().map(|(s, _)| s.info.within(ids)).collect();
        Ok(Scope { inside, inside_filter })
    }

    /// The filter segment `i` is read with.
    fn filter<'a>(&'a self, i: usize, filter: &'a Option<Filter>) -> Option<&'a Filter> {
        if self.inside.get(i).copied().unwrap_or(false) {
            self.inside_filter.as_ref()
        } else {
            filter.as_ref()
        }
    }
}

/// A loaded sealed segment.
pub struct Sealed {
    pub info: SegmentInfo,
    pub rows: RowStore,
    pub pk_index: HashMap<PrimaryKey, Vec<u32>>,
    pub index: Option<VectorIndex>,
    /// Brute-force search structure while no index is built.
    pub flat: Option<FlatVectors>,
    /// (delete-log version, rows of this segment hidden by deletes).
    deleted: Mutex<(u64, usize)>,
    /// Recently used filters (their JSON) and the rows they match, before deletes.
    filters: Mutex<Vec<(String, Arc<Bitmap>)>>,
    /// Indexes of scalar fields, used to answer filters (replaced when the definitions change).
    scalar: std::sync::RwLock<Arc<SegmentIndexes>>,
}

impl Sealed {
    pub fn new(info: SegmentInfo, rows: RowStore, index: Option<VectorIndex>, metric: MetricType) -> Result<Sealed> {
        let flat = match index {
            Some(_) => None,
            None => Some(
                FlatVectors::from_vec(rows.dim, metric, rows.vectors.clone())
                    .map_err(|e| Error::Internal(e.to_string()))?,
            ),
        };
        let pk_index = rows.pk_index();
        Ok(Sealed {
            info,
            rows,
            pk_index,
            index,
            flat,
            deleted: Mutex::new((u64::MAX, 0)),
            filters: Mutex::new(Vec::new()),
            scalar: Default::default(),
        })
    }

    /// The segment's scalar-field indexes.
    pub fn scalar_indexes(&self) -> Arc<SegmentIndexes> {
        self.scalar.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Serves filters with `indexes` from now on (answers do not change, only their cost).
    pub fn set_scalar_indexes(&self, indexes: SegmentIndexes) {
        if let Ok(mut s) = self.scalar.write() {
            *s = Arc::new(indexes);
        }
    }

    /// Rows matching `filter` (deletes not applied), from the cache when it was used lately.
    fn matching(&self, filter: &Filter) -> Arc<Bitmap> {
        if let Ok(mut cache) = self.filters.lock() {
            if let Some(i) = cache.iter().position(|(k, _)| *k == filter.json) {
                let hit = cache.remove(i);
                let bitmap = hit.1.clone();
                cache.insert(0, hit);
                return bitmap;
            }
        }
        let bitmap = Arc::new(evaluate_indexed(&filter.expr, &self.rows, &self.scalar_indexes()));
        if let Ok(mut cache) = self.filters.lock() {
            cache.insert(0, (filter.json.clone(), bitmap.clone()));
            cache.truncate(CACHED_FILTERS);
        }
        bitmap
    }

    fn deleted_count(&self, deletes: &Deletes) -> usize {
        let Ok(mut cache) = self.deleted.lock() else { return 0 };
        if cache.0 != deletes.version {
            let count = deletes
                .by_pk
                .iter()
                .filter_map(|(pk, dseq)| self.pk_index.get(pk).map(|rows| (rows, dseq)))
                .map(|(rows, dseq)| rows.iter().filter(|&&r| self.rows.seqs[r as usize] < *dseq).count())
                .sum();
            *cache = (deletes.version, count);
        }
        cache.1
    }
}

/// One node's share of a search, ready to run.
pub struct SearchPlan {
    pub queries: Vec<f32>,
    pub dim: usize,
    pub k: usize,
    pub params: SearchParams,
    pub metric: MetricType,
    pub segments: Vec<(Arc<Sealed>, Arc<ShardData>)>,
    /// Led shards and the sealed position the caller's view has for each.
    pub growing: Vec<(Arc<ShardData>, Seq)>,
    pub output_fields: Vec<String>,
    /// Only rows matching this are searched (a pre-filter: bitmap ID selector in faiss).
    pub filter: Option<Filter>,
    /// Segments wholly inside the read's partitions, searched without the partition term.
    pub scope: Scope,
    /// When the caller stops waiting: pieces not started by then are not run.
    pub deadline: Option<Instant>,
}

impl SearchPlan {
    /// The filter sealed segment `i` is searched with.
    fn segment_filter(&self, i: usize) -> Option<&Filter> {
        self.scope.filter(i, &self.filter)
    }
}

#[derive(Clone, Copy)]
enum Source {
    Segment(usize),
    Growing(usize),
}

struct Candidate {
    score: f32,
    source: Source,
    row: usize,
}

/// A piece of a search that one pool thread runs: one source, a block of the queries and, for
/// brute force, a range of the source's rows (labels stay row offsets of the whole source, so
/// the pieces' top-k merge like the sources' do).
struct Piece {
    source: Source,
    queries: Range<usize>,
    rows: Range<usize>,
}

/// Multiply-adds (queries × rows × dim) below which brute force is not split further: about
/// half a millisecond on one core, far above what handing a piece to a pool thread costs.
const MIN_PIECE_WORK: usize = 1 << 22;
/// Queries per piece of a search through a faiss index, at least.
const MIN_INDEX_QUERIES: usize = 8;

fn lock_err<T>(_: T) -> Error {
    Error::Internal("shard state lock poisoned".into())
}

/// The growing rows of a led shard, for a request whose view of the layout has sealed rows up to
/// `after`, if they can answer it ([`ShardData::check_view`], checked under the lock).
fn read_growing(shard: &ShardData, after: Seq) -> Result<std::sync::RwLockReadGuard<'_, super::shard::Growing>> {
    let guard = shard.growing.read().map_err(lock_err)?;
    shard.check_view(after)?;
    Ok(guard)
}

/// Cuts a search into pieces for the pool: with `threads` threads and `sources` sources, each
/// source gets up to `threads / sources` pieces (at least one) — brute force split by rows
/// while each piece keeps [`MIN_PIECE_WORK`], faiss searches by blocks of queries.
fn pieces(plan: &SearchPlan, growing: &[&Growing], threads: usize) -> Vec<Piece> {
    let nq = plan.queries.len() / plan.dim.max(1);
    let sources = plan.segments.len() + growing.len();
    let ways = threads.div_ceil(sources.max(1)).max(1);
    let by_rows = |source: Source, n: usize| {
        let work = nq.saturating_mul(n).saturating_mul(plan.dim);
        let parts = (work / MIN_PIECE_WORK).clamp(1, ways).min(n.max(1));
        let per = n.div_ceil(parts).max(1);
        (0..n.max(1)).step_by(per).map(move |r0| Piece { source, queries: 0..nq, rows: r0..(r0 + per).min(n) })
    };
    let mut out = Vec::with_capacity(sources * ways);
    for (i, (seg, _)) in plan.segments.iter().enumerate() {
        let source = Source::Segment(i);
        match &seg.flat {
            Some(flat) if plan.segment_filter(i).is_none() => out.extend(by_rows(source, flat.len())),
            _ => {
                let blocks = ways.min(nq.div_ceil(MIN_INDEX_QUERIES)).max(1);
                let per = nq.div_ceil(blocks).max(1);
                let rows = 0..seg.rows.len();
                out.extend((0..nq).step_by(per).map(|q0| Piece {
                    source,
                    queries: q0..(q0 + per).min(nq),
                    rows: rows.clone(),
                }));
            }
        }
    }
    for (i, g) in growing.iter().enumerate() {
        if !g.rows.is_empty() {
            out.extend(by_rows(Source::Growing(i), g.flat.len()));
        }
    }
    out
}

/// Runs one piece: `nq × k` distances and row labels (-1 = none) for its block of queries.
fn run_piece(
    plan: &SearchPlan,
    growing: &[&Growing],
    matching: &[Option<Bitmap>],
    piece: &Piece,
) -> Result<(Vec<f32>, Vec<i64>)> {
    if plan.deadline.is_some_and(|d| Instant::now() >= d) {
        let nq = plan.queries.len() / plan.dim.max(1);
        return Err(Error::DeadlineExceeded(format!(
            "the search of {nq} queries did not finish before the caller's deadline; send fewer queries per \
             request, build an index on the collection, or allow the call more time"
        )));
    }
    let (k, dim) = (plan.k, plan.dim);
    let queries = &plan.queries[piece.queries.start * dim..piece.queries.end * dim];
    match piece.source {
        Source::Segment(i) => {
            let (seg, shard) = &plan.segments[i];
            let deletes = shard.deletes.read().map_err(lock_err)?;
            let hidden = |r: usize| deletes.hides(&seg.rows.pks[r], seg.rows.seqs[r]);
            if let Some(filter) = plan.segment_filter(i) {
                return search_filtered(seg, filter, &deletes, queries, k, &plan.params, plan.metric);
            }
            if let Some(index) = &seg.index {
                let count = seg.deleted_count(&deletes);
                return index
                    .search_filtered(queries, k, &plan.params, &|l| hidden(l as usize), count)
                    .map_err(|e| Error::Internal(format!("faiss search of segment {}: {e}", seg.info.id)));
            }
            let flat = seg.flat.as_ref().ok_or_else(|| {
                Error::Internal(format!("segment {} has neither an index nor its vectors", seg.info.id))
            })?;
            Ok(flat.search_rows(queries, k, piece.rows.clone(), &hidden))
        }
        Source::Growing(i) => {
            let ((shard, after), g) = (&plan.growing[i], growing[i]);
            let deletes = shard.deletes.read().map_err(lock_err)?;
            let matching = matching.get(i).and_then(Option::as_ref);
            let skip = |r: usize| {
                g.rows.seqs[r] <= *after
                    || matching.is_some_and(|m| !m.get(r))
                    || deletes.hides(&g.rows.pks[r], g.rows.seqs[r])
            };
            Ok(g.flat.search_rows(queries, k, piece.rows.clone(), &skip))
        }
    }
}

/// Queries, top-k and `ef` up to which a search of one HNSW segment counts as quick.
const QUICK_QUERIES: usize = 4;
const QUICK_TOP_K: usize = 100;
const QUICK_EF: u32 = 512;

/// Whether `plan` is a quick search: a few queries, no filter, through the HNSW index of one
/// sealed segment, with no growing rows to scan beside it — a fraction of a millisecond, bounded
/// by `ef` whatever the segment's size. Such a search may run where the request arrived
/// instead of being handed to another thread and back (two wake-ups cost about as much).
pub fn is_quick(plan: &SearchPlan) -> bool {
    let nq = plan.queries.len() / plan.dim.max(1);
    let hnsw = |seg: &Sealed| seg.index.as_ref().is_some_and(|i| i.index_type() == quiver_schemas::IndexType::Hnsw);
    let no_growing = plan.growing.iter().all(|(shard, _)| shard.growing.read().is_ok_and(|g| g.rows.is_empty()));
    nq <= QUICK_QUERIES
        && plan.k <= QUICK_TOP_K
        && plan.params.ef <= QUICK_EF
        && (0..plan.segments.len()).all(|i| plan.segment_filter(i).is_none())
        && matches!(plan.segments.as_slice(), [(seg, _)] if hnsw(seg))
        && no_growing
}

/// Runs a search plan: top-k per query across every source, best first. The sources are cut
/// into pieces run side by side on `pool` (this thread waits: it holds the growing rows' read
/// locks, which the merge needs, so it must not be a pool thread that could pick up another
/// request's piece meanwhile); pieces take their shard's delete lock themselves.
///
/// Returns the results and the rows searched (sealed and growing, deleted ones included). Each
/// piece is a `search_segment` span under the caller's current span (tracing on).
pub fn run_search(plan: &SearchPlan, pool: &SearchPool) -> Result<(SearchResults, usize)> {
    let nq = plan.queries.len() / plan.dim.max(1);
    let k = plan.k;
    let guards: Vec<_> = plan.growing.iter().map(|(s, after)| read_growing(s, *after)).collect::<Result<_>>()?;
    let growing: Vec<&Growing> = guards.iter().map(|g| &**g).collect();
    let rows_searched = plan.segments.iter().map(|(s, _)| s.rows.len()).sum::<usize>()
        + growing.iter().map(|g| g.rows.len()).sum::<usize>();
    let matching: Vec<Option<Bitmap>> =
        growing.iter().map(|g| plan.filter.as_ref().map(|f| evaluate(&f.expr, &g.rows))).collect();
    let pieces = pieces(plan, &growing, pool.threads());
    let parent = tracing::Span::current();
    let found = pool.run(pieces.iter().collect(), |piece| {
        // Entered on the pool thread too: a piece's span is recorded only inside a recorded one.
        let _parent = parent.enter();
        let span = piece_span(&parent, plan, piece);
        let _entered = span.enter();
        run_piece(plan, &growing, &matching, piece)
    });
    let mut per_query: Vec<Vec<Candidate>> = (0..nq).map(|_| Vec::with_capacity(k * 2)).collect();
    for (piece, found) in pieces.iter().zip(found) {
        let (d, l) = found?;
        collect(&mut per_query[piece.queries.clone()], &d, &l, k, piece.source);
    }
    let better = higher_is_better(plan.metric);
    let mut results = Vec::with_capacity(nq);
    for mut cands in per_query {
        if better {
            cands.sort_by(|a, b| b.score.total_cmp(&a.score));
        } else {
            cands.sort_by(|a, b| a.score.total_cmp(&b.score));
        }
        let mut hits = Hits {
            pks: Vec::with_capacity(k),
            scores: Vec::with_capacity(k),
            columns: plan.output_fields.iter().map(|f| Column { name: f.clone(), values: Vec::new() }).collect(),
        };
        let mut seen = HashSet::with_capacity(k);
        for c in cands {
            if hits.pks.len() == k {
                break;
            }
            let rows: &RowStore = match c.source {
                Source::Segment(i) => &plan.segments[i].0.rows,
                Source::Growing(i) => &growing[i].rows,
            };
            let pk = &rows.pks[c.row];
            if !seen.insert(pk.clone()) {
                continue;
            }
            hits.pks.push(pk.clone());
            hits.scores.push(c.score);
            if !plan.output_fields.is_empty() {
                for (col, out) in rows.output_columns(&[c.row], &plan.output_fields).into_iter().zip(&mut hits.columns)
                {
                    out.values.extend(col.values);
                }
            }
        }
        results.push(hits);
    }
    Ok((SearchResults { results }, rows_searched))
}

/// The span of one piece of a search: the segment (or growing shard) and the block of queries
/// and rows it covers.
fn piece_span(parent: &tracing::Span, plan: &SearchPlan, piece: &Piece) -> tracing::Span {
    let (kind, id, indexed) = match piece.source {
        Source::Segment(i) => ("sealed", plan.segments[i].0.info.id, plan.segments[i].0.index.is_some()),
        Source::Growing(i) => ("growing", plan.growing[i].0.shard as u64, false),
    };
    tracing::debug_span!(
        parent: parent,
        "search_segment",
        kind,
        segment = id,
        indexed,
        queries = piece.queries.len(),
        rows = piece.rows.len(),
    )
}

/// Top-k of one sealed segment among the rows matching `filter` and not deleted: the filter's
/// bitmap (from the segment's cache) less the deleted rows, searched by
/// [`search_allowed`]. `nq × k` distances and row labels (-1 = none).
pub fn search_filtered(
    seg: &Sealed,
    filter: &Filter,
    deletes: &Deletes,
    queries: &[f32],
    k: usize,
    params: &SearchParams,
    metric: MetricType,
) -> Result<(Vec<f32>, Vec<i64>)> {
    let mut allowed = Bitmap::clone(&seg.matching(filter));
    if !deletes.by_pk.is_empty() {
        allowed.and_not(|r| deletes.hides(&seg.rows.pks[r], seg.rows.seqs[r]));
    }
    let vectors = SegmentVectors { rows: &seg.rows, index: seg.index.as_ref(), flat: seg.flat.as_ref() };
    search_allowed(&vectors, &allowed, queries, k, params, metric)
        .map_err(|e| Error::Internal(format!("faiss search of segment {}: {e}", seg.info.id)))
}

fn collect(per_query: &mut [Vec<Candidate>], d: &[f32], l: &[i64], k: usize, source: Source) {
    for (q, cands) in per_query.iter_mut().enumerate() {
        for j in q * k..(q + 1) * k {
            if let (Some(&label), Some(&score)) = (l.get(j), d.get(j)) {
                if label >= 0 {
                    cands.push(Candidate { score, source, row: label as usize });
                }
            }
        }
    }
}

/// Latest visible version of each requested key among this node's sources.
/// Only rows of `partitions` count, when it names any.
pub fn run_get(
    pks: &[PrimaryKey],
    fields: &[String],
    segments: &[(Arc<Sealed>, Arc<ShardData>)],
    growing: &[(Arc<ShardData>, Seq)],
    dim: usize,
    partitions: &[u32],
) -> Result<(RowBatch, Vec<Seq>)> {
    let allowed = |rows: &RowStore, r: usize| partitions.is_empty() || partitions.contains(&rows.partition(r));
    let mut seqs = Vec::new();
    let mut out = RowBatch { dim: dim as u32, ..Default::default() };
    let mut per_field: Vec<Column> = fields.iter().map(|f| Column { name: f.clone(), values: Vec::new() }).collect();
    let guards: Vec<_> = growing.iter().map(|(s, after)| read_growing(s, *after)).collect::<Result<_>>()?;
    // The newest live version of each key: sealed segments through their key index, growing
    // rows in one pass each (a key lookup per row, not a scan per key: `pk in [...]` with
    // many keys over many growing rows stays linear).
    let mut best: Vec<Option<(Seq, &RowStore, usize)>> = vec![None; pks.len()];
    let mut wanted: HashMap<&PrimaryKey, Vec<usize>> = HashMap::with_capacity(pks.len());
    for (i, pk) in pks.iter().enumerate() {
        wanted.entry(pk).or_default().push(i);
    }
    for (seg, shard) in segments {
        let deletes = shard.deletes.read().map_err(lock_err)?;
        for (i, pk) in pks.iter().enumerate() {
            for &r in seg.pk_index.get(pk).map(Vec::as_slice).unwrap_or(&[]) {
                let seq = seg.rows.seqs[r as usize];
                if !deletes.hides(pk, seq) && best[i].is_none_or(|b| seq > b.0) && allowed(&seg.rows, r as usize) {
                    best[i] = Some((seq, &seg.rows, r as usize));
                }
            }
        }
    }
    for ((shard, after), g) in growing.iter().zip(&guards) {
        let deletes = shard.deletes.read().map_err(lock_err)?;
        for (r, (p, seq)) in g.rows.pks.iter().zip(&g.rows.seqs).enumerate() {
            let Some(slots) = wanted.get(p) else { continue };
            if *seq <= *after || deletes.hides(p, *seq) || !allowed(&g.rows, r) {
                continue;
            }
            for &i in slots {
                if best[i].is_none_or(|b| *seq > b.0) {
                    best[i] = Some((*seq, &g.rows, r));
                }
            }
        }
    }
    for (pk, best) in pks.iter().zip(best) {
        if let Some((seq, rows, r)) = best {
            let batch = rows.to_batch(&[r], fields);
            out.pks.push(pk.clone());
            out.vectors.extend(batch.vectors);
            for (col, add) in per_field.iter_mut().zip(batch.columns) {
                col.values.extend(add.values);
            }
            seqs.push(seq);
        }
    }
    out.columns = per_field;
    Ok((out, seqs))
}

/// One node's share of a query, ready to run.
pub struct QueryPlan {
    pub filter: Option<Filter>,
    /// Segments wholly inside the read's partitions, read without the partition term.
    pub scope: Scope,
    pub output_fields: Vec<String>,
    /// Rows to return at most, in primary-key order (offset + limit; 0 = all).
    pub limit: u64,
    pub dim: usize,
    /// Name of the vector field: returned (as `vectors`) only when listed in `output_fields`.
    pub vector_field: String,
    pub segments: Vec<(Arc<Sealed>, Arc<ShardData>)>,
    pub growing: Vec<(Arc<ShardData>, Seq)>,
}

fn offer<'a>(best: &mut HashMap<&'a PrimaryKey, (Seq, usize, usize)>, pk: &'a PrimaryKey, at: (Seq, usize, usize)) {
    let e = best.entry(pk).or_insert(at);
    if at.0 > e.0 {
        *e = at;
    }
}

/// Rows matching the filter, latest visible version per key, in primary-key order.
pub fn run_query(plan: &QueryPlan) -> Result<(RowBatch, Vec<Seq>)> {
    let guards: Vec<_> = plan.growing.iter().map(|(s, after)| read_growing(s, *after)).collect::<Result<_>>()?;
    // (pk, seq, source, row); a key written twice keeps its latest visible version.
    let mut best: HashMap<&PrimaryKey, (Seq, usize, usize)> = HashMap::new();
    let mut stores: Vec<&RowStore> = Vec::new();
    for (i, (seg, shard)) in plan.segments.iter().enumerate() {
        let deletes = shard.deletes.read().map_err(lock_err)?;
        let src = stores.len();
        stores.push(&seg.rows);
        let matching = plan.scope.filter(i, &plan.filter).map(|f| seg.matching(f));
        for r in 0..seg.rows.len() {
            let (pk, seq) = (&seg.rows.pks[r], seg.rows.seqs[r]);
            if matching.as_ref().is_none_or(|m| m.get(r)) && !deletes.hides(pk, seq) {
                offer(&mut best, pk, (seq, src, r));
            }
        }
    }
    for ((shard, after), g) in plan.growing.iter().zip(&guards) {
        let deletes = shard.deletes.read().map_err(lock_err)?;
        let src = stores.len();
        stores.push(&g.rows);
        let matching = plan.filter.as_ref().map(|f| evaluate(&f.expr, &g.rows));
        for r in 0..g.rows.len() {
            let (pk, seq) = (&g.rows.pks[r], g.rows.seqs[r]);
            if seq > *after && matching.as_ref().is_none_or(|m| m.get(r)) && !deletes.hides(pk, seq) {
                offer(&mut best, pk, (seq, src, r));
            }
        }
    }
    if plan.output_fields.len() == 1 && plan.output_fields[0] == COUNT_STAR {
        // Counted here: only the number travels back (the proxy adds the nodes' counts).
        let count = ScalarValue::Int64(i64::try_from(best.len()).unwrap_or(i64::MAX));
        let columns = vec![Column { name: COUNT_STAR.into(), values: vec![count] }];
        return Ok((RowBatch { columns, ..Default::default() }, Vec::new()));
    }
    let mut hits: Vec<(&PrimaryKey, (Seq, usize, usize))> = best.into_iter().collect();
    hits.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if plan.limit > 0 {
        hits.truncate(usize::try_from(plan.limit).unwrap_or(usize::MAX));
    }
    let with_vectors = plan.output_fields.contains(&plan.vector_field);
    let fields: Vec<String> = plan.output_fields.iter().filter(|f| **f != plan.vector_field).cloned().collect();
    let mut out = RowBatch { dim: plan.dim as u32, ..Default::default() };
    let mut columns: Vec<Column> = fields.iter().map(|f| Column { name: f.clone(), values: Vec::new() }).collect();
    let mut seqs = Vec::with_capacity(hits.len());
    for (pk, (seq, src, row)) in hits {
        out.pks.push(pk.clone());
        seqs.push(seq);
        if with_vectors {
            out.vectors.extend_from_slice(stores[src].vector(row));
        }
        if !fields.is_empty() {
            for (col, add) in columns.iter_mut().zip(stores[src].output_columns(&[row], &fields)) {
                col.values.extend(add.values);
            }
        }
    }
    out.columns = columns;
    Ok((out, seqs))
}
