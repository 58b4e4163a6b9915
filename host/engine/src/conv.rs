//! 2-D convolution for the engine's models. On the CPU in f32, a stride-1 k×k convolution
//! (every 3×3 of the UNet, the VAE and the upscaler) runs as k² accumulated GEMMs over one
//! zero-padded copy of the input — the "shifted GEMM" form: for kernel tap (kh, kw) the output
//! at flat position `q = y·Wp + x` of the padded width `Wp` reads input `q + kh·Wp + kw`, so each
//! tap is one plain matrix product `W[kh, kw] · X[:, offset..]` with no im2col buffer. The
//! output rows carry `k − 1` spare columns that are dropped at the end; a 1×1 convolution
//! without padding is the one product straight from the input into the output. The weights of
//! such layers are kept tap-major (`[k, k, out, in]`, one GEMM-ready matrix per tap). Everything
//! else (other devices and dtypes, strides) goes to candle's convolution.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};

use crate::blas::sgemm;
use crate::profile::{self, Op};

/// A convolution layer: weight `[out, in, k, k]`, optional bias `[out]`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// `[out, in, k, k]`, or `[k, k, out, in]` when `taps`.
    weight: Tensor,
    /// Whether the layer runs as shifted GEMMs (CPU, f32, stride 1, square kernel).
    taps: bool,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    /// The bias as host floats for the shifted GEMMs (each output row starts from it).
    bias_host: Option<Arc<[f32]>>,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Result<Self> {
        let (_, _, kh, kw) = weight.dims4()?;
        let host_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        let taps = host_f32(&weight) && bias.as_ref().is_none_or(host_f32) && stride == 1 && kh == kw && (kh > 1 || padding == 0);
        let bias_host = match &bias {
            Some(b) if taps => Some(Arc::from(b.to_vec1::<f32>()?)),
            _ => None,
        };
        let weight = if taps { weight.permute((2, 3, 0, 1))?.contiguous()? } else { weight };
        Ok(Self { weight, taps, bias, stride, padding, bias_host })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        profile::time(Op::Conv, || self.forward_untimed(x))
    }
}

impl Conv2d {
    fn forward_untimed(&self, x: &Tensor) -> Result<Tensor> {
        if self.taps && x.device().is_cpu() && x.dtype() == DType::F32 {
            let op = ShiftedGemm { padding: self.padding, bias: self.bias_host.clone() };
            return x.contiguous()?.apply_op2_no_bwd(&self.weight, &op);
        }
        let weight = if self.taps { self.weight.permute((2, 3, 0, 1))? } else { self.weight.clone() };
        let y = x.conv2d(&weight, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }
}

/// Stride-1 k×k convolution as k² GEMMs (input `[n, c, h, w]`, tap-major weight `[k, k, o, c]`,
/// both contiguous f32 on the CPU).
struct ShiftedGemm {
    padding: usize,
    bias: Option<Arc<[f32]>>,
}

impl ShiftedGemm {
    /// Each of the `o` output rows of `dst` (`len` values each) set to its bias.
    fn start_from_bias(&self, dst: &mut [f32], len: usize) -> bool {
        let Some(bias) = &self.bias else { return false };
        for (oc, row) in dst.chunks_exact_mut(len).enumerate() {
            row.fill(bias[oc]);
        }
        true
    }
}

impl CustomOp2 for ShiftedGemm {
    fn name(&self) -> &'static str {
        "conv2d-shifted-gemm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(input), CpuStorage::F32(weight)) = (s1, s2) else {
            candle_core::bail!("conv2d-shifted-gemm takes f32 tensors");
        };
        let (Some((i0, i1)), Some((w0, w1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("conv2d-shifted-gemm takes contiguous tensors");
        };
        let (input, weight) = (&input[i0..i1], &weight[w0..w1]);
        let (n, c, h, w) = l1.shape().dims4()?;
        let (k, k2, o, wc) = l2.shape().dims4()?;
        if wc != c || k != k2 {
            candle_core::bail!("conv2d-shifted-gemm: weight {:?} does not fit input {:?}", l2.shape(), l1.shape());
        }
        let p = self.padding;
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        if hp < k || wp < k {
            candle_core::bail!("conv2d-shifted-gemm: input {h}×{w} (padding {p}) is smaller than the kernel {k}×{k}");
        }
        let (ho, wo) = (hp - k + 1, wp - k + 1);
        let mut out = vec![0f32; n * o * ho * wo];
        if k == 1 && p == 0 {
            // A 1×1 convolution: per batch item `out = bias + W · X`, X the input's c × pixels.
            let pixels = h * w;
            for b in 0..n {
                let dst = &mut out[b * o * pixels..(b + 1) * o * pixels];
                let accumulate = self.start_from_bias(dst, pixels);
                // SAFETY: dst is o × pixels, the weight o × c, the batch item c × pixels.
                unsafe {
                    sgemm(
                        o,
                        pixels,
                        c,
                        weight.as_ptr(),
                        c,
                        input.as_ptr().add(b * c * pixels),
                        pixels,
                        dst.as_mut_ptr(),
                        pixels,
                        accumulate,
                    )
                };
            }
            return Ok((CpuStorage::F32(out), Shape::from((n, o, h, w))));
        }
        let plane = hp * wp;
        // The last taps of the spare columns read up to k − 1 values past the last plane.
        let mut padded = vec![0f32; c * plane + k];
        let mut wide = vec![0f32; o * ho * wp];
        for b in 0..n {
            let src = &input[b * c * h * w..(b + 1) * c * h * w];
            for ch in 0..c {
                for y in 0..h {
                    let row = &src[(ch * h + y) * w..(ch * h + y + 1) * w];
                    let at = ch * plane + (y + p) * wp + p;
                    padded[at..at + w].copy_from_slice(row);
                }
            }
            let from_bias = self.start_from_bias(&mut wide, ho * wp);
            for kh in 0..k {
                for kw in 0..k {
                    let tap = kh * k + kw;
                    // SAFETY: wide is o × (ho·wp); the tap's weight is o × c at `tap·o·c`; the
                    // input is c × (ho·wp) from `kh·wp + kw` with row stride `plane`, its last
                    // value within the k spare values at the end of `padded`.
                    unsafe {
                        sgemm(
                            o,
                            ho * wp,
                            c,
                            weight.as_ptr().add(tap * o * c),
                            c,
                            padded.as_ptr().add(kh * wp + kw),
                            plane,
                            wide.as_mut_ptr(),
                            ho * wp,
                            from_bias || tap > 0,
                        )
                    };
                }
            }
            let dst = &mut out[b * o * ho * wo..(b + 1) * o * ho * wo];
            for (oc, rows) in wide.chunks_exact(ho * wp).enumerate() {
                for y in 0..ho {
                    let at = (oc * ho + y) * wo;
                    dst[at..at + wo].copy_from_slice(&rows[y * wp..y * wp + wo]);
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, o, ho, wo))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn reference(x: &Tensor, w: &Tensor, b: Option<&Tensor>, padding: usize) -> Tensor {
        let y = x.conv2d(w, padding, 1, 1, 1).unwrap();
        match b {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0).unwrap(), 1, 1)).unwrap()).unwrap(),
            None => y,
        }
    }

    #[test]
    fn shifted_gemm_matches_candle() {
        let dev = Device::Cpu;
        for &(n, c, o, h, w, k, p, bias) in &[
            (1, 3, 5, 7, 9, 3, 1, true),
            (2, 8, 4, 6, 5, 3, 1, false),
            (1, 5, 6, 8, 8, 3, 0, true),
            (1, 4, 3, 9, 7, 5, 2, true),
            (2, 16, 8, 3, 4, 3, 1, true),
            (2, 6, 4, 5, 3, 1, 0, true),
            (1, 6, 4, 5, 3, 1, 0, false),
        ] {
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (o, c, k, k), &dev).unwrap();
            let b = bias.then(|| Tensor::randn(0f32, 1., o, &dev).unwrap());
            let conv = Conv2d::new(wt.clone(), b.clone(), 1, p).unwrap();
            assert!(conv.taps);
            let got = conv.forward(&x).unwrap();
            let want = reference(&x, &wt, b.as_ref(), p);
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{n} {c} {o} {h} {w} k{k} p{p}: max diff {diff}");
        }
    }

    #[test]
    fn strided_input_and_other_shapes_use_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 4, 8, 8), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1., (2, 4, 3, 3), &dev).unwrap();
        let strided = Conv2d::new(wt.clone(), None, 2, 1).unwrap();
        assert!(!strided.taps);
        assert_eq!(strided.forward(&x).unwrap().dims(), &[1, 2, 4, 4]);
        // A transposed (non-contiguous) input is made contiguous first.
        let xt = x.transpose(2, 3).unwrap();
        let conv = Conv2d::new(wt.clone(), None, 1, 1).unwrap();
        let got = conv.forward(&xt).unwrap();
        let want = reference(&xt.contiguous().unwrap(), &wt, None, 1);
        let diff = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4);
    }

    /// `cargo test -p focal-engine --release --lib conv::tests::speed -- --ignored --nocapture`:
    /// this path against candle's convolution at the engine's shapes, side by side.
    #[test]
    #[ignore]
    fn speed() {
        let dev = Device::Cpu;
        for &(what, n, c, o, h) in &[
            ("upscaler dense conv", 1, 128, 32, 128),
            ("upscaler trunk", 1, 64, 64, 128),
            ("UNet 512² level 0 (CFG)", 2, 320, 320, 64),
            ("UNet 512² level 2 (CFG)", 2, 1280, 1280, 16),
            ("VAE 512² 128²", 1, 512, 512, 128),
            ("VAE 512² 512²", 1, 128, 128, 512),
            ("UNet 512² 1×1 skip (CFG)", 2, 960, 640, 32),
        ] {
            let k = if what.contains("1×1") { 1 } else { 3 };
            let x = Tensor::randn(0f32, 1., (n, c, h, h), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (o, c, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., o, &dev).unwrap();
            let conv = Conv2d::new(wt.clone(), Some(b.clone()), 1, k / 2).unwrap();
            let time = |f: &dyn Fn() -> Tensor| {
                f();
                let t = std::time::Instant::now();
                for _ in 0..3 {
                    f();
                }
                t.elapsed().as_secs_f64() / 3.0
            };
            let ours = time(&|| conv.forward(&x).unwrap());
            let candle = time(&|| reference(&x, &wt, Some(&b), k / 2));
            println!(
                "{what:28} {n}×{c}→{o} {h}²: shifted GEMM {:8.1} ms, candle {:8.1} ms, ratio {:.2}",
                ours * 1e3,
                candle * 1e3,
                ours / candle
            );
        }
    }
}
