//! Row-major f32 matrix products for the engine's own kernels (`conv.rs`): on Intel MKL when
//! focal is built with the `mkl` feature (the same library PyTorch's CPU build uses), else on the
//! `gemm` crate candle itself uses.

/// `c (m×n, row stride ldc) = [c +] a (m×k, row stride lda) · b (k×n, row stride ldb)`, unit
/// column strides; `accumulate` adds to what `c` holds. Uses every thread of the pool.
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
    let product = Product { m, n, k, a, lda, b, ldb, b_transposed: false, c, ldc, accumulate };
    unsafe { product.run(true) }
}

/// One matrix product `c = [c +] a · op(b)` on row-major matrices with unit column strides;
/// `op(b)` is `b` (k×n, row stride ldb) or, when `b_transposed`, the transpose of the n×k `b`.
pub struct Product {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub lda: usize,
    pub b: *const f32,
    pub ldb: usize,
    pub b_transposed: bool,
    pub c: *mut f32,
    pub ldc: usize,
    pub accumulate: bool,
}

impl Product {
    /// On every thread of the pool (`parallel`) or on the calling thread only (for callers
    /// that run many products in parallel themselves).
    ///
    /// # Safety
    /// Each pointer must address its whole matrix (see [`sgemm`]), `c` overlapping neither.
    pub unsafe fn run(&self, parallel: bool) {
        let &Product { m, n, k, a, lda, b, ldb, b_transposed, c, ldc, accumulate } = self;
        if m == 0 || n == 0 {
            return;
        }
        #[cfg(feature = "mkl")]
        {
            // Fortran's column-major view of row-major matrices is their transpose: cᵀ = op(b)ᵀ·aᵀ.
            let previous = if parallel { None } else { Some(mkl_set_num_threads_local(1)) };
            let transb = if b_transposed { b'T' } else { b'N' } as i8;
            let (m, n, k) = (m as i32, n as i32, k as i32);
            let (lda, ldb, ldc) = (lda.max(1) as i32, ldb.max(1) as i32, ldc.max(1) as i32);
            let beta = if accumulate { 1.0f32 } else { 0.0 };
            sgemm_(&transb, &(b'N' as i8), &n, &m, &k, &1.0, b, &ldb, a, &lda, &beta, c, &ldc);
            if let Some(previous) = previous {
                mkl_set_num_threads_local(previous);
            }
        }
        #[cfg(not(feature = "mkl"))]
        {
            let threads = if parallel { candle_core::utils::get_num_threads() } else { 1 };
            let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
            // gemm takes (column stride, row stride) per matrix.
            let (b_col, b_row) = if b_transposed { (ldb as isize, 1) } else { (1, ldb as isize) };
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
                b_col,
                b_row,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
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
    fn mkl_set_num_threads_local(threads: i32) -> i32;
}

#[cfg(test)]
mod tests {
    use super::Product;

    /// GFLOP/s at the UNet's linear shapes (512², CFG batch 2), b as stored and transposed:
    /// `cargo test -p focal-engine --release --lib blas::tests::speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn speed() {
        for &(m, k, n) in &[
            (512, 1280, 1280),
            (512, 1280, 10240),
            (512, 5120, 1280),
            (2048, 640, 5120),
            (8192, 320, 320),
            (77, 1280, 1280),
            (77, 1280, 5120),
            (77, 5120, 1280),
            (77, 768, 768),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut c = vec![0f32; m * n];
            for b_transposed in [false, true] {
                let ldb = if b_transposed { k } else { n };
                let product = Product {
                    m,
                    n,
                    k,
                    a: a.as_ptr(),
                    lda: k,
                    b: b.as_ptr(),
                    ldb,
                    b_transposed,
                    c: c.as_mut_ptr(),
                    ldc: n,
                    accumulate: false,
                };
                unsafe { product.run(true) };
                let t = std::time::Instant::now();
                let reps = 5;
                for _ in 0..reps {
                    unsafe { product.run(true) };
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                let gflops = 2.0 * (m * k * n) as f64 / s / 1e9;
                println!("{m}×{k}·{k}×{n} (b transposed: {b_transposed}): {:7.2} ms, {gflops:6.1} GFLOP/s", s * 1e3);
            }
        }
    }
}
