//! Multi-head scaled dot-product attention.
//!
//! On the CPU in f32 without a mask (every attention of the UNet and the VAE) it is fused: the
//! work is split into tasks of (batch item, head, block of query rows), run in parallel, and each
//! task does `scores = q·kᵀ` for its rows, the softmax in place and `out = p·v` straight into
//! the output's `[B, N, heads·head_dim]` layout — reading q, k and v where they lie (a head is a
//! column block, so no split/transpose copies), and holding only its own block of scores, so the
//! score matrix (quadratic in pixels) never exists whole. Masked attention (CLIP's causal mask,
//! 77 tokens), other devices and dtypes take candle's ops, in query chunks of bounded size.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::blas::{Product, SharedMut};
use crate::fastmath;
use crate::profile::{self, Op};

/// Attention on `[B, N, heads·head_dim]` queries and `[B, M, heads·head_dim]` keys and values;
/// `mask` is added to the scores.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    profile::time(Op::Attention, || {
        let host_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        if mask.is_none() && host_f32(q) && host_f32(k) && host_f32(v) {
            q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &FusedAttention { heads })
        } else {
            by_candle_ops(q, k, v, heads, mask)
        }
    })
}

/// Scores one fused task holds at once (f32): 256 Ki values, 1 MiB, about a core's L2.
const TASK_SCORES: usize = 256 << 10;

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
        let slice = |s: &'_ CpuStorage, l: &Layout| -> Result<(*const f32, usize)> {
            let CpuStorage::F32(data) = s else { candle_core::bail!("attention-fused takes f32") };
            let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("attention-fused takes contiguous tensors") };
            Ok((data[start..end].as_ptr(), end - start))
        };
        let (b, n, inner) = l1.shape().dims3()?;
        let (kb, m, k_inner) = l2.shape().dims3()?;
        if l3.shape() != l2.shape() || kb != b || k_inner != inner || inner % self.heads != 0 {
            candle_core::bail!("attention-fused: q {:?}, k {:?}, v {:?} with {} heads", l1.shape(), l2.shape(), l3.shape(), self.heads);
        }
        let ((q, _), (k, _), (v, _)) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (q, k, v) = (q as usize, k as usize, v as usize); // plain addresses, to share with the tasks
        let hd = inner / self.heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; b * n * inner];
        if n == 0 || m == 0 || hd == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((b, n, inner))));
        }
        let rows = (TASK_SCORES / m).clamp(1, n);
        let blocks = n.div_ceil(rows);
        let dst = SharedMut(out.as_mut_ptr());
        (0..b * self.heads * blocks).into_par_iter().for_each(|task| {
            let (item, head, block) = (task / (self.heads * blocks), task / blocks % self.heads, task % blocks);
            let start = block * rows;
            let r = rows.min(n - start);
            let dst = dst;
            let column = head * hd;
            let q_rows = (q as *const f32).wrapping_add((item * n + start) * inner + column);
            let k_rows = (k as *const f32).wrapping_add(item * m * inner + column);
            let v_rows = (v as *const f32).wrapping_add(item * m * inner + column);
            let out_rows = dst.0.wrapping_add((item * n + start) * inner + column);
            let mut scores = vec![0f32; r * m];
            // SAFETY: q's rows start..start+r, k's and v's m rows of this item, each hd wide at
            // `column` with row stride `inner`, lie inside their tensors; `scores` is r × m.
            unsafe {
                Product {
                    m: r,
                    n: m,
                    k: hd,
                    a: q_rows,
                    lda: inner,
                    b: k_rows,
                    ldb: inner,
                    b_transposed: true,
                    c: scores.as_mut_ptr(),
                    ldc: m,
                    accumulate: false,
                }
                .run(false)
            };
            let mut sums = Vec::with_capacity(r);
            for row in scores.chunks_exact_mut(m) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for s in row.iter_mut() {
                    *s = fastmath::exp((*s - max) * scale);
                    sum += *s;
                }
                sums.push(sum);
            }
            // SAFETY: the output block (r rows × hd at `column`, stride `inner`) is this task's
            // alone: tasks differ in item, head (column block) or row block.
            unsafe {
                Product {
                    m: r,
                    n: hd,
                    k: m,
                    a: scores.as_ptr(),
                    lda: m,
                    b: v_rows,
                    ldb: inner,
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

/// Attention by candle's tensor ops, in query chunks whose scores stay within [`SCORE_BUDGET`].
fn by_candle_ops(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, n, inner) = q.dims3()?;
    let m = k.dim(1)?;
    let hd = inner / heads;
    let split = |t: &Tensor, len: usize| t.reshape((b, len, heads, hd))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(q, n)?, split(k, m)?, split(v, m)?);
    let in_dtype = q.dtype();
    // Scores and softmax in f32 for stability in half precision.
    let q = (q.to_dtype(DType::F32)? * (1.0 / (hd as f64).sqrt()))?;
    let k = k.to_dtype(DType::F32)?;
    let k_t = k.t()?;
    let rows_of = |q: &Tensor| -> Result<Tensor> {
        let mut scores = q.matmul(&k_t)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
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

/// Most attention scores candle's path holds at once (f32): 32 Mi elements, 128 MiB.
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
}
