//! The linear layer `y = x · wᵀ + b`. On the CPU in f32 the weight is kept transposed
//! (`[in, out]`, the layout the GEMM streams fastest: 5–25% over reading `[out, in]` across),
//! and every leading dimension of `x` is one row of a single matrix product started from the
//! bias — where candle's `Linear` runs one product per batch item and adds the bias in a second,
//! single-threaded pass. Other devices and dtypes use candle's.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::blas::Product;
use crate::cpu::{f32_values, with_f32_values};
use crate::profile::{self, Op};

#[derive(Clone, Debug)]
pub struct Linear {
    /// Its weight a view of `transposed` when the layer runs as one product.
    candle: candle_nn::Linear,
    host: Option<HostLayer>,
}

/// What the one-product form holds: the weight `[in, out]` (contiguous) or, for a widening
/// layer that sees few rows, as stored (`[out, in]`), in f32 or, for [`Linear::for_few_rows`],
/// the half precision it narrows to exactly; the bias as floats.
#[derive(Clone, Debug)]
struct HostLayer {
    weight: Tensor,
    as_stored: bool,
    bias: Option<Arc<[f32]>>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self::with_layout(weight, bias, false)
    }

    /// A layer of a model that runs few rows at a time (the text encoders and vision towers:
    /// 77–257 tokens). Where it widens (out > in, the MLPs' first layer) the GEMM runs its
    /// product ~1.7× faster on the weight as stored than transposed (`blas::tests::speed`,
    /// 77×1280·1280×5120); elsewhere the transposed form is the faster one there too.
    ///
    /// Such a layer keeps a half-precision checkpoint's weight at half precision (when that loses
    /// nothing: not merged with a LoRA, not an f32 checkpoint) and widens it on each call into a
    /// reused buffer: SDXL's text encoders hold 1.6 GB less, and encode as fast (the widening is
    /// memory-bound and small beside the products at 77 tokens).
    pub fn for_few_rows(weight: Tensor, bias: Option<Tensor>) -> Self {
        let widens = weight.dims2().is_ok_and(|(out, inp)| out > inp);
        Self::with_layout(weight, bias, widens).compacted()
    }

    fn compacted(mut self) -> Self {
        if let Some(host) = &mut self.host {
            if let Some(half) = crate::cpu::narrowed_exactly(&host.weight) {
                let view = if host.as_stored { half.clone() } else { half.t().expect("rank 2") };
                self.candle = candle_nn::Linear::new(view, self.candle.bias().cloned());
                host.weight = half;
            }
        }
        self
    }

    fn with_layout(weight: Tensor, bias: Option<Tensor>, as_stored: bool) -> Self {
        let host_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        let bias_tensor = bias.clone();
        let host_bias = match &bias {
            _ if !host_f32(&weight) || weight.rank() != 2 => None,
            None => Some(None),
            Some(b) if host_f32(b) => b.to_vec1::<f32>().ok().map(|v| Some(Arc::from(v))),
            Some(_) => None,
        };
        if as_stored {
            return match (host_bias, weight.contiguous()) {
                (Some(bias), Ok(weight)) => {
                    Self { candle: candle_nn::Linear::new(weight.clone(), bias_tensor), host: Some(HostLayer { weight, as_stored, bias }) }
                }
                _ => Self { candle: candle_nn::Linear::new(weight, bias_tensor), host: None },
            };
        }
        // The transposed copy replaces the weight (dropping the last handle frees the original).
        let transposed = host_bias.as_ref().and_then(|_| weight.contiguous().and_then(|w| w.apply_op1_no_bwd(&Transpose)).ok());
        match (host_bias, transposed) {
            (Some(bias), Some(transposed)) => {
                let view = transposed.t().expect("rank 2");
                Self { candle: candle_nn::Linear::new(view, bias_tensor), host: Some(HostLayer { weight: transposed, as_stored, bias }) }
            }
            _ => Self { candle: candle_nn::Linear::new(weight, bias_tensor), host: None },
        }
    }

    /// `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        self.candle.weight()
    }

    /// The product `x·Wᵀ` without the bias, and the bias, for a following kernel that adds it
    /// in its own pass (`geglu::geglu_of` on a GPU). candle's product, whatever the device.
    pub fn forward_unbiased(&self, x: &Tensor) -> Result<(Tensor, Option<&Tensor>)> {
        let product = profile::time(Op::Linear, || candle_nn::Linear::new(self.candle.weight().clone(), None).forward(x))?;
        Ok((product, self.candle.bias()))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        profile::time(Op::Linear, || match &self.host {
            Some(host) if x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() >= 1 => {
                x.contiguous()?.apply_op2_no_bwd(&host.weight, &OneProduct { bias: host.bias.clone(), as_stored: host.as_stored })
            }
            _ => self.candle.forward(x),
        })
    }
}

/// A 2-D f32 matrix transposed into a new contiguous one, in parallel cache-sized tiles (the
/// UNet's linear weights are 5 GB in f32: candle's single-threaded strided copy doubled the
/// checkpoint's load time).
struct Transpose;

/// Tile side: a 64×64 tile of each matrix (16 KiB each) sits in L1/L2 while it is copied.
const TILE: usize = 64;

impl CustomOp1 for Transpose {
    fn name(&self) -> &'static str {
        "transpose-tiled"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_values(storage, layout, self.name())?;
        let (rows, cols) = layout.shape().dims2()?;
        let mut dst = vec![0f32; rows * cols];
        if rows > 0 {
            // Each task writes TILE rows of the result (TILE columns of the source).
            dst.par_chunks_mut(TILE * rows).enumerate().for_each(|(block, out)| {
                let c0 = block * TILE;
                let width = out.len() / rows;
                for r0 in (0..rows).step_by(TILE) {
                    let height = TILE.min(rows - r0);
                    let tile = &src[r0 * cols + c0..(r0 + height - 1) * cols + c0 + width];
                    for c in 0..width {
                        let out_row = &mut out[c * rows + r0..c * rows + r0 + height];
                        for (i, o) in out_row.iter_mut().enumerate() {
                            *o = tile[i * cols + c];
                        }
                    }
                }
            });
        }
        Ok((CpuStorage::F32(dst), Shape::from((cols, rows))))
    }
}

struct OneProduct {
    bias: Option<Arc<[f32]>>,
    /// The weight is `[out, in]` (else `[in, out]`).
    as_stored: bool,
}

impl CustomOp2 for OneProduct {
    fn name(&self) -> &'static str {
        "linear-one-product"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_values(s1, l1, self.name())?;
        let (inp, out) = match self.as_stored {
            false => l2.shape().dims2()?,
            true => {
                let (out, inp) = l2.shape().dims2()?;
                (inp, out)
            }
        };
        let dims = l1.shape().dims();
        if dims.last() != Some(&inp) || self.bias.as_ref().is_some_and(|b| b.len() != out) {
            candle_core::bail!("linear-one-product: input {:?} does not fit weight {:?}", l1.shape(), l2.shape());
        }
        let rows = x.len() / inp.max(1);
        let mut y = vec![0f32; rows * out];
        if let Some(bias) = &self.bias {
            y.chunks_exact_mut(out).for_each(|row| row.copy_from_slice(bias));
        }
        with_f32_values(s2, l2, self.name(), |w| {
            // SAFETY: x is rows × inp, w inp × out, y rows × out.
            unsafe {
                Product {
                    m: rows,
                    n: out,
                    k: inp,
                    a: x.as_ptr(),
                    lda: inp,
                    b: w.as_ptr(),
                    ldb: if self.as_stored { inp } else { out },
                    b_transposed: self.as_stored,
                    c: y.as_mut_ptr(),
                    ldc: out,
                    accumulate: self.bias.is_some(),
                }
                .run(true)
            }
        })?;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank ≥ 1") = out;
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle() {
        let dev = Device::Cpu;
        for (dims, bias) in [(vec![2usize, 5, 12], true), (vec![7, 12], false), (vec![2, 3, 4, 12], true)] {
            let x = Tensor::randn(0f32, 1., dims.as_slice(), &dev).unwrap();
            let w = Tensor::randn(0f32, 1., (9, 12), &dev).unwrap();
            let b = bias.then(|| Tensor::randn(0f32, 1., 9, &dev).unwrap());
            let theirs = candle_nn::Linear::new(w.clone(), b.clone()).forward(&x).unwrap();
            // Transposed, and as stored (a widening layer for few rows).
            let widening = Tensor::randn(0f32, 1., (15, 12), &dev).unwrap();
            let widening_b = bias.then(|| Tensor::randn(0f32, 1., 15, &dev).unwrap());
            let widened = candle_nn::Linear::new(widening.clone(), widening_b.clone()).forward(&x).unwrap();
            for (ours, theirs) in [
                (Linear::new(w.clone(), b.clone()), &theirs),
                (Linear::for_few_rows(w, b), &theirs),
                (Linear::for_few_rows(widening, widening_b), &widened),
            ] {
                assert_eq!(ours.host.as_ref().map(|h| h.as_stored), Some(theirs.dims().last() == Some(&15)));
                let ours = ours.forward(&x).unwrap();
                assert_eq!(ours.dims(), theirs.dims());
                let diff = (ours - theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < 1e-4, "{dims:?}: {diff}");
            }
        }
    }

    #[test]
    fn half_weights_kept_half_give_the_same_output() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (3, 77, 96), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., 96, &dev).unwrap();
        // Widening (kept as stored) and narrowing (kept transposed) layers of an f16 checkpoint.
        for (out, inp) in [(96, 64), (64, 96)] {
            let w = Tensor::randn(0f32, 1., (out, inp), &dev).unwrap().to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap();
            let b = b.narrow(0, 0, out).unwrap();
            let x = x.narrow(2, 0, inp).unwrap().contiguous().unwrap();
            let full = Linear::new(w.clone(), Some(b.clone())).forward(&x).unwrap();
            let compact = Linear::for_few_rows(w, Some(b));
            assert_eq!(compact.host.as_ref().unwrap().weight.dtype(), DType::F16);
            let y = compact.forward(&x).unwrap();
            assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), full.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }

    #[test]
    fn tiled_transpose_matches_candle() {
        for (rows, cols) in [(1, 1), (3, 130), (129, 65), (64, 64)] {
            let m = Tensor::randn(0f32, 1., (rows, cols), &Device::Cpu).unwrap();
            let ours = m.apply_op1_no_bwd(&Transpose).unwrap();
            assert_eq!(ours.dims(), &[cols, rows]);
            assert_eq!(ours.to_vec2::<f32>().unwrap(), m.t().unwrap().to_vec2::<f32>().unwrap());
        }
    }
}
