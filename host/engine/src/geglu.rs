//! GEGLU, the gated feed-forward activation of SDXL's transformer blocks: the projection holds
//! `[value | gate]` along its last axis and the result is `value · gelu(gate)` (erf form). On
//! the CPU in f32 it is one pass over the rows in parallel, with the same arithmetic as candle's
//! `gelu_erf` (bit-identical results) — candle's ops take three single-threaded passes (two
//! strided halves, the GELU, the product). On a GPU in half precision, one kernel that also adds
//! the projection's bias (`geglu_cuda`).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::f32_values;

/// GEGLU of a projection, `geglu(proj(x))`: on a GPU in f16/bf16 the projection's bias is added
/// by the fused kernel (`geglu_cuda`) rather than by a pass of its own.
pub fn geglu_of(proj: &crate::linear::Linear, x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if crate::geglu_cuda::applies(x, proj) {
        let (product, bias) = proj.forward_unbiased(x)?;
        return match bias {
            Some(bias) => crate::geglu_cuda::geglu_with_bias(&product, bias),
            None => geglu(&product),
        };
    }
    geglu(&candle_core::Module::forward(proj, x)?)
}

/// `value · gelu_erf(gate)` for `x = [value | gate]` on the last axis.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() >= 1 {
        return x.contiguous()?.apply_op1_no_bwd(&FusedGeglu);
    }
    let last = x.rank() - 1;
    let half = x.dim(last)? / 2;
    x.narrow(last, 0, half)? * x.narrow(last, half, half)?.gelu_erf()?
}

struct FusedGeglu;

/// Rows per parallel task: enough work to amortise the hand-off.
const ROWS_PER_TASK: usize = 16;

impl CustomOp1 for FusedGeglu {
    fn name(&self) -> &'static str {
        "geglu-fused"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_values(storage, layout, self.name())?;
        let mut dims = layout.shape().dims().to_vec();
        let width = *dims.last().expect("rank ≥ 1");
        if !width.is_multiple_of(2) {
            candle_core::bail!("geglu-fused: the last axis ({width}) holds value and gate halves");
        }
        let half = width / 2;
        *dims.last_mut().expect("rank ≥ 1") = half;
        let mut out = vec![0f32; x.len() / 2];
        if half > 0 {
            out.par_chunks_mut(half * ROWS_PER_TASK).zip(x.par_chunks(width * ROWS_PER_TASK)).for_each(|(dst, src)| {
                for (dst, row) in dst.chunks_exact_mut(half).zip(src.chunks_exact(width)) {
                    let (value, gate) = row.split_at(half);
                    for ((d, &v), &g) in dst.iter_mut().zip(value).zip(gate) {
                        let gelu = (candle_core::cpu::erf::erf_f32(g * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * g;
                        *d = v * gelu;
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_ops_exactly() {
        let x = (Tensor::randn(0f32, 1., (2, 37, 24), &Device::Cpu).unwrap() * 3.0).unwrap();
        let ours = geglu(&x).unwrap();
        let theirs = (x.narrow(2, 0, 12).unwrap() * x.narrow(2, 12, 12).unwrap().gelu_erf().unwrap()).unwrap();
        assert_eq!(ours.dims(), &[2, 37, 12]);
        assert_eq!(ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(), theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
}
