//! Multi-head scaled dot-product attention.
//!
//! On the CPU in f32 without a mask (every attention of the UNet and the VAE) it is fused: the
//! work is split into tasks of (batch item, head, block of query rows), run in parallel, and each
//! task does `scores = q·kᵀ` for its rows, the softmax in place and `out = p·v` straight into
//! the output's `[B, N, heads·head_dim]` layout — reading q, k and v where they lie (a head is a
//! column block, so no split/transpose copies), and holding only its own block of scores, so the
//! score matrix (quadratic in pixels) never exists whole. Masked attention (CLIP's causal mask,
//! 77 tokens), other devices and dtypes take candle's ops, in query chunks of bounded size —
//! except, on NVIDIA GPUs in f16/bf16, the engine's fused kernel (`attention_flash`).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::blas::Product;
use crate::cpu::{f32_values, SharedMut};
use crate::fastmath;
use crate::profile::{self, Op};

/// Attention on `[B, N, heads·head_dim]` queries and `[B, M, heads·head_dim]` keys and values;
/// `mask` is added to the scores.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    profile::time(Op::Attention, || match Kernel::for_inputs(q, k, v, heads, mask) {
        Kernel::HostFused => q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &FusedAttention { heads }),
        #[cfg(feature = "cuda")]
        Kernel::CudaFlash => crate::attention_flash::attention(q, k, v, heads),
        _ => by_candle_ops(q, k, v, heads, mask),
    })
}

/// The implementations [`attention`] chooses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The CPU's fused f32 kernel (below).
    HostFused,
    /// The fused GPU kernel (`attention_flash`, builds with the `cuda` feature).
    CudaFlash,
    /// candle's tensor ops, in query chunks ([`by_candle_ops`]).
    CandleOps,
}

impl Kernel {
    /// The one [`attention`] takes for these inputs.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn for_inputs(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Kernel {
        let host_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        if mask.is_none() && host_f32(q) && host_f32(k) && host_f32(v) {
            return Kernel::HostFused;
        }
        #[cfg(feature = "cuda")]
        if crate::attention_flash::applies(q, k, v, heads, mask.is_some()) {
            return Kernel::CudaFlash;
        }
        Kernel::CandleOps
    }
}

/// Scores one fused task holds at once (f32): 1 Mi values, 4 MiB (smaller blocks re-pack each
/// head's keys and values for fewer rows: measured slower at 4096 and 16384 tokens).
const TASK_SCORES: usize = 1 << 20;

struct FusedAttention {
    heads: usize,
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "attention-fused"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, n, inner) = l1.shape().dims3()?;
        let (kb, m, k_inner) = l2.shape().dims3()?;
        if l3.shape() != l2.shape() || kb != b || k_inner != inner || inner % self.heads != 0 {
            candle_core::bail!("attention-fused: q {:?}, k {:?}, v {:?} with {} heads", l1.shape(), l2.shape(), l3.shape(), self.heads);
        }
        let (q, k, v) = (f32_values(s1, l1, self.name())?, f32_values(s2, l2, self.name())?, f32_values(s3, l3, self.name())?);
        let hd = inner / self.heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; b * n * inner];
        if n == 0 || m == 0 || hd == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((b, n, inner))));
        }
        // Each head's keys transposed (hd × m) and values (m × hd) made contiguous once, for
        // the products of all its row blocks to read (gathering them strided in every task's
        // product took half the time).
        let heads = b * self.heads;
        let mut kt = vec![0f32; heads * hd * m];
        let mut vh = vec![0f32; heads * m * hd];
        kt.par_chunks_mut(hd * m).zip(vh.par_chunks_mut(m * hd)).enumerate().for_each(|(index, (kt, vh))| {
            let (item, column) = (index / self.heads, index % self.heads * hd);
            let (k, v) = (&k[item * m * inner..(item + 1) * m * inner], &v[item * m * inner..(item + 1) * m * inner]);
            for j in 0..m {
                let row = &k[j * inner + column..j * inner + column + hd];
                for (d, &value) in row.iter().enumerate() {
                    kt[d * m + j] = value;
                }
                vh[j * hd..(j + 1) * hd].copy_from_slice(&v[j * inner + column..j * inner + column + hd]);
            }
        });
        let rows = (TASK_SCORES / m).clamp(1, n);
        let blocks = n.div_ceil(rows);
        let dst = SharedMut::new(out.as_mut_ptr());
        let (kt, vh) = (&kt, &vh);
        (0..heads * blocks).into_par_iter().for_each(|task| {
            let (item, head, block) = (task / (self.heads * blocks), task / blocks % self.heads, task % blocks);
            let start = block * rows;
            let r = rows.min(n - start);
            let column = head * hd;
            let q_rows = q[(item * n + start) * inner + column..].as_ptr();
            let keys = &kt[(item * self.heads + head) * hd * m..][..hd * m];
            let values = &vh[(item * self.heads + head) * m * hd..][..m * hd];
            let out_rows = dst.get().wrapping_add((item * n + start) * inner + column);
            let mut scores = vec![0f32; r * m];
            // SAFETY: q's rows start..start+r, hd wide at `column` with row stride `inner`, lie
            // inside q; `keys` is hd × m, `scores` r × m.
            unsafe {
                Product {
                    m: r,
                    n: m,
                    k: hd,
                    a: q_rows,
                    lda: inner,
                    b: keys.as_ptr(),
                    ldb: m,
                    b_transposed: false,
                    c: scores.as_mut_ptr(),
                    ldc: m,
                    accumulate: false,
                }
                .run(false)
            };
            let sums: Vec<f32> = scores.chunks_exact_mut(m).map(|row| softmax_numerators(row, scale)).collect();
            // SAFETY: the output block (r rows × hd at `column`, stride `inner`) is this task's
            // alone: tasks differ in item, head (column block) or row block.
            unsafe {
                Product {
                    m: r,
                    n: hd,
                    k: m,
                    a: scores.as_ptr(),
                    lda: m,
                    b: values.as_ptr(),
                    ldb: hd,
                    b_transposed: false,
                    c: out_rows,
                    ldc: inner,
                    accumulate: false,
                }
                .run(false);
                for (i, sum) in sums.iter().enumerate() {
                    let row = std::slice::from_raw_parts_mut(out_rows.add(i * inner), hd);
                    row.iter_mut().for_each(|o| *o /= sum);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, n, inner))))
    }
}

/// A row of scores replaced by `exp((s − max)·scale)`; returns their sum (the softmax's
/// denominator). Compiled for AVX-512 too, taken where the CPU has it (the default build
/// targets baseline x86-64: 4 lanes).
fn softmax_numerators(row: &mut [f32], scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above).
        return unsafe { softmax_numerators_avx512(row, scale) };
    }
    softmax_numerators_portable(row, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_numerators_avx512(row: &mut [f32], scale: f32) -> f32 {
    softmax_numerators_portable(row, scale)
}

/// Max and sum run in 16 independent lanes: a single running max or sum waits on each step
/// (4 cycles a value), which made the whole attention 5× slower.
#[inline(always)]
fn softmax_numerators_portable(row: &mut [f32], scale: f32) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v);
        }
    }
    let max = chunks.remainder().iter().chain(&lanes).copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (sum, v) in sums.iter_mut().zip(chunk) {
            *v = fastmath::exp((*v - max) * scale);
            *sum += *v;
        }
    }
    let mut rest = 0f32;
    for v in chunks.into_remainder() {
        *v = fastmath::exp((*v - max) * scale);
        rest += *v;
    }
    sums.iter().sum::<f32>() + rest
}

/// Attention by candle's tensor ops, in query chunks whose scores stay within [`SCORE_BUDGET`]:
/// any device and dtype, and the reference the fused kernels are compared with.
pub fn by_candle_ops(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, n, inner) = q.dims3()?;
    let m = k.dim(1)?;
    let hd = inner / heads;
    let split = |t: &Tensor, len: usize| t.reshape((b, len, heads, hd))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(q, n)?, split(k, m)?, split(v, m)?);
    let in_dtype = q.dtype();
    // Scores in f32 on the CPU (candle's half-precision CPU kernels round every step); on a
    // GPU in the input's dtype, as PyTorch's SDPA does: cuBLAS accumulates half-precision
    // products in f32, and candle's softmax kernel sums them in f32 — at 1024² an f32 product
    // there would run off the tensor cores and move twice the bytes.
    let score_dtype = if q.device().is_cuda() { in_dtype } else { DType::F32 };
    let q = (q.to_dtype(score_dtype)? * (1.0 / (hd as f64).sqrt()))?;
    let k = k.to_dtype(score_dtype)?;
    let k_t = k.t()?;
    let rows_of = |q: &Tensor| -> Result<Tensor> {
        let mut scores = q.matmul(&k_t)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(&mask.to_dtype(scores.dtype())?)?;
        }
        candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(in_dtype)?.matmul(&v)
    };
    // Softmax is per query row, so queries can go in chunks: the score matrix never exceeds
    // SCORE_BUDGET elements, whatever the image size (a full one is quadratic in pixels).
    let rows = (SCORE_BUDGET / (b * heads * m).max(1)).max(1);
    // (Masked attention is CLIP's, 77 tokens: never chunked, so the mask needs no slicing.)
    let out = if n <= rows || mask.is_some() {
        rows_of(&q)?
    } else {
        let chunks = (0..n)
            .step_by(rows)
            .map(|start| rows_of(&q.narrow(2, start, rows.min(n - start))?.contiguous()?))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&chunks, 2)?
    };
    out.transpose(1, 2)?.reshape((b, n, inner))
}

/// Most attention scores candle's path holds at once: 32 Mi elements (128 MiB in f32).
const SCORE_BUDGET: usize = 32 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_matches_candle_ops() {
        let dev = Device::Cpu;
        // (batch, queries, keys, heads, head_dim): self- and cross-attention, one head (the
        // VAE), several row blocks (keys > TASK_SCORES / rows), a single query.
        for &(b, n, m, heads, hd) in &[(2, 64, 64, 4, 16), (2, 50, 77, 5, 8), (1, 300, 300, 1, 32), (1, 40, 7000, 2, 8), (1, 1, 9, 3, 4)] {
            let q = Tensor::randn(0f32, 1., (b, n, heads * hd), &dev).unwrap();
            let k = Tensor::randn(0f32, 1., (b, m, heads * hd), &dev).unwrap();
            let v = Tensor::randn(0f32, 1., (b, m, heads * hd), &dev).unwrap();
            let fused = attention(&q, &k, &v, heads, None).unwrap();
            let reference = by_candle_ops(&q, &k, &v, heads, None).unwrap();
            let diff = (fused - reference).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "{b}×{n}×{m}, {heads}×{hd}: {diff}");
        }
    }

    #[test]
    fn the_kernel_follows_device_dtype_and_mask() {
        let t = |dtype| Tensor::zeros((1, 8, 64), dtype, &Device::Cpu).unwrap();
        let (f32s, f16s) = (t(DType::F32), t(DType::F16));
        let mask = Tensor::zeros((8, 8), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(Kernel::for_inputs(&f32s, &f32s, &f32s, 1, None), Kernel::HostFused);
        assert_eq!(Kernel::for_inputs(&f32s, &f32s, &f32s, 1, Some(&mask)), Kernel::CandleOps);
        // Half precision on the CPU: candle's ops (the fused kernels there are f32's).
        assert_eq!(Kernel::for_inputs(&f16s, &f16s, &f16s, 1, None), Kernel::CandleOps);
    }

    /// GFLOP/s of the fused attention at SDXL's shapes:
    /// `cargo test -p focal-engine --release --lib attention::tests::speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn speed() {
        for &(what, b, n, heads, hd) in &[
            ("UNet 1024² level 1 (CFG)", 2, 4096, 10, 64),
            ("UNet 512² level 2 (CFG)", 2, 256, 20, 64),
            ("VAE 1024² mid", 1, 16384, 1, 512),
        ] {
            let dev = Device::Cpu;
            let q = Tensor::randn(0f32, 1., (b, n, heads * hd), &dev).unwrap();
            let k = Tensor::randn(0f32, 1., (b, n, heads * hd), &dev).unwrap();
            let v = Tensor::randn(0f32, 1., (b, n, heads * hd), &dev).unwrap();
            attention(&q, &k, &v, heads, None).unwrap();
            let t = std::time::Instant::now();
            attention(&q, &k, &v, heads, None).unwrap();
            let s = t.elapsed().as_secs_f64();
            let flops = 4.0 * (b * heads * n * n * hd) as f64;
            println!("{what:26} {:8.1} ms, {:6.1} GFLOP/s", s * 1e3, flops / s / 1e9);
        }
    }
}
