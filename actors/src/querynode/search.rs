//! Search and get over what one query node holds: sealed segments (faiss index, or brute
//! force until the index is built) and growing rows of led shards. Runs on a blocking thread.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use quiver_runtime::{Error, Result};
use quiver_schemas::{Column, Hits, MetricType, PrimaryKey, RowBatch, SearchParams, SearchResults, SegmentInfo, Seq};

use super::shard::{Deletes, ShardData};
use crate::rows::RowStore;
use crate::vector::{higher_is_better, FlatVectors, VectorIndex};

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
        Ok(Sealed { info, rows, pk_index, index, flat, deleted: Mutex::new((u64::MAX, 0)) })
    }

    pub fn mem_bytes(&self) -> u64 {
        self.rows.mem_bytes()
            + self.index.as_ref().map_or(0, |i| i.mem_bytes())
            + self.flat.as_ref().map_or(0, |f| f.mem_bytes())
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

fn lock_err<T>(_: T) -> Error {
    Error::Internal("shard state lock poisoned".into())
}

/// Runs a search plan: top-k per query across every source, best first.
pub fn run_search(plan: &SearchPlan) -> Result<SearchResults> {
    let nq = plan.queries.len() / plan.dim.max(1);
    let k = plan.k;
    let mut per_query: Vec<Vec<Candidate>> = (0..nq).map(|_| Vec::with_capacity(k * 2)).collect();
    for (i, (seg, shard)) in plan.segments.iter().enumerate() {
        let deletes = shard.deletes.read().map_err(lock_err)?;
        let hidden = |label: i64| {
            let r = label as usize;
            deletes.hides(&seg.rows.pks[r], seg.rows.seqs[r])
        };
        let (d, l) = if let Some(index) = &seg.index {
            let count = seg.deleted_count(&deletes);
            index
                .search_filtered(&plan.queries, k, &plan.params, &hidden, count)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?
        } else if let Some(flat) = &seg.flat {
            flat.search(&plan.queries, k, &|r| hidden(r as i64))
        } else {
            continue;
        };
        collect(&mut per_query, &d, &l, k, Source::Segment(i));
    }
    let growing: Vec<_> =
        plan.growing.iter().map(|(s, _)| s.growing.read().map_err(lock_err)).collect::<Result<_>>()?;
    for (i, ((shard, after), g)) in plan.growing.iter().zip(&growing).enumerate() {
        if g.rows.is_empty() {
            continue;
        }
        let deletes = shard.deletes.read().map_err(lock_err)?;
        let skip = |r: usize| g.rows.seqs[r] <= *after || deletes.hides(&g.rows.pks[r], g.rows.seqs[r]);
        let (d, l) = g.flat.search(&plan.queries, k, &skip);
        collect(&mut per_query, &d, &l, k, Source::Growing(i));
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
    Ok(SearchResults { results })
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
pub fn run_get(
    pks: &[PrimaryKey],
    fields: &[String],
    segments: &[(Arc<Sealed>, Arc<ShardData>)],
    growing: &[(Arc<ShardData>, Seq)],
    dim: usize,
) -> Result<(RowBatch, Vec<Seq>)> {
    let mut seqs = Vec::new();
    let mut out = RowBatch { dim: dim as u32, ..Default::default() };
    let mut per_field: Vec<Column> = fields.iter().map(|f| Column { name: f.clone(), values: Vec::new() }).collect();
    let guards: Vec<_> = growing.iter().map(|(s, _)| s.growing.read().map_err(lock_err)).collect::<Result<_>>()?;
    for pk in pks {
        let mut best: Option<(Seq, &RowStore, usize)> = None;
        for (seg, shard) in segments {
            let deletes = shard.deletes.read().map_err(lock_err)?;
            for &r in seg.pk_index.get(pk).map(Vec::as_slice).unwrap_or(&[]) {
                let seq = seg.rows.seqs[r as usize];
                if !deletes.hides(pk, seq) && best.is_none_or(|b| seq > b.0) {
                    best = Some((seq, &seg.rows, r as usize));
                }
            }
        }
        for ((shard, after), g) in growing.iter().zip(&guards) {
            let deletes = shard.deletes.read().map_err(lock_err)?;
            for (r, (p, seq)) in g.rows.pks.iter().zip(&g.rows.seqs).enumerate() {
                if p == pk && *seq > *after && !deletes.hides(pk, *seq) && best.is_none_or(|b| *seq > b.0) {
                    best = Some((*seq, &g.rows, r));
                }
            }
        }
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
