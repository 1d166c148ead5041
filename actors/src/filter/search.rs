//! Filtered vector search over one sealed segment: the top-k among the rows a [`Bitmap`]
//! allows, through the segment's faiss index with the bitmap as its ID selector (a pre-filter),
//! or by an exact scan of those rows when few match. The query node runs this for every
//! filtered search of a sealed segment (after its filter cache and deletes have made the
//! bitmap); `quiver-bench filter` measures it against raw faiss.

use quiver_schemas::{MetricType, SearchParams};

use super::Bitmap;
use crate::rows::RowStore;
use crate::vector::{dot, higher_is_better, l2_sq, norm, worst_distance, FlatVectors, Result, VectorIndex};

/// A filtered search over an indexed segment is exact (brute force over the matching rows)
/// when at most this many rows match, or fewer than 1 in [`EXACT_FRACTION`]: graph and
/// cluster indexes lose recall when nearly every neighbour is filtered out, and scanning a few
/// thousand vectors is cheaper than the index walk anyway.
const EXACT_MAX_ROWS: usize = 4096;
const EXACT_FRACTION: usize = 20;
/// What a sealed segment is searched with: its rows (the raw vectors, for the exact scan) and
/// its faiss index, or, while it has none, its brute-force structure.
pub struct SegmentVectors<'a> {
    pub rows: &'a RowStore,
    pub index: Option<&'a VectorIndex>,
    pub flat: Option<&'a FlatVectors>,
}

/// Top-k of each query among the rows set in `allowed`: by the index with `allowed` as its ID
/// selector when many rows match, else by an exact scan of the allowed rows (or by the
/// brute-force structure of a segment without index). `nq × k` distances and row labels
/// (-1 = none).
pub fn search_allowed(
    seg: &SegmentVectors<'_>,
    allowed: &Bitmap,
    queries: &[f32],
    k: usize,
    params: &SearchParams,
    metric: MetricType,
) -> Result<(Vec<f32>, Vec<i64>)> {
    let count = allowed.count_ones();
    if count == 0 {
        let nq = queries.len() / seg.rows.dim.max(1);
        return Ok((vec![worst_distance(metric); nq * k], vec![-1; nq * k]));
    }
    Ok(match (seg.index, seg.flat) {
        (Some(index), _) if count > EXACT_MAX_ROWS && count * EXACT_FRACTION > seg.rows.len() => {
            index.search_selected(queries, k, params, allowed.as_bytes())?
        }
        (None, Some(flat)) => flat.search(queries, k, &|r| !allowed.get(r)),
        _ => exact(seg.rows, allowed, queries, k, metric),
    })
}

/// Exact top-k over the allowed rows of `rows` (raw vectors): `nq × k` distances and row
/// labels, padded with -1 / the worst distance like faiss.
fn exact(rows: &RowStore, allowed: &Bitmap, queries: &[f32], k: usize, metric: MetricType) -> (Vec<f32>, Vec<i64>) {
    let dim = rows.dim.max(1);
    let nq = queries.len() / dim;
    let better = higher_is_better(metric);
    let mut out_d = vec![worst_distance(metric); nq * k];
    let mut out_l = vec![-1i64; nq * k];
    let norms: Vec<f32> = match metric {
        MetricType::Cosine => allowed.ones().map(|r| norm(rows.vector(r))).collect(),
        _ => Vec::new(),
    };
    for (q, query) in queries.chunks_exact(dim).enumerate() {
        let qn = norm(query);
        let mut scored: Vec<(f32, usize)> = allowed
            .ones()
            .enumerate()
            .map(|(j, r)| {
                let v = rows.vector(r);
                let s = match metric {
                    MetricType::L2 => l2_sq(query, v),
                    MetricType::Ip => dot(query, v),
                    MetricType::Cosine => {
                        let denom = qn * norms[j];
                        if denom > 0.0 {
                            dot(query, v) / denom
                        } else {
                            0.0
                        }
                    }
                };
                (s, r)
            })
            .collect();
        let take = k.min(scored.len());
        let cmp = |a: &(f32, usize), b: &(f32, usize)| if better { b.0.total_cmp(&a.0) } else { a.0.total_cmp(&b.0) };
        if take > 0 && take < scored.len() {
            scored.select_nth_unstable_by(take - 1, cmp);
            scored.truncate(take);
        }
        scored.sort_by(cmp);
        for (j, (s, r)) in scored.into_iter().enumerate() {
            out_d[q * k + j] = s;
            out_l[q * k + j] = r as i64;
        }
    }
    (out_d, out_l)
}
