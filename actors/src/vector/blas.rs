//! The one BLAS routine brute force needs: `sgemm`, from the BLAS the static faiss build links
//! (`faiss-sys` emits `-lblas`; on Debian `libblas.so.3` resolves through
//! `/etc/alternatives` to OpenBLAS, `openblas-pthread`). The Fortran entry point `sgemm_` is
//! used, as faiss does, so reference BLAS links too.

use std::os::raw::{c_char, c_int};

extern "C" {
    /// Fortran BLAS `SGEMM`: `C = alpha·op(A)·op(B) + beta·C`, column-major, every argument by
    /// reference.
    fn sgemm_(
        transa: *const c_char,
        transb: *const c_char,
        m: *const c_int,
        n: *const c_int,
        k: *const c_int,
        alpha: *const f32,
        a: *const f32,
        lda: *const c_int,
        b: *const f32,
        ldb: *const c_int,
        beta: *const f32,
        c: *mut f32,
        ldc: *const c_int,
    );
}

/// Inner products of every query with every row: `out[q * nr + r] = queries[q] · rows[r]`,
/// for `nq = queries.len() / dim` queries and `nr = rows.len() / dim` rows (row-major,
/// `dim` floats each). Does nothing when a size is 0, does not fit a BLAS integer, or
/// `out` is too short (the callers size it; this keeps the call memory-safe regardless).
pub(crate) fn inner_products(queries: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    let (Some(nq), Some(nr)) = (queries.len().checked_div(dim), rows.len().checked_div(dim)) else { return };
    if nq == 0 || nr == 0 || out.len() < nq.saturating_mul(nr) {
        return;
    }
    let (Ok(m), Ok(n), Ok(k)) = (c_int::try_from(nr), c_int::try_from(nq), c_int::try_from(dim)) else { return };
    let (alpha, beta) = (1.0f32, 0.0f32);
    // Column-major C (nr × nq) = rowsᵀ-as-stored (dim × nr, transposed) · queries (dim × nq):
    // column q of C is query q against every row, which is `out[q * nr ..]` row-major.
    // SAFETY: `rows` holds nr·dim floats (lda = dim ≥ k), `queries` nq·dim (ldb = dim),
    // `out` at least nr·nq (ldc = nr = m); sgemm reads and writes only within those.
    unsafe {
        sgemm_(
            c"T".as_ptr(),
            c"N".as_ptr(),
            &m,
            &n,
            &k,
            &alpha,
            rows.as_ptr(),
            &k,
            queries.as_ptr(),
            &k,
            &beta,
            out.as_mut_ptr(),
            &m,
        );
    }
}
