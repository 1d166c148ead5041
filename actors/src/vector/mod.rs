//! Vector search for Quiver segments.
//!
//! * [`VectorIndex`] — a faiss index built over one sealed segment (FLAT, IVF_FLAT, IVF_SQ8,
//!   IVF_PQ, HNSW; L2, IP and COSINE). Searches take `&self`, so one index can be shared by
//!   many threads.
//! * [`FlatVectors`] — exact brute-force search over rows without an index (growing rows, and
//!   sealed segments until their index is built): BLAS `sgemm` for batches, SIMD for a few queries.
//!
//! Distances are returned in faiss' raw form: squared L2 distances for [`MetricType::L2`]
//! (smaller is better) and inner products for [`MetricType::Ip`] / [`MetricType::Cosine`]
//! (larger is better). Use [`higher_is_better`] when merging hits from several segments.
//! Labels are row offsets within the segment; `-1` marks a missing hit.
//!
//! COSINE is implemented as inner product over L2-normalised vectors: stored vectors and
//! queries are both normalised, so a COSINE distance is the cosine similarity in `[-1, 1]`.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

mod blas;
mod ffi;
mod flat;
mod index;
pub(crate) mod plan;
#[cfg(test)]
mod tests;

pub use flat::FlatVectors;
pub(crate) use flat::{dot, l2_sq};

/// Euclidean norm of a vector.
pub(crate) fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}
pub use index::{BuildOptions, VectorIndex, DEFAULT_EF_SEARCH, DEFAULT_NPROBE};
pub use plan::{
    DEFAULT_EF_CONSTRUCTION, DEFAULT_HNSW_M, DEFAULT_NBITS, DEFAULT_NLIST, DEFAULT_PQ_M, MIN_POINTS_PER_CENTROID,
};
pub use quiver_faiss_simd::{SimdChoice, SimdLevel};
pub use quiver_schemas::types::{IndexParams, IndexType, MetricType, SearchParams};

/// Errors from building, searching or (de)serialising vector indexes.
#[derive(thiserror::Error, Debug)]
pub enum VectorError {
    /// The caller passed parameters or data that cannot work; the message names the culprit
    /// and says how to fix it.
    #[error("invalid vector index parameters: {0}")]
    InvalidParams(String),
    /// faiss reported an error; the message carries the operation and faiss' own text.
    #[error("faiss error: {0}")]
    Faiss(String),
    /// Serialised index bytes are damaged, truncated or from an incompatible version.
    #[error("corrupt vector index data: {0}")]
    Corrupt(String),
    /// An operating-system call (in-memory file streams) failed.
    #[error("I/O error in vector index: {0}")]
    Io(String),
    /// The faiss SIMD build asked for is not in this binary or not runnable on this CPU.
    #[error(transparent)]
    Simd(#[from] quiver_faiss_simd::Error),
}

/// Result type of the vector module.
pub type Result<T> = std::result::Result<T, VectorError>;

/// Whether larger distances are better for `metric`: `false` for L2 (squared distance),
/// `true` for IP and COSINE (similarity).
pub fn higher_is_better(metric: MetricType) -> bool {
    !matches!(metric, MetricType::L2)
}

/// The distance used to pad missing hits (label `-1`) in results produced by this module's
/// own code ([`FlatVectors::search`], [`VectorIndex::search_filtered`],
/// [`VectorIndex::search_selected`]): the worst possible
/// value for `metric` (`+inf` for L2, `-inf` for IP / COSINE), so it sorts last when merging.
pub fn worst_distance(metric: MetricType) -> f32 {
    if higher_is_better(metric) {
        f32::NEG_INFINITY
    } else {
        f32::INFINITY
    }
}

/// L2-normalises every `dim`-float row of `v` in place. Rows with zero (or non-finite) norm
/// are left unchanged. A trailing partial row (when `v.len()` is not a multiple of `dim`) is
/// left unchanged too; `dim == 0` does nothing.
pub fn normalize(v: &mut [f32], dim: usize) {
    if dim == 0 {
        return;
    }
    for row in v.chunks_exact_mut(dim) {
        let norm = flat::dot(row, row).sqrt();
        if norm > 0.0 && norm.is_finite() {
            let inv = 1.0 / norm;
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    }
}

/// Makes `choice` the faiss SIMD build of this process for indexes built or loaded from now
/// on, and returns the level it resolved to: an error (never an illegal instruction later)
/// when the binary or the CPU lacks the level. Without a call, the best available level runs.
pub fn select_simd(choice: SimdChoice) -> Result<SimdLevel> {
    Ok(quiver_faiss_simd::set_default(choice)?)
}

/// The kernels brute force (rows without an index) runs with here: `avx2+fma` or `portable`.
pub fn brute_force_kernels() -> &'static str {
    flat::kernel_level()
}

/// The faiss SIMD build new indexes use in this process.
pub fn simd_level() -> SimdLevel {
    quiver_faiss_simd::default_level()
}

extern "C" {
    /// OpenMP runtime (libgomp, linked by the static faiss build).
    fn omp_set_num_threads(n: libc::c_int);
    fn omp_get_max_threads() -> libc::c_int;
}

/// Thread count requested through [`set_faiss_threads`]; 0 = never set (OpenMP default).
static FAISS_THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The value last applied to this OS thread's OpenMP settings (0 = none).
    static APPLIED_THREADS: Cell<usize> = const { Cell::new(0) };
    /// Set by [`pin_faiss_to_one_thread`]: faiss runs on one OpenMP thread here, whatever
    /// [`set_faiss_threads`] says.
    static PINNED_TO_ONE: Cell<bool> = const { Cell::new(false) };
}

/// Makes faiss searches entered from the calling thread run on one OpenMP thread from now on,
/// whatever [`set_faiss_threads`] says: for the threads of a search pool, whose tasks already
/// run in parallel, so that a task does not fan out again (pool threads × OpenMP threads
/// would oversubscribe the cores).
pub fn pin_faiss_to_one_thread() {
    PINNED_TO_ONE.with(|p| p.set(true));
    apply_faiss_threads();
}

/// Sets OpenBLAS' thread count (process-wide; nothing when the BLAS is not OpenBLAS). `1`
/// makes every BLAS call run on its calling thread, so calls from many threads run side by
/// side instead of queueing for OpenBLAS' own pool.
pub fn set_blas_threads(n: usize) {
    set_openblas_threads(n.max(1));
}

/// Sets the number of OpenMP threads faiss uses for training, adding and batched searches.
/// `0` is treated as `1`.
///
/// libgomp keeps this setting per OS thread (`omp_set_num_threads` only changes the calling
/// thread's value), so the value is also recorded process-wide and re-applied on whatever
/// thread next enters faiss through this module ([`VectorIndex`] build / search / load).
/// Quiver and the raw-faiss benchmark both call this, so they run with identical threading;
/// code calling faiss directly on another thread should call it on that thread too.
///
/// If the process uses OpenBLAS (faiss calls BLAS for flat searches of 20+ queries and for
/// k-means), its own thread pool is set to `n` too, through `openblas_set_num_threads` when
/// that symbol is present.
pub fn set_faiss_threads(n: usize) {
    let n = n.max(1);
    FAISS_THREADS.store(n, Ordering::Relaxed);
    apply_faiss_threads();
    set_openblas_threads(n);
}

/// Calls `openblas_set_num_threads(n)` if OpenBLAS is loaded (looked up at run time, so other
/// BLAS implementations still link).
fn set_openblas_threads(n: usize) {
    let n = libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks up a symbol.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"openblas_set_num_threads".as_ptr()) };
    if !sym.is_null() {
        // SAFETY: OpenBLAS declares `void openblas_set_num_threads(int)`; the symbol found
        // under that name has this signature.
        let f = unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn(libc::c_int)>(sym) };
        f(n);
    }
}

/// Runs `f` with `threads` OpenMP threads (0 = 1) on the calling OS thread, then restores the
/// thread's previous setting: libgomp keeps the setting per OS thread, so a build can use every
/// core while searches on other threads keep [`set_faiss_threads`]' count.
pub(crate) fn with_omp_threads<T>(threads: usize, f: impl FnOnce() -> T) -> T {
    let n = libc::c_int::try_from(threads.max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: both only read or store the calling thread's OpenMP control variables.
    let previous = unsafe { omp_get_max_threads() };
    // SAFETY: as above; any positive value is valid.
    unsafe { omp_set_num_threads(n) };
    let out = f();
    // SAFETY: as above; `previous` came from libgomp, so it is valid.
    unsafe { omp_set_num_threads(previous) };
    out
}

/// Applies the thread count from [`set_faiss_threads`] to the current OS thread, if it
/// differs from what this thread last applied. Cheap: one atomic load and a thread-local read.
pub(crate) fn apply_faiss_threads() {
    let want = match PINNED_TO_ONE.with(Cell::get) {
        true => 1,
        false => FAISS_THREADS.load(Ordering::Relaxed),
    };
    if want == 0 {
        return;
    }
    APPLIED_THREADS.with(|applied| {
        if applied.get() != want {
            let n = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
            // SAFETY: omp_set_num_threads only stores the value in the calling thread's
            // OpenMP control variables; any positive value is valid.
            unsafe { omp_set_num_threads(n) }
            applied.set(want);
        }
    });
}
