//! Row-major f32 matrix products for the engine's own kernels (`conv.rs`): on Intel MKL when
//! focal is built with the `mkl` feature (the same library PyTorch's CPU build uses), else on the
//! `gemm` crate candle itself uses.

/// `c (m×n, row stride ldc) = [c +] a (m×k, row stride lda) · b (k×n, row stride ldb)`, unit
/// column strides; `accumulate` adds to what `c` holds.
///
/// # Safety
/// Each pointer must address its whole matrix: `a` (m−1)·lda + k values, `b` (k−1)·ldb + n,
/// `c` (m−1)·ldc + n, with `c` not overlapping `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(feature = "mkl")]
    {
        // Fortran's column-major view of row-major matrices is their transpose: cᵀ = bᵀ·aᵀ.
        let (m, n, k) = (m as i32, n as i32, k as i32);
        let (lda, ldb, ldc) = (lda.max(1) as i32, ldb.max(1) as i32, ldc.max(1) as i32);
        let beta = if accumulate { 1.0f32 } else { 0.0 };
        sgemm_(&(b'N' as i8), &(b'N' as i8), &n, &m, &k, &1.0, b, &ldb, a, &lda, &beta, c, &ldc);
    }
    #[cfg(not(feature = "mkl"))]
    {
        let threads = candle_core::utils::get_num_threads();
        let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a,
            1,
            lda as isize,
            b,
            1,
            ldb as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(feature = "mkl")]
extern "C" {
    // Linked by candle's `mkl` feature (intel-mkl-src).
    #[allow(clippy::too_many_arguments)]
    fn sgemm_(
        transa: *const i8,
        transb: *const i8,
        m: *const i32,
        n: *const i32,
        k: *const i32,
        alpha: *const f32,
        a: *const f32,
        lda: *const i32,
        b: *const f32,
        ldb: *const i32,
        beta: *const f32,
        c: *mut f32,
        ldc: *const i32,
    );
}
