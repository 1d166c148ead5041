//! [`FlatVectors`]: exact brute-force search over a growing segment's rows.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::{normalize, worst_distance, MetricType, Result, VectorError, FAISS_THREADS};

/// Lanes of the unrolled kernels: 8 independent accumulators let the compiler keep them in
/// SIMD registers (2×SSE or 1×AVX) and break the floating-point dependency chain.
const LANES: usize = 8;

/// Dot product of two equal-length slices.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Squared L2 distance of two equal-length slices.
#[inline]
pub(crate) fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        let d = x - y;
        s += d * d;
    }
    s
}

/// A top-k candidate; `bad` is the distance turned into "smaller is better".
#[derive(Clone, Copy)]
struct Cand {
    bad: f32,
    row: usize,
}

impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bad.total_cmp(&other.bad).then(self.row.cmp(&other.row))
    }
}

/// Exact search over an appendable set of rows (a growing segment). Labels are row offsets.
///
/// COSINE rows are normalised when appended (so [`FlatVectors::vectors`] returns normalised
/// rows) and queries are normalised at search time. Distances follow the same convention as
/// [`super::VectorIndex`]: squared L2 for L2, inner product for IP / COSINE.
#[derive(Debug, Clone)]
pub struct FlatVectors {
    dim: usize,
    metric: MetricType,
    data: Vec<f32>,
}

impl FlatVectors {
    /// An empty set of `dim`-dimensional rows.
    pub fn new(dim: usize, metric: MetricType) -> Self {
        FlatVectors { dim, metric, data: Vec::new() }
    }

    /// Takes ownership of existing rows (`n * dim` floats).
    pub fn from_vec(dim: usize, metric: MetricType, mut vectors: Vec<f32>) -> Result<Self> {
        check_rows(dim, vectors.len())?;
        if metric == MetricType::Cosine {
            normalize(&mut vectors, dim);
        }
        Ok(FlatVectors { dim, metric, data: vectors })
    }

    /// Appends rows (`n * dim` floats); they get the next row offsets.
    pub fn push(&mut self, vectors: &[f32]) -> Result<()> {
        check_rows(self.dim, vectors.len())?;
        let start = self.data.len();
        self.data.extend_from_slice(vectors);
        if self.metric == MetricType::Cosine {
            normalize(&mut self.data[start..], self.dim);
        }
        Ok(())
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The metric searches use.
    pub fn metric(&self) -> MetricType {
        self.metric
    }

    /// The stored rows, row-major (normalised for COSINE).
    pub fn vectors(&self) -> &[f32] {
        &self.data
    }

    /// Keeps only the first `rows` rows.
    pub fn truncate(&mut self, rows: usize) {
        self.data.truncate(rows.saturating_mul(self.dim));
    }

    /// Removes all rows.
    pub fn clear(&mut self) {
        self.data.clear();
    }

    /// Approximate heap bytes held.
    pub fn mem_bytes(&self) -> u64 {
        (self.data.capacity() * std::mem::size_of::<f32>()) as u64
    }

    /// Exact top-`k` for each query in `queries` (`nq * dim` floats; a trailing partial row is
    /// ignored), skipping rows for which `skip(row)` is true (e.g. deleted or not yet visible).
    /// Returns `nq * k` distances and labels, best first; missing hits are label `-1` with
    /// [`super::worst_distance`]. Ties are broken by the lower row offset.
    ///
    /// Large batches are split across threads (the count set by
    /// [`super::set_faiss_threads`], else all cores); `skip` is evaluated once per row, up front.
    pub fn search(&self, queries: &[f32], k: usize, skip: &dyn Fn(usize) -> bool) -> (Vec<f32>, Vec<i64>) {
        let nq = queries.len().checked_div(self.dim).unwrap_or(0);
        let total = nq.saturating_mul(k);
        let mut out_d = vec![worst_distance(self.metric); total];
        let mut out_l = vec![-1i64; total];
        let n = self.len();
        if total == 0 || n == 0 {
            return (out_d, out_l);
        }
        let skipped: Vec<bool> = (0..n).map(skip).collect();
        let threads = self.threads_for(nq, n);
        let per = nq.div_ceil(threads);
        let chunk = per * k;
        if threads <= 1 {
            self.search_range(&queries[..nq * self.dim], k, &skipped, &mut out_d, &mut out_l);
        } else {
            std::thread::scope(|s| {
                let parts = out_d.chunks_mut(chunk).zip(out_l.chunks_mut(chunk));
                for (t, (od, ol)) in parts.enumerate() {
                    let q0 = t * per;
                    let q1 = (q0 + per).min(nq);
                    let qs = &queries[q0 * self.dim..q1 * self.dim];
                    let skipped = &skipped;
                    s.spawn(move || self.search_range(qs, k, skipped, od, ol));
                }
            });
        }
        (out_d, out_l)
    }

    /// How many threads a search of `nq` queries over `n` rows should use.
    fn threads_for(&self, nq: usize, n: usize) -> usize {
        const MIN_WORK: usize = 1 << 22; // ~4M multiply-adds per thread
        let work = nq.saturating_mul(n).saturating_mul(self.dim);
        if nq < 2 || work < 2 * MIN_WORK {
            return 1;
        }
        let cores = match FAISS_THREADS.load(std::sync::atomic::Ordering::Relaxed) {
            0 => std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1),
            t => t,
        };
        cores.min(nq).min(work / MIN_WORK).max(1)
    }

    /// Searches the queries in `qs`, writing `k` results per query to `od` / `ol`.
    fn search_range(&self, qs: &[f32], k: usize, skipped: &[bool], od: &mut [f32], ol: &mut [i64]) {
        let higher = super::higher_is_better(self.metric);
        let mut heap: BinaryHeap<Cand> = BinaryHeap::with_capacity(k + 1);
        let mut qbuf = vec![0f32; self.dim];
        for (qi, q) in qs.chunks_exact(self.dim).enumerate() {
            qbuf.copy_from_slice(q);
            if self.metric == MetricType::Cosine {
                normalize(&mut qbuf, self.dim);
            }
            heap.clear();
            let mut worst = f32::INFINITY;
            for (row, v) in self.data.chunks_exact(self.dim).enumerate() {
                if skipped[row] {
                    continue;
                }
                let bad = if higher { -dot(&qbuf, v) } else { l2_sq(&qbuf, v) };
                if heap.len() < k {
                    heap.push(Cand { bad, row });
                    if heap.len() == k {
                        worst = heap.peek().map_or(f32::INFINITY, |c| c.bad);
                    }
                } else if bad < worst {
                    if let Some(mut top) = heap.peek_mut() {
                        *top = Cand { bad, row };
                    }
                    worst = heap.peek().map_or(f32::INFINITY, |c| c.bad);
                }
            }
            let best = std::mem::take(&mut heap).into_sorted_vec();
            for (r, c) in best.iter().enumerate() {
                od[qi * k + r] = if higher { -c.bad } else { c.bad };
                ol[qi * k + r] = c.row as i64;
            }
            heap = BinaryHeap::from(best);
        }
    }
}

fn check_rows(dim: usize, len: usize) -> Result<()> {
    if dim == 0 {
        return Err(VectorError::InvalidParams("dim is 0; pass the vector field's dimension".into()));
    }
    if len.checked_rem(dim) != Some(0) {
        return Err(VectorError::InvalidParams(format!(
            "{len} floats is not a multiple of dim {dim}; pass whole rows (rows * dim floats)"
        )));
    }
    Ok(())
}
