//! [`FlatVectors`]: exact brute-force search over rows without an index (growing rows, and
//! sealed segments whose index is not built yet): SIMD kernels for a few queries, BLAS
//! (`sgemm`) for batches.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use std::ops::Range;

use super::blas::inner_products;
use super::{normalize, worst_distance, MetricType, Result, VectorError};

/// Lanes of the portable kernels: 8 independent accumulators let the compiler keep them in
/// SIMD registers (2×SSE) and break the floating-point dependency chain.
const LANES: usize = 8;

/// The distance kernels this CPU runs best, chosen once: AVX2 with FMA when the CPU has them
/// (four 8-float accumulators, fused multiply-adds), else the portable ones (SSE2, which every
/// x86-64 has). The binary is built for the baseline CPU, so the fast ones are compiled with
/// `#[target_feature]` and only called after the run-time check.
struct Kernels {
    dot: fn(&[f32], &[f32]) -> f32,
    l2_sq: fn(&[f32], &[f32]) -> f32,
    name: &'static str,
}

fn kernels() -> &'static Kernels {
    static KERNELS: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
    KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Kernels { dot: avx2::dot, l2_sq: avx2::l2_sq, name: "avx2+fma" };
        }
        Kernels { dot: dot_portable, l2_sq: l2_sq_portable, name: "portable" }
    })
}

/// Which brute-force kernels run here (`avx2+fma` or `portable`).
pub fn kernel_level() -> &'static str {
    kernels().name
}

/// Dot product of two equal-length slices.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

/// Squared L2 distance of two equal-length slices.
#[inline]
pub(crate) fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2_sq)(a, b)
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
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

fn l2_sq_portable(a: &[f32], b: &[f32]) -> f32 {
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Safe entry points: [`super::kernels`] hands them out only after checking that the CPU
    /// has AVX2 and FMA.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: selected only when `avx2` and `fma` were detected at run time.
        unsafe { dot_fma(a, b) }
    }

    pub fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as for `dot`.
        unsafe { l2_sq_fma(a, b) }
    }

    /// Sum of the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn sum8(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// `each(x, y, acc)` over 8 floats a step into four accumulators in turn (independent
    /// chains), then `tail` over the last `n % 8`, summed.
    #[target_feature(enable = "avx2,fma")]
    fn reduce(
        a: &[f32],
        b: &[f32],
        each: impl Fn(__m256, __m256, __m256) -> __m256,
        tail: impl Fn(f32, f32) -> f32,
    ) -> f32 {
        let n = a.len().min(b.len());
        let ((ca, ra), (cb, rb)) = (a[..n].as_chunks::<8>(), b[..n].as_chunks::<8>());
        // SAFETY: an `&[f32; 8]` is 8 readable floats; loadu has no alignment requirement.
        let load = |v: &[f32; 8]| unsafe { _mm256_loadu_ps(v.as_ptr()) };
        let mut acc = [_mm256_setzero_ps(); 4];
        let (xs, ys) = (ca.chunks_exact(4), cb.chunks_exact(4));
        let (xr, yr) = (xs.remainder(), ys.remainder());
        for (x, y) in xs.zip(ys) {
            for j in 0..4 {
                acc[j] = each(load(&x[j]), load(&y[j]), acc[j]);
            }
        }
        for (x, y) in xr.iter().zip(yr) {
            acc[0] = each(load(x), load(y), acc[0]);
        }
        let all = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut s = sum8(all);
        for (x, y) in ra.iter().zip(rb) {
            s += tail(*x, *y);
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
        reduce(a, b, |x, y, acc| _mm256_fmadd_ps(x, y, acc), |x, y| x * y)
    }

    #[target_feature(enable = "avx2,fma")]
    fn l2_sq_fma(a: &[f32], b: &[f32]) -> f32 {
        reduce(
            a,
            b,
            |x, y, acc| {
                let d = _mm256_sub_ps(x, y);
                _mm256_fmadd_ps(d, d, acc)
            },
            |x, y| (x - y) * (x - y),
        )
    }
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

/// The best `k` rows of one query seen so far: a max-heap on "badness" whose top is the one
/// to evict, and that top's badness cached for the cheap rejection of most rows.
struct TopK {
    k: usize,
    heap: BinaryHeap<Cand>,
    worst: f32,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK { k, heap: BinaryHeap::with_capacity(k + 1), worst: f32::INFINITY }
    }

    /// Rows must be offered in increasing row order: a tie keeps the lower row.
    #[inline]
    fn offer(&mut self, bad: f32, row: usize) {
        if self.heap.len() < self.k {
            self.heap.push(Cand { bad, row });
            if self.heap.len() == self.k {
                self.worst = self.heap.peek().map_or(f32::INFINITY, |c| c.bad);
            }
        } else if bad < self.worst {
            if let Some(mut top) = self.heap.peek_mut() {
                *top = Cand { bad, row };
            }
            self.worst = self.heap.peek().map_or(f32::INFINITY, |c| c.bad);
        }
    }

    /// Writes the hits best first (`distance(bad)` turns badness back into the metric's
    /// distance) and empties the heap for the next query, keeping its allocation.
    fn drain_into(&mut self, od: &mut [f32], ol: &mut [i64], distance: impl Fn(f32) -> f32) {
        let mut best = std::mem::take(&mut self.heap).into_sorted_vec();
        for ((c, d), l) in best.iter().zip(od.iter_mut()).zip(ol.iter_mut()) {
            *d = distance(c.bad);
            *l = c.row as i64;
        }
        best.clear();
        self.heap = BinaryHeap::from(best);
        self.worst = f32::INFINITY;
    }
}

/// Batches of at least this many queries are scored with BLAS (one `sgemm` per block of
/// queries × block of rows); smaller ones row by row with the SIMD kernels, where the
/// matrix product's set-up costs more than it saves (faiss draws the same line at 20).
const BLAS_MIN_QUERIES: usize = 20;
/// Queries per BLAS block.
const QUERY_BLOCK: usize = 256;
/// Rows per BLAS block: a block of products (QUERY_BLOCK × ROW_BLOCK floats, 1 MiB) stays
/// in the cache while every query's top-k takes from it.
const ROW_BLOCK: usize = 1024;

/// Exact search over an appendable set of rows (a growing segment, or a sealed one whose index
/// is not built). Labels are row offsets.
///
/// COSINE rows are normalised when appended (so [`FlatVectors::vectors`] returns normalised
/// rows) and queries are normalised at search time. Distances follow the same convention as
/// [`super::VectorIndex`]: squared L2 for L2, inner product for IP / COSINE. For L2 the
/// squared norm of every row is kept, so a batch is scored as `‖q‖² + ‖x‖² − 2·q·x` from one
/// matrix product, as faiss' `IndexFlatL2` does.
///
/// A search runs on the calling thread (its BLAS too, when OpenBLAS is set to one thread as
/// the query node does): callers parallelise over row ranges ([`FlatVectors::search_rows`])
/// and query blocks themselves.
#[derive(Debug, Clone)]
pub struct FlatVectors {
    dim: usize,
    metric: MetricType,
    data: Vec<f32>,
    /// Squared norm of every row, for L2 only (empty otherwise).
    norms: Vec<f32>,
}

impl FlatVectors {
    /// An empty set of `dim`-dimensional rows.
    pub fn new(dim: usize, metric: MetricType) -> Self {
        FlatVectors { dim, metric, data: Vec::new(), norms: Vec::new() }
    }

    /// Takes ownership of existing rows (`n * dim` floats).
    pub fn from_vec(dim: usize, metric: MetricType, vectors: Vec<f32>) -> Result<Self> {
        check_rows(dim, vectors.len())?;
        let mut flat = FlatVectors { dim, metric, data: vectors, norms: Vec::new() };
        flat.prepare_from(0);
        Ok(flat)
    }

    /// Appends rows (`n * dim` floats); they get the next row offsets.
    pub fn push(&mut self, vectors: &[f32]) -> Result<()> {
        check_rows(self.dim, vectors.len())?;
        let start = self.len();
        self.data.extend_from_slice(vectors);
        self.prepare_from(start);
        Ok(())
    }

    /// Normalises (COSINE) or records the squared norms of (L2) the rows from `start` on.
    fn prepare_from(&mut self, start: usize) {
        let tail = &mut self.data[start * self.dim..];
        match self.metric {
            MetricType::Cosine => normalize(tail, self.dim),
            MetricType::L2 => self.norms.extend(tail.chunks_exact(self.dim).map(|v| dot(v, v))),
            MetricType::Ip => {}
        }
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
        self.norms.truncate(rows);
    }

    /// Removes all rows.
    pub fn clear(&mut self) {
        self.data.clear();
        self.norms.clear();
    }

    /// Approximate heap bytes held.
    pub fn mem_bytes(&self) -> u64 {
        ((self.data.capacity() + self.norms.capacity()) * std::mem::size_of::<f32>()) as u64
    }

    /// Exact top-`k` for each query in `queries` (`nq * dim` floats; a trailing partial row is
    /// ignored), skipping rows for which `skip(row)` is true (e.g. deleted or not yet visible).
    /// Returns `nq * k` distances and labels, best first; missing hits are label `-1` with
    /// [`super::worst_distance`]. Ties are broken by the lower row offset (up to rounding:
    /// batches are scored through a matrix product, whose sums round differently).
    pub fn search(&self, queries: &[f32], k: usize, skip: &dyn Fn(usize) -> bool) -> (Vec<f32>, Vec<i64>) {
        self.search_rows(queries, k, 0..self.len(), skip)
    }

    /// [`FlatVectors::search`] over the rows in `rows` only (clamped to the rows there are):
    /// the labels are still row offsets of the whole set, so the top-k of disjoint ranges merge
    /// into the top-k of their union. `skip` is called once per row of the range.
    pub fn search_rows(
        &self,
        queries: &[f32],
        k: usize,
        rows: Range<usize>,
        skip: &dyn Fn(usize) -> bool,
    ) -> (Vec<f32>, Vec<i64>) {
        let dim = self.dim.max(1);
        let nq = queries.len() / dim;
        let total = nq.saturating_mul(k);
        let mut out_d = vec![worst_distance(self.metric); total];
        let mut out_l = vec![-1i64; total];
        let n = self.len();
        let rows = rows.start.min(n)..rows.end.min(n);
        if total == 0 || rows.is_empty() {
            return (out_d, out_l);
        }
        let skipped: Vec<bool> = rows.clone().map(skip).collect();
        let mut qs = queries[..nq * dim].to_vec();
        if self.metric == MetricType::Cosine {
            normalize(&mut qs, dim);
        }
        let view = RowsView { flat: self, start: rows.start, skipped: &skipped };
        if nq < BLAS_MIN_QUERIES {
            view.scan(&qs, k, &mut out_d, &mut out_l);
        } else {
            view.blas(&qs, k, &mut out_d, &mut out_l);
        }
        (out_d, out_l)
    }
}

/// A range of rows being searched, with the rows to skip in it.
struct RowsView<'a> {
    flat: &'a FlatVectors,
    start: usize,
    skipped: &'a [bool],
}

impl RowsView<'_> {
    fn rows(&self) -> impl Iterator<Item = (usize, &[f32])> + '_ {
        let dim = self.flat.dim;
        let data = &self.flat.data[self.start * dim..(self.start + self.skipped.len()) * dim];
        data.chunks_exact(dim)
            .zip(self.skipped)
            .enumerate()
            .filter(|(_, (_, skip))| !**skip)
            .map(move |(i, (v, _))| (self.start + i, v))
    }

    /// Row by row with the SIMD kernels (few queries: the rows are read once per query).
    fn scan(&self, qs: &[f32], k: usize, od: &mut [f32], ol: &mut [i64]) {
        let higher = super::higher_is_better(self.flat.metric);
        let mut top = TopK::new(k);
        for ((q, od), ol) in qs.chunks_exact(self.flat.dim).zip(od.chunks_mut(k)).zip(ol.chunks_mut(k)) {
            for (row, v) in self.rows() {
                top.offer(if higher { -dot(q, v) } else { l2_sq(q, v) }, row);
            }
            top.drain_into(od, ol, |bad| if higher { -bad } else { bad });
        }
    }

    /// Blocks of queries × blocks of rows through `sgemm`, then each query's top-k from its
    /// row of products (for L2 with the rows' squared norms: `‖x‖² − 2·q·x` ranks as the
    /// distance does; `‖q‖²` is added to the k results only).
    fn blas(&self, qs: &[f32], k: usize, od: &mut [f32], ol: &mut [i64]) {
        let dim = self.flat.dim;
        let higher = super::higher_is_better(self.flat.metric);
        let nq = qs.len() / dim;
        let (start, end) = (self.start, self.start + self.skipped.len());
        let mut products = vec![0f32; QUERY_BLOCK.min(nq) * ROW_BLOCK.min(end - start)];
        let mut tops: Vec<TopK> = (0..QUERY_BLOCK.min(nq)).map(|_| TopK::new(k)).collect();
        for q0 in (0..nq).step_by(QUERY_BLOCK) {
            let q1 = (q0 + QUERY_BLOCK).min(nq);
            let block = &qs[q0 * dim..q1 * dim];
            for r0 in (start..end).step_by(ROW_BLOCK) {
                let r1 = (r0 + ROW_BLOCK).min(end);
                let nr = r1 - r0;
                inner_products(block, &self.flat.data[r0 * dim..r1 * dim], dim, &mut products);
                let skipped = &self.skipped[r0 - start..r1 - start];
                for (top, scores) in tops[..q1 - q0].iter_mut().zip(products.chunks_exact(nr)) {
                    if higher {
                        for (j, (s, _)) in scores.iter().zip(skipped).enumerate().filter(|(_, (_, x))| !**x) {
                            top.offer(-s, r0 + j);
                        }
                    } else {
                        let norms = &self.flat.norms[r0..r1];
                        let live = scores.iter().zip(norms).zip(skipped).enumerate().filter(|(_, (_, x))| !**x);
                        for (j, ((s, norm), _)) in live {
                            top.offer(norm - 2.0 * s, r0 + j);
                        }
                    }
                }
            }
            let outs = od[q0 * k..q1 * k].chunks_mut(k).zip(ol[q0 * k..q1 * k].chunks_mut(k));
            for ((top, q), (od, ol)) in tops.iter_mut().zip(block.chunks_exact(dim)).zip(outs) {
                if higher {
                    top.drain_into(od, ol, |bad| -bad);
                } else {
                    let qq = dot(q, q);
                    top.drain_into(od, ol, |bad| (bad + qq).max(0.0));
                }
            }
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

#[cfg(test)]
mod kernel_tests {
    use super::*;

    #[test]
    fn the_kernels_in_use_agree_with_the_portable_ones_at_every_length() {
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 63, 100, 384, 1000] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 97) as f32 / 40.0 - 1.2).collect();
            let close = |x: f32, y: f32| (x - y).abs() <= 1e-4 * (1.0 + y.abs());
            let (d, p) = (dot(&a, &b), dot_portable(&a, &b));
            assert!(close(d, p), "dot over {n}: {d} vs {p} ({})", kernel_level());
            let (d, p) = (l2_sq(&a, &b), l2_sq_portable(&a, &b));
            assert!(close(d, p), "l2 over {n}: {d} vs {p} ({})", kernel_level());
            // Slices of different lengths: the shorter one's length counts.
            assert!(close(dot(&a, &b[..n / 2]), dot_portable(&a[..n / 2], &b[..n / 2])));
        }
    }
}
