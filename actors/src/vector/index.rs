//! [`VectorIndex`]: a faiss index over one sealed segment.

use std::borrow::Cow;
use std::sync::{RwLock, RwLockWriteGuard};

use quiver_faiss_simd::{sys as fs, FaissApi, SimdLevel};

use super::ffi::{check, BitmapSelector, IvfSearchParams, RawIndex, SelectorParams};
use super::plan::{checksum, split_object, BuildPlan, Header, CHECKSUM_LEN, HEADER_LEN};
use super::{
    apply_faiss_threads, normalize, with_omp_threads, worst_distance, IndexParams, IndexType, MetricType, Result,
    SearchParams, VectorError,
};

/// IVF lists probed when [`SearchParams::nprobe`] is 0 (clamped to the index's nlist).
pub const DEFAULT_NPROBE: usize = 16;
/// HNSW efSearch when [`SearchParams::ef`] is 0 (faiss always uses at least `k`).
pub const DEFAULT_EF_SEARCH: usize = 64;

/// How [`VectorIndex::build_with`] builds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// The faiss SIMD build to use; `None`: the process' default ([`super::simd_level`]).
    pub simd: Option<SimdLevel>,
    /// OpenMP threads for this build, set on the calling thread only and restored after it
    /// (searches on other threads keep theirs); `None`: [`super::set_faiss_threads`]' value.
    pub threads: Option<usize>,
}

/// A built faiss index for one sealed segment.
///
/// Labels returned by searches are row offsets (0-based, in insertion order) within the
/// segment, `-1` for missing hits. Distances are faiss' raw values: squared L2 for
/// [`MetricType::L2`] (smaller is better), inner product for IP / COSINE (larger is better);
/// see [`super::higher_is_better`].
///
/// Searches take `&self` and may run concurrently from many threads. Per-call `nprobe` is
/// passed to faiss as `SearchParametersIVF`, without touching the index. The faiss C API has
/// no `SearchParametersHNSW`, so HNSW `efSearch` is stored in the index: searches with the
/// current value share a read lock; a search asking for a different value takes the write
/// lock, sets it, and searches exclusively. Alternating ef values therefore serialise
/// searches; keep ef fixed per collection for full parallelism.
pub struct VectorIndex {
    raw: RawIndex,
    dim: usize,
    metric: MetricType,
    plan: BuildPlan,
    /// HNSW: the efSearch currently set inside the faiss index. Guards every search on HNSW
    /// indexes (read = search with this value; write = change it).
    hnsw_ef: RwLock<usize>,
}

// SAFETY: the faiss index is owned exclusively by this struct (no aliasing pointers escape).
// faiss' `Index::search` is const and documented thread-safe for the CPU indexes built here
// (Flat, IVF*, HNSW), and we only pass per-call search parameters. The only mutation after
// construction is HNSW `efSearch` via ParameterSpace, which happens while holding the
// `hnsw_ef` write lock, and every HNSW search holds the read or write lock, so no search
// runs while it changes. Dropping frees the index once, from whichever thread owns it.
unsafe impl Send for VectorIndex {}
// SAFETY: see `Send` above; shared (`&self`) access only performs const faiss calls or the
// lock-protected efSearch update.
unsafe impl Sync for VectorIndex {}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("kind", &self.plan.kind)
            .field("metric", &self.metric)
            .field("dim", &self.dim)
            .field("len", &self.len())
            .field("nlist", &self.plan.nlist)
            .field("m", &self.plan.m)
            .field("nbits", &self.plan.nbits)
            .finish()
    }
}

fn faiss_metric(m: MetricType) -> fs::FaissMetricType {
    match m {
        MetricType::L2 => fs::FaissMetricType_METRIC_L2,
        MetricType::Ip | MetricType::Cosine => fs::FaissMetricType_METRIC_INNER_PRODUCT,
    }
}

/// The faiss table of `level`, or why it cannot run here.
fn simd_api(level: SimdLevel) -> Result<&'static FaissApi> {
    Ok(quiver_faiss_simd::api(level)?)
}

fn check_dim(dim: usize, data: &[f32], what: &str) -> Result<usize> {
    if dim == 0 {
        return Err(VectorError::InvalidParams("dim is 0; pass the vector field's dimension".into()));
    }
    if data.len().checked_rem(dim) != Some(0) {
        return Err(VectorError::InvalidParams(format!(
            "{what} has {} floats, not a multiple of dim {dim}; pass whole rows (rows * dim floats)",
            data.len()
        )));
    }
    Ok(data.len() / dim)
}

impl VectorIndex {
    /// Builds an index over `vectors` (`n * dim` floats, row-major): trains on all rows, then
    /// adds them with labels `0..n`.
    ///
    /// Zero parameters take defaults (nlist 128, PQ m 8 or the largest divisor of `dim` not
    /// above 8, nbits 8, HNSW M 16, efConstruction 200). For small segments nlist is clamped
    /// to `max(1, n / 39)`; IVF_PQ with fewer than `2^nbits` rows falls back to IVF_FLAT, and
    /// IVF types on an empty segment fall back to FLAT (both with a warning); see
    /// [`VectorIndex::index_type`]. Errors if `dim % m != 0` for IVF_PQ.
    ///
    /// Runs on the process' default faiss SIMD level ([`super::simd_level`]) with the OpenMP
    /// threads of [`super::set_faiss_threads`]; [`VectorIndex::build_with`] chooses both.
    pub fn build(params: &IndexParams, dim: usize, vectors: &[f32]) -> Result<VectorIndex> {
        Self::build_with(&BuildOptions::default(), params, dim, vectors)
    }

    /// [`VectorIndex::build`] with `options`; an error when `options.simd` names a level this
    /// binary or CPU does not have. The index keeps its level for its searches.
    pub fn build_with(
        options: &BuildOptions,
        params: &IndexParams,
        dim: usize,
        vectors: &[f32],
    ) -> Result<VectorIndex> {
        let api = match options.simd {
            Some(level) => simd_api(level)?,
            None => quiver_faiss_simd::default_api(),
        };
        apply_faiss_threads();
        match options.threads {
            Some(threads) => with_omp_threads(threads, || Self::build_on(api, params, dim, vectors)),
            None => Self::build_on(api, params, dim, vectors),
        }
    }

    fn build_on(api: &'static FaissApi, params: &IndexParams, dim: usize, vectors: &[f32]) -> Result<VectorIndex> {
        let n = check_dim(dim, vectors, "vectors")?;
        let plan = BuildPlan::new(params, dim, n)?;
        let data: Cow<'_, [f32]> = if params.metric == MetricType::Cosine {
            let mut v = vectors.to_vec();
            normalize(&mut v, dim);
            Cow::Owned(v)
        } else {
            Cow::Borrowed(vectors)
        };
        let mut raw = RawIndex::factory(api, dim, &plan.factory_string(), faiss_metric(params.metric))?;
        if plan.kind == IndexType::Hnsw {
            // SAFETY: `raw` is not shared yet.
            unsafe {
                raw.set_parameter("efConstruction", plan.ef_construction as f64)?;
                raw.set_parameter("efSearch", DEFAULT_EF_SEARCH as f64)?;
            }
        }
        if !raw.is_trained() {
            raw.train(n, &data)?;
        }
        if n > 0 {
            raw.add(n, &data)?;
        }
        Ok(VectorIndex { raw, dim, metric: params.metric, plan, hnsw_ef: RwLock::new(DEFAULT_EF_SEARCH) })
    }

    /// The faiss SIMD build this index runs on.
    pub fn simd_level(&self) -> SimdLevel {
        self.raw.api().level
    }

    /// Number of indexed rows.
    pub fn len(&self) -> usize {
        self.raw.ntotal()
    }

    /// Whether the index holds no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The Quiver metric (COSINE is kept distinct from IP).
    pub fn metric(&self) -> MetricType {
        self.metric
    }

    /// The index type actually built, which differs from the requested one after a
    /// small-segment fallback.
    pub fn index_type(&self) -> IndexType {
        self.plan.kind
    }

    /// Number of IVF lists actually used (after clamping); 0 for non-IVF indexes.
    pub fn nlist(&self) -> usize {
        self.plan.nlist
    }

    /// Approximate resident memory of the index in bytes (estimated from its parameters).
    pub fn mem_bytes(&self) -> u64 {
        self.plan.mem_bytes(self.metric, self.dim, self.len())
    }

    /// Top-`k` search for each query in `queries` (`nq * dim` floats). Returns `nq * k`
    /// distances and labels, best first per query; missing hits have label `-1` (faiss pads
    /// their distances with its own sentinel). COSINE queries are normalised here.
    /// `params.nprobe` / `params.ef` of 0 mean [`DEFAULT_NPROBE`] / [`DEFAULT_EF_SEARCH`].
    pub fn search(&self, queries: &[f32], k: usize, params: &SearchParams) -> Result<(Vec<f32>, Vec<i64>)> {
        self.search_with(queries, k, params, None)
    }

    /// Top-k among the rows whose bit is set in `allowed` (faiss IDSelectorBitmap passed in
    /// the search parameters: a pre-filter inside faiss, no over-fetching). Row `i` is bit
    /// `(allowed[i >> 3] >> (i & 7)) & 1` (the layout of [`crate::filter::Bitmap`]); rows past
    /// the end of `allowed` count as not allowed, so pass at least [`VectorIndex::len`] bits.
    ///
    /// Same knobs and result layout as [`VectorIndex::search`], except that missing hits
    /// (fewer than `k` allowed rows, or an approximate index that runs out of reachable
    /// allowed rows) are padded with label `-1` and [`super::worst_distance`].
    pub fn search_selected(
        &self,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        allowed: &[u8],
    ) -> Result<(Vec<f32>, Vec<i64>)> {
        let selector = BitmapSelector::new(self.raw.api(), allowed)?;
        let (mut dist, labels) = self.search_with(queries, k, params, Some(&selector))?;
        let worst = worst_distance(self.metric);
        for (d, l) in dist.iter_mut().zip(&labels) {
            if *l < 0 {
                *d = worst;
            }
        }
        Ok((dist, labels))
    }

    /// [`VectorIndex::search`], restricted to `selector`'s ids when given.
    fn search_with(
        &self,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        selector: Option<&BitmapSelector<'_>>,
    ) -> Result<(Vec<f32>, Vec<i64>)> {
        let nq = check_dim(self.dim, queries, "queries")?;
        let total = nq
            .checked_mul(k)
            .ok_or_else(|| VectorError::InvalidParams(format!("nq {nq} * k {k} overflows; lower k")))?;
        if total == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let k_i = i64::try_from(k).map_err(|_| VectorError::InvalidParams(format!("k {k} is too large")))?;
        let q: Cow<'_, [f32]> = if self.metric == MetricType::Cosine {
            let mut v = queries.to_vec();
            normalize(&mut v, self.dim);
            Cow::Owned(v)
        } else {
            Cow::Borrowed(queries)
        };
        apply_faiss_threads();
        let mut dist = vec![0f32; total];
        let mut labels = vec![-1i64; total];
        let index = self.raw.as_ptr();
        let api = self.raw.api();
        let (qp, dp, lp) = (q.as_ptr(), dist.as_mut_ptr(), labels.as_mut_ptr());
        let nq_i = nq as i64;
        // FLAT and HNSW take the selector in generic parameters; IVF in its own (with nprobe).
        let generic = match (self.plan.kind, selector) {
            (IndexType::Flat | IndexType::Hnsw, Some(sel)) => Some(SelectorParams::new(sel)?),
            _ => None,
        };
        // SAFETY (both arms): index is valid and only read; q holds nq*dim floats; dist/labels
        // hold nq*k slots; the parameters and the selector they point to outlive the call.
        let run = || match &generic {
            Some(sp) => unsafe { (api.faiss_Index_search_with_params)(index, nq_i, qp, k_i, sp.as_ptr(), dp, lp) },
            None => unsafe { (api.faiss_Index_search)(index, nq_i, qp, k_i, dp, lp) },
        };
        let code = match self.plan.kind {
            IndexType::IvfFlat | IndexType::IvfSq8 | IndexType::IvfPq => {
                let nprobe = if params.nprobe == 0 { DEFAULT_NPROBE } else { params.nprobe as usize };
                let sp = IvfSearchParams::new(api, nprobe.clamp(1, self.plan.nlist.max(1)), selector)?;
                // SAFETY: as above; sp (and the selector) outlive the call.
                unsafe { (api.faiss_Index_search_with_params)(index, nq_i, qp, k_i, sp.as_ptr(), dp, lp) }
            }
            IndexType::Hnsw => {
                let ef = if params.ef == 0 { DEFAULT_EF_SEARCH } else { params.ef as usize };
                let read = self.hnsw_ef.read().unwrap_or_else(|e| e.into_inner());
                if *read == ef {
                    // The read lock keeps efSearch from changing.
                    run()
                } else {
                    drop(read);
                    // The write lock makes this search exclusive.
                    let _write = self.set_ef(ef)?;
                    run()
                }
            }
            IndexType::Flat => run(),
        };
        check(api, code, "search")?;
        Ok((dist, labels))
    }

    /// Takes the efSearch write lock and sets `ef` in the faiss index.
    fn set_ef(&self, ef: usize) -> Result<RwLockWriteGuard<'_, usize>> {
        let mut guard = self.hnsw_ef.write().unwrap_or_else(|e| e.into_inner());
        if *guard != ef {
            // SAFETY: the write lock excludes every other search on this index.
            unsafe { self.raw.set_parameter("efSearch", ef as f64)? };
            *guard = ef;
        }
        Ok(guard)
    }

    /// Like [`VectorIndex::search`], but skips labels for which `deleted(label)` is true and
    /// still returns `k` live hits per query when the index can find them.
    ///
    /// Over-fetches `k + deleted_count` (capped at [`VectorIndex::len`]) and, for queries
    /// still short of `k`, retries with twice the fetch size until it reaches `len`.
    /// `deleted_count` is only a sizing hint (the number of deleted rows in the segment).
    /// Missing hits are padded with label `-1` and [`super::worst_distance`]. Approximate
    /// indexes may still return fewer than `k` hits when the probed lists / graph run out.
    pub fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        deleted: &dyn Fn(i64) -> bool,
        deleted_count: usize,
    ) -> Result<(Vec<f32>, Vec<i64>)> {
        let nq = check_dim(self.dim, queries, "queries")?;
        let total = nq
            .checked_mul(k)
            .ok_or_else(|| VectorError::InvalidParams(format!("nq {nq} * k {k} overflows; lower k")))?;
        let mut out_d = vec![worst_distance(self.metric); total];
        let mut out_l = vec![-1i64; total];
        let len = self.len();
        if total == 0 || len == 0 {
            return Ok((out_d, out_l));
        }
        let mut fetch = k.saturating_add(deleted_count).min(len);
        let mut pending: Vec<usize> = (0..nq).collect();
        let mut batch = Vec::with_capacity(queries.len());
        loop {
            batch.clear();
            for &qi in &pending {
                batch.extend_from_slice(&queries[qi * self.dim..(qi + 1) * self.dim]);
            }
            let (d, l) = self.search(&batch, fetch, params)?;
            let mut short = Vec::new();
            for (j, &qi) in pending.iter().enumerate() {
                let (od, ol) = (&mut out_d[qi * k..(qi + 1) * k], &mut out_l[qi * k..(qi + 1) * k]);
                od.fill(worst_distance(self.metric));
                ol.fill(-1);
                let mut filled = 0;
                for r in j * fetch..(j + 1) * fetch {
                    if filled == k {
                        break;
                    }
                    if l[r] < 0 || deleted(l[r]) {
                        continue;
                    }
                    od[filled] = d[r];
                    ol[filled] = l[r];
                    filled += 1;
                }
                if filled < k {
                    short.push(qi);
                }
            }
            if short.is_empty() || fetch >= len {
                return Ok((out_d, out_l));
            }
            pending = short;
            fetch = fetch.saturating_mul(2).min(len);
        }
    }

    /// Serialises the index: a 24-byte Quiver header (metric incl. the COSINE flag, built
    /// type, parameters), an 8-byte checksum of the header and the rest, then faiss'
    /// `write_index` output.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = Header { metric: self.metric, plan: self.plan.clone(), dim: self.dim }.encode()?;
        // The read lock keeps a concurrent HNSW efSearch change from racing with the writer.
        let body = {
            let _ef = self.hnsw_ef.read().unwrap_or_else(|e| e.into_inner());
            self.raw.write_to_vec()?
        };
        let mut out = Vec::with_capacity(HEADER_LEN + CHECKSUM_LEN + body.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&checksum(&header, &body));
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// faiss' own `write_index` output for this index, without Quiver's header: what faiss'
    /// `read_index` (any build, faiss-cpu's Python package too) reads. Benchmarks use it.
    pub fn faiss_bytes(&self) -> Result<Vec<u8>> {
        let _ef = self.hnsw_ef.read().unwrap_or_else(|e| e.into_inner());
        self.raw.write_to_vec()
    }

    /// Loads an index written by [`VectorIndex::to_bytes`]. HNSW efSearch is reset to
    /// [`DEFAULT_EF_SEARCH`]. Damaged bytes are refused before faiss reads them (checksum).
    /// Loads on the process' default faiss SIMD level, whichever level wrote the bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<VectorIndex> {
        Self::from_bytes_with(quiver_faiss_simd::default_api(), bytes)
    }

    /// [`VectorIndex::from_bytes`] on the faiss build of `level` (whichever level wrote the
    /// bytes); an error when this binary or CPU does not have it.
    pub fn from_bytes_on(level: SimdLevel, bytes: &[u8]) -> Result<VectorIndex> {
        Self::from_bytes_with(simd_api(level)?, bytes)
    }

    fn from_bytes_with(api: &'static FaissApi, bytes: &[u8]) -> Result<VectorIndex> {
        let (header, payload) = split_object(bytes)?;
        apply_faiss_threads();
        let raw = RawIndex::read_from(api, payload)?;
        if raw.dim() != header.dim || raw.metric() != faiss_metric(header.metric) {
            return Err(VectorError::Corrupt(format!(
                "header says dim {} / {:?} but the faiss index has dim {} / metric code {}; the data is damaged",
                header.dim,
                header.metric,
                raw.dim(),
                raw.metric()
            )));
        }
        let ivf = matches!(header.plan.kind, IndexType::IvfFlat | IndexType::IvfSq8 | IndexType::IvfPq);
        if raw.is_ivf() != ivf {
            return Err(VectorError::Corrupt(format!(
                "header says {:?} but the faiss index {} IVF; the data is damaged",
                header.plan.kind,
                if raw.is_ivf() { "is" } else { "is not" }
            )));
        }
        if header.plan.kind == IndexType::Hnsw {
            // SAFETY: `raw` is not shared yet.
            unsafe { raw.set_parameter("efSearch", DEFAULT_EF_SEARCH as f64)? };
        }
        Ok(VectorIndex {
            raw,
            dim: header.dim,
            metric: header.metric,
            plan: header.plan,
            hnsw_ef: RwLock::new(DEFAULT_EF_SEARCH),
        })
    }
}
