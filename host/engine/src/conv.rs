//! 2-D convolution for the engine's models. On the CPU in f32, a stride-1 k×k convolution
//! (every 3×3 of the UNet, the VAE and the upscaler) runs as k² accumulated GEMMs over one
//! zero-padded copy of the input — the "shifted GEMM" form: for kernel tap (kh, kw) the output
//! at flat position `q = y·Wp + x` of the padded width `Wp` reads input `q + kh·Wp + kw`, so each
//! tap is one plain matrix product `W[kh, kw] · X[:, offset..]` with no im2col buffer. The
//! output rows carry `k − 1` spare columns that are dropped at the end; a 1×1 convolution
//! without padding is the one product straight from the input into the output. The weights of
//! such layers are kept tap-major (`[k, k, out, in]`, one GEMM-ready matrix per tap).
//!
//! Layers with few input channels (`in·k² ≤ 2304`: the VAE's full-resolution layers, the
//! upscaler, small models) would make k² products of a short inner dimension; on CPUs with
//! AVX-512 they run in the direct form (`conv_direct.rs`: register tiles of 4 output channels ×
//! 96 columns over the same padded input, no GEMM; the upscaler opts out, see `esrgan.rs`),
//! elsewhere as "panels": per block of output columns, the k² shifted rows of every channel are
//! copied into one panel (`k²·in` rows: im2col for that block only) and one product with the
//! weight kept as `[out, k, k, in]` does the block. Everything else (other devices and dtypes, strides) goes to candle's convolution.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};

use rayon::prelude::*;

use crate::blas::{sgemm, Product};
use crate::conv_direct;
use crate::conv_winograd;
use crate::cpu::{f32_values, SharedMut};
use crate::norm::GroupNorm;
use crate::profile::{self, Op};

/// A convolution layer: weight `[out, in, k, k]`, optional bias `[out]`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// `[out, in, k, k]` (candle), `[k, k, out, in]` (taps) or `[out, k, k, in]` (panels).
    weight: Tensor,
    form: Form,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    /// The bias as host floats for the shifted GEMMs (each output row starts from it).
    bias_host: Option<Arc<[f32]>>,
    out_channels: usize,
    kernel: usize,
    /// A Winograd-form layer's form for calls with too few tiles for it, where that is not the
    /// taps its weight serves (the direct form of layers with few input channels).
    below_winograd: Option<Arc<Conv2d>>,
}

/// How a layer runs (see the module's notes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Candle,
    Taps,
    Panels,
    /// `conv_direct.rs`, weight packed `[⌈o/4⌉, c, k², 4]`.
    Direct,
    /// `conv_winograd.rs` (3×3, padding 1), weight as the taps'; inputs with too few tiles for
    /// it go to `below_winograd`, or else to the taps.
    Winograd,
}

/// Largest inner dimension (`in·k²`) run as panels: 256 channels of a 3×3.
const PANEL_MAX_INNER: usize = 2304;

/// Fewest input and output channels of a layer run in Winograd's form (narrower ones gain
/// nothing: the VAE's 3-channel output, a UNet's 4-channel input).
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Whether 3×3 layers run in Winograd's form: yes unless `FOCAL_WINOGRAD=0` (to compare its
/// rounding against the direct sums; read once).
fn winograd_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("FOCAL_WINOGRAD").map_or(true, |v| v != "0"))
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Result<Self> {
        Self::choosing(weight, bias, stride, padding, conv_direct::available(), winograd_enabled())
    }

    /// The layer on the GEMM forms only (never the direct or Winograd's), for a model whose
    /// outputs must round exactly as they did (see `esrgan.rs`).
    pub fn on_gemm(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Result<Self> {
        Self::choosing(weight, bias, stride, padding, false, false)
    }

    fn choosing(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize, direct: bool, winograd: bool) -> Result<Self> {
        let (_, c, kh, kw) = weight.dims4()?;
        let host_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        let ours = host_f32(&weight) && bias.as_ref().is_none_or(host_f32) && stride == 1 && kh == kw && (kh > 1 || padding == 0);
        let (o, ..) = weight.dims4()?;
        let form = match ours {
            false => Form::Candle,
            // 3×3 "same" layers of some width: Winograd's form (a quarter of the work).
            true if winograd && kh == 3 && padding == 1 && c.min(o) >= WINOGRAD_MIN_CHANNELS => Form::Winograd,
            // Few input channels: the direct form where the CPU has it (measured at or above
            // the panels' speed at every such shape; wide layers keep the GEMM's taps).
            true if kh > 1 && c * kh * kw <= PANEL_MAX_INNER && direct => Form::Direct,
            true if kh > 1 && c * kh * kw <= PANEL_MAX_INNER => Form::Panels,
            true => Form::Taps,
        };
        Self::with_form(weight, bias, stride, padding, form)
    }

    fn with_form(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize, form: Form) -> Result<Self> {
        let (out_channels, _, kernel, _) = weight.dims4()?;
        let bias_host = match (&bias, form) {
            (Some(_), Form::Candle) | (None, _) => None,
            // The direct form's tiles start from whole quads of biases.
            (Some(b), Form::Direct) => {
                let mut values = b.to_vec1::<f32>()?;
                values.resize(out_channels.div_ceil(conv_direct::QUAD) * conv_direct::QUAD, 0.0);
                Some(Arc::from(values))
            }
            (Some(b), _) => Some(Arc::from(b.to_vec1::<f32>()?)),
        };
        let below_winograd = match form {
            Form::Winograd => Some(Self::choosing(weight.clone(), bias.clone(), stride, padding, conv_direct::available(), false)?)
                .filter(|layer| layer.form != Form::Taps)
                .map(Arc::new),
            _ => None,
        };
        let weight = match form {
            Form::Candle => weight,
            Form::Taps | Form::Winograd => weight.permute((2, 3, 0, 1))?.contiguous()?,
            Form::Panels => weight.permute((0, 2, 3, 1))?.contiguous()?,
            Form::Direct => conv_direct::pack(&weight)?,
        };
        Ok(Self { weight, form, bias, stride, padding, bias_host, out_channels, kernel, below_winograd })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        profile::time(Op::Conv, || self.forward_untimed(x))
    }
}

impl Conv2d {
    /// The layer on `x` upsampled 2× by nearest neighbour (the decoders' upsampling step): in
    /// Winograd's form the doubled input is never made, only read.
    pub fn forward_upsampled(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        profile::time(Op::Conv, || match self.winograd_runs(x, true)? {
            true => self.winograd(x, true, None),
            false => self.forward_untimed(&x.upsample_nearest2d(2 * h, 2 * w)?),
        })
    }

    /// `self(silu(norm(x)))` (every ResBlock's step): in Winograd's form the normalised input
    /// is never made; its values are computed as the transform reads them, bit for bit those
    /// of `norm.forward_silu`.
    pub fn forward_normalized(&self, norm: &GroupNorm, x: &Tensor) -> Result<Tensor> {
        if self.winograd_runs(x, false)? {
            if let Some(pairs) = norm.silu_affines(x)? {
                return profile::time(Op::Conv, || self.winograd(x, false, Some(pairs.into())));
            }
        }
        self.forward(&norm.forward_silu(x)?)
    }

    /// Whether this layer runs in Winograd's form on `x` (`doubled`: on its 2× upsampling).
    fn winograd_runs(&self, x: &Tensor, doubled: bool) -> Result<bool> {
        if self.form != Form::Winograd || !x.device().is_cpu() || x.dtype() != DType::F32 {
            return Ok(false);
        }
        let (n, c, h, w) = x.dims4()?;
        let scale = if doubled { 2 } else { 1 };
        let shape = conv_winograd::Shape { n, c, h: h * scale, w: w * scale, o: self.out_channels, doubled };
        Ok(shape.tile_count() >= WINOGRAD_MIN_TILES)
    }

    /// The layer in Winograd's form (see [`Winograd`]); the caller checked `winograd_runs`.
    fn winograd(&self, x: &Tensor, doubled: bool, normalized: Option<Arc<[(f32, f32)]>>) -> Result<Tensor> {
        let op = Winograd { bias: self.bias_host.clone(), doubled, normalized };
        x.contiguous()?.apply_op2_no_bwd(&self.weight, &op)
    }

    fn forward_untimed(&self, x: &Tensor) -> Result<Tensor> {
        if self.winograd_runs(x, false)? {
            return self.winograd(x, false, None);
        }
        if let (Form::Winograd, Some(layer)) = (self.form, &self.below_winograd) {
            return layer.forward_untimed(x);
        }
        if self.form != Form::Candle && x.device().is_cpu() && x.dtype() == DType::F32 {
            let op = ShiftedGemm {
                padding: self.padding,
                bias: self.bias_host.clone(),
                panels: self.form == Form::Panels,
                direct: (self.form == Form::Direct).then_some((self.out_channels, self.kernel)),
            };
            return x.contiguous()?.apply_op2_no_bwd(&self.weight, &op);
        }
        let weight = match self.form {
            Form::Candle => self.weight.clone(),
            Form::Taps | Form::Winograd => self.weight.permute((2, 3, 0, 1))?,
            Form::Panels => self.weight.permute((0, 3, 1, 2))?,
            Form::Direct => conv_direct::unpack(&self.weight, self.out_channels, self.kernel)?,
        };
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
    /// The weight is `[o, k, k, c]` and the layer runs as panels (else tap-major, as taps).
    panels: bool,
    /// The layer runs in the direct form (`conv_direct.rs`): its output channels and kernel side.
    direct: Option<(usize, usize)>,
}

impl ShiftedGemm {
    /// Each of the `o` output rows of `dst` (`len` values each) set to its bias.
    fn start_from_bias(&self, dst: &mut [f32], len: usize) -> bool {
        assert!(self.bias.as_ref().is_none_or(|b| b.len() * len <= dst.len()));
        // SAFETY: dst holds the o rows of len values (checked above), borrowed exclusively.
        unsafe { self.start_block_from_bias(dst.as_mut_ptr(), len, len) }
    }

    /// Rows of the `width` columns at `block` (row stride `stride`) set to their bias.
    ///
    /// # Safety
    /// `block` must address o rows of `width` values, `stride` apart, that no one else touches.
    unsafe fn start_block_from_bias(&self, block: *mut f32, width: usize, stride: usize) -> bool {
        let Some(bias) = &self.bias else { return false };
        for (oc, &value) in bias.iter().enumerate() {
            unsafe { std::slice::from_raw_parts_mut(block.add(oc * stride), width) }.fill(value);
        }
        true
    }

    /// The whole (wide) output as panels: per block of columns, in parallel, the k² shifted rows
    /// of every channel copied into a `k²·c`-row panel, then one product `W (o × k²c) · panel`.
    fn by_panels(&self, weight: &[f32], padded: &[f32], wide: &mut [f32], d: Dims) {
        let Dims { o, c, k, wp, cols, plane } = d;
        let inner = k * k * c;
        let width = (PANEL_VALUES / inner).max(16).next_multiple_of(16).min(cols);
        let wide = SharedMut::new(wide.as_mut_ptr());
        (0..cols.div_ceil(width)).into_par_iter().for_each(|index| {
            let j0 = index * width;
            let width = width.min(cols - j0);
            let mut panel = vec![0f32; inner * width];
            for tap in 0..k * k {
                let from = (tap / k) * wp + tap % k + j0;
                for ch in 0..c {
                    // Within bounds: `from + width` ≤ plane + k − 1, and padded has k spare values.
                    let src = &padded[ch * plane + from..ch * plane + from + width];
                    panel[(tap * c + ch) * width..(tap * c + ch + 1) * width].copy_from_slice(src);
                }
            }
            // SAFETY: this task alone writes columns j0..j0+width of wide's o rows (stride cols);
            // the weight is o × inner, the panel inner × width.
            unsafe {
                let from_bias = self.start_block_from_bias(wide.get().add(j0), width, cols);
                Product {
                    m: o,
                    n: width,
                    k: inner,
                    a: weight.as_ptr(),
                    lda: inner,
                    b: panel.as_ptr(),
                    ldb: width,
                    b_transposed: false,
                    c: wide.get().add(j0),
                    ldc: cols,
                    accumulate: from_bias,
                }
                .run(false)
            };
        });
    }

    /// Columns `j0..j0 + width` of the wide output (o rows of `cols`) through all k² taps, from
    /// their bias: per tap `wide[:, j0..] (+)= W[tap] (o × c) · padded[:, tap offset + j0..]`.
    ///
    /// # Safety
    /// `wide` must hold o rows of `cols` values, those columns the caller's alone; `padded` the
    /// c planes plus k spare values (a tap's last read, `offset + cols − 1`, stays inside them).
    #[allow(clippy::too_many_arguments)]
    unsafe fn taps_block(&self, weight: &[f32], padded: &[f32], wide: *mut f32, d: Dims, j0: usize, width: usize, parallel: bool) {
        unsafe {
            let from_bias = self.start_block_from_bias(wide.add(j0), width, d.cols);
            for tap in 0..d.k * d.k {
                let offset = (tap / d.k) * d.wp + tap % d.k;
                Product {
                    m: d.o,
                    n: width,
                    k: d.c,
                    a: weight.as_ptr().add(tap * d.o * d.c),
                    lda: d.c,
                    b: padded.as_ptr().add(offset + j0),
                    ldb: d.plane,
                    b_transposed: false,
                    c: wide.add(j0),
                    ldc: d.cols,
                    accumulate: from_bias || tap > 0,
                }
                .run(parallel)
            }
        }
    }
}

/// The sizes a convolution's kernels share: out and in channels, kernel side, padded width,
/// output columns (`ho · wp`, spare columns included) and padded plane.
#[derive(Clone, Copy)]
struct Dims {
    o: usize,
    c: usize,
    k: usize,
    wp: usize,
    cols: usize,
    plane: usize,
}

/// Fewest 4×4 output tiles (the batch's) for which a layer runs Winograd's form: below, its 36
/// products are too narrow to beat the form the layer would have had (`below_winograd`).
const WINOGRAD_MIN_TILES: usize = 64;

/// A 3×3, padding-1 convolution in Winograd's form (input `[n, c, h, w]`, weight `[3, 3, o, c]`),
/// of the input's 2× nearest-neighbour upsampling (`doubled`), or of its group norm and SiLU
/// (`normalized`: each (item, channel)'s scale and shift).
struct Winograd {
    bias: Option<Arc<[f32]>>,
    doubled: bool,
    normalized: Option<Arc<[(f32, f32)]>>,
}

impl CustomOp2 for Winograd {
    fn name(&self) -> &'static str {
        "conv2d-winograd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (input, weight) = (f32_values(s1, l1, self.name())?, f32_values(s2, l2, self.name())?);
        let (n, c, h, w) = l1.shape().dims4()?;
        let (kh, kw, o, wc) = l2.shape().dims4()?;
        if (kh, kw, wc) != (3, 3, c) {
            candle_core::bail!("conv2d-winograd: weight {:?} does not fit input {:?}", l2.shape(), l1.shape());
        }
        let (h, w) = if self.doubled { (2 * h, 2 * w) } else { (h, w) };
        let shape = conv_winograd::Shape { n, c, h, w, o, doubled: self.doubled };
        let out = conv_winograd::run(input, self.normalized.as_deref(), weight, self.bias.as_deref(), shape);
        Ok((CpuStorage::F32(out), Shape::from((n, o, h, w))))
    }
}

/// Values (f32) of one panel: 1 MiB, about a core's L2.
const PANEL_VALUES: usize = 256 << 10;

/// Output values (f32) one column block of a blocked convolution holds: 512 KiB.
const BLOCK_OUTPUTS: usize = 128 << 10;

impl CustomOp2 for ShiftedGemm {
    fn name(&self) -> &'static str {
        "conv2d-shifted-gemm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (input, weight) = (f32_values(s1, l1, self.name())?, f32_values(s2, l2, self.name())?);
        let (n, c, h, w) = l1.shape().dims4()?;
        let (k, k2, o, wc) = match (self.direct, self.panels) {
            (Some((o, k)), _) => {
                let (quads, wc, taps, _) = l2.shape().dims4()?;
                (k, if taps == k * k && quads * conv_direct::QUAD >= o { k } else { 0 }, o, wc)
            }
            (None, false) => l2.shape().dims4()?,
            (None, true) => {
                let (o, k, k2, wc) = l2.shape().dims4()?;
                (k, k2, o, wc)
            }
        };
        if wc != c || k != k2 {
            candle_core::bail!("conv2d-shifted-gemm: weight {:?} does not fit input {:?}", l2.shape(), l1.shape());
        }
        let p = self.padding;
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        if hp < k || wp < k {
            candle_core::bail!("conv2d-shifted-gemm: input {h}×{w} (padding {p}) is smaller than the kernel {k}×{k}");
        }
        let (ho, wo) = (hp - k + 1, wp - k + 1);
        if k == 1 && p == 0 {
            let mut out = vec![0f32; n * o * ho * wo];
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
        let cols = ho * wp;
        // The last taps of the spare columns read up to k − 1 values past the last plane (the
        // direct form's last tile up to a tile further); its rows are whole tiles of whole quads.
        let (slack, rows, stride) = match self.direct {
            Some(_) => (conv_direct::SLACK, o.div_ceil(conv_direct::QUAD) * conv_direct::QUAD, cols.next_multiple_of(conv_direct::TILE)),
            None => (0, o, cols),
        };
        let mut padded = vec![0f32; c * plane + k + slack];
        let mut wide = vec![0f32; rows * stride];
        // One batch item needs no second output buffer (see below).
        let mut out = if n == 1 { Vec::new() } else { vec![0f32; n * o * ho * wo] };
        let d = Dims { o, c, k, wp, cols, plane };
        let block = (BLOCK_OUTPUTS / o).max(64).next_multiple_of(16);
        for b in 0..n {
            let src = &input[b * c * h * w..(b + 1) * c * h * w];
            padded[..c * plane].par_chunks_mut(plane).zip(src.par_chunks(h * w)).for_each(|(dst, src)| {
                for (y, row) in src.chunks_exact(w).enumerate() {
                    let at = (y + p) * wp + p;
                    dst[at..at + w].copy_from_slice(row);
                }
            });
            if self.direct.is_some() {
                let g = conv_direct::Geometry { c, k, wp, plane, cols, stride };
                conv_direct::run(weight, &padded, &mut wide, self.bias.as_deref(), g);
            } else if self.panels {
                self.by_panels(weight, &padded, &mut wide, d);
            } else if cols >= block * 2 * rayon::current_num_threads() {
                // Column blocks in parallel, each through all k² taps while its block of the
                // output stays in cache (one product per tap over every column streams the whole
                // output k² times: the VAE's 128-channel 512² layers ran at half the GEMM's speed).
                let wide = SharedMut::new(wide.as_mut_ptr());
                (0..cols.div_ceil(block)).into_par_iter().for_each(|index| {
                    let j0 = index * block;
                    // SAFETY: this task alone writes columns j0..j0+width of wide.
                    unsafe { self.taps_block(weight, &padded, wide.get(), d, j0, block.min(cols - j0), false) };
                });
            } else {
                // SAFETY: wide is o × cols, borrowed exclusively; padded as taps_block needs.
                unsafe { self.taps_block(weight, &padded, wide.as_mut_ptr(), d, 0, cols, true) };
            }
            if n == 1 {
                // Compacted in place, every row moves towards the start (its destination
                // `oc·ho·wo + y·wo` never passes its source `oc·stride + y·wp`), and the wide
                // buffer becomes the output: a large layer holds one output-sized buffer, not two.
                for oc in 0..o {
                    for y in 0..ho {
                        let from = oc * stride + y * wp;
                        wide.copy_within(from..from + wo, (oc * ho + y) * wo);
                    }
                }
                wide.truncate(o * ho * wo);
                return Ok((CpuStorage::F32(wide), Shape::from((1, o, ho, wo))));
            }
            let dst = &mut out[b * o * ho * wo..(b + 1) * o * ho * wo];
            dst.par_chunks_mut(ho * wo).zip(wide.par_chunks(stride)).for_each(|(dst, rows)| {
                for (y, out_row) in dst.chunks_exact_mut(wo).enumerate() {
                    out_row.copy_from_slice(&rows[y * wp..y * wp + wo]);
                }
            });
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
        // Seeded inputs: the Winograd tolerance bounds the rounding's tail over millions of
        // outputs, and candle's CPU randn cannot be seeded (a fresh draw exceeded it once in CI).
        let mut rng = crate::rng::TorchRng::new(1);
        let mut randn = |shape: &[usize]| Tensor::from_vec(rng.randn(shape.iter().product()), shape, &Device::Cpu).unwrap();
        for &(n, c, o, h, w, k, p, bias) in &[
            (1, 3, 5, 7, 9, 3, 1, true),
            // Panels of several column blocks (width 256·1024 / (9·c), rounded to 16).
            (1, 200, 4, 40, 50, 3, 1, true),
            // Taps (in·k² > 2304): whole, and column-blocked (many outputs: 64-column blocks);
            // Winograd's form where both sides have 16 channels (on 2·8² tiles, and on too few
            // tiles for it: the form the layer had before, here the direct one or panels).
            (1, 260, 8, 6, 7, 3, 1, true),
            (2, 260, 2048, 30, 30, 3, 1, true),
            (1, 32, 16, 12, 12, 3, 1, true),
            (1, 100, 2048, 33, 20, 5, 2, false),
            (2, 8, 4, 6, 5, 3, 1, false),
            (1, 5, 6, 8, 8, 3, 0, true),
            (1, 4, 3, 9, 7, 5, 2, true),
            (2, 16, 8, 3, 4, 3, 1, true),
            (2, 6, 4, 5, 3, 1, 0, true),
            (1, 6, 4, 5, 3, 1, 0, false),
        ] {
            let x = randn(&[n, c, h, w]);
            let wt = randn(&[o, c, k, k]);
            let b = bias.then(|| randn(&[o]));
            let chosen = Conv2d::new(wt.clone(), b.clone(), 1, p).unwrap().form;
            let expected = match k {
                1 => Form::Taps,
                3 if p == 1 && c.min(o) >= WINOGRAD_MIN_CHANNELS && winograd_enabled() => Form::Winograd,
                _ if c * k * k > PANEL_MAX_INNER => Form::Taps,
                _ if conv_direct::available() => Form::Direct,
                _ => Form::Panels,
            };
            assert_eq!(chosen, expected);
            let want = reference(&x, &wt, b.as_ref(), p);
            let forms = match k {
                1 => vec![Form::Taps],
                3 if p == 1 && conv_direct::available() => vec![Form::Taps, Form::Panels, Form::Direct, Form::Winograd],
                3 if p == 1 => vec![Form::Taps, Form::Panels, Form::Winograd],
                _ if conv_direct::available() => vec![Form::Taps, Form::Panels, Form::Direct],
                _ => vec![Form::Taps, Form::Panels],
            };
            for form in forms {
                let got = Conv2d::with_form(wt.clone(), b.clone(), 1, p, form).unwrap().forward(&x).unwrap();
                assert_eq!(got.dims(), want.dims());
                let diff = (got - &want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                // f32 rounding grows with the sum's length (c·k² products of N(0, 1) values);
                // Winograd's transforms add theirs (see conv_winograd.rs).
                let tolerance = match form {
                    Form::Winograd => 1e-4 * ((c * k * k) as f32).sqrt(),
                    _ => 1e-5 + 1e-6 * (c * k * k) as f32,
                };
                assert!(diff < tolerance, "{form:?} {n} {c} {o} {h} {w} k{k} p{p}: max diff {diff}");
            }
        }
    }

    #[test]
    fn strided_input_and_other_shapes_use_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 4, 8, 8), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1., (2, 4, 3, 3), &dev).unwrap();
        let strided = Conv2d::new(wt.clone(), None, 2, 1).unwrap();
        assert_eq!(strided.form, Form::Candle);
        // A layer kept on the GEMM forms takes the panels where the direct form would run.
        assert_eq!(Conv2d::on_gemm(wt.clone(), None, 1, 1).unwrap().form, Form::Panels);
        assert_eq!(strided.forward(&x).unwrap().dims(), &[1, 2, 4, 4]);
        // A transposed (non-contiguous) input is made contiguous first.
        let xt = x.transpose(2, 3).unwrap();
        let conv = Conv2d::new(wt.clone(), None, 1, 1).unwrap();
        let got = conv.forward(&xt).unwrap();
        let want = reference(&xt.contiguous().unwrap(), &wt, None, 1);
        let diff = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4);
        // A layer outside Winograd's form convolves an upsampled input made whole.
        let got = conv.forward_upsampled(&x).unwrap();
        let want = reference(&x.upsample_nearest2d(16, 16).unwrap(), &wt, None, 1);
        let diff = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4);
    }

    #[test]
    fn normalised_inputs_give_what_the_norm_then_the_layer_give() {
        let dev = Device::Cpu;
        // Winograd's form (normalising as it reads) and, on too few tiles, the norm made whole.
        for &(n, c, o, h, w) in &[(2, 32, 16, 20, 36), (1, 32, 16, 6, 6)] {
            let x = ((Tensor::randn(0f32, 1., (n, c, h, w), &dev).unwrap() * 3.0).unwrap() + 0.5).unwrap();
            let norm =
                GroupNorm::new(Tensor::randn(1f32, 0.2, c, &dev).unwrap(), Tensor::randn(0f32, 0.2, c, &dev).unwrap(), 8, 1e-5).unwrap();
            let conv =
                Conv2d::new(Tensor::randn(0f32, 1., (o, c, 3, 3), &dev).unwrap(), Some(Tensor::randn(0f32, 1., o, &dev).unwrap()), 1, 1)
                    .unwrap();
            assert_eq!(conv.form, Form::Winograd);
            assert_eq!(conv.winograd_runs(&x, false).unwrap(), h == 20 && winograd_enabled());
            let want = conv.forward(&norm.forward_silu(&x).unwrap()).unwrap();
            let got = conv.forward_normalized(&norm, &x).unwrap();
            // The same values reach the same arithmetic: equal bit for bit.
            assert_eq!(
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{n} {c}→{o} {h}×{w}"
            );
        }
    }

    /// `cargo test -p focal-engine --release --lib conv::tests::speed -- --ignored --nocapture`:
    /// the form chosen, the one chosen before Winograd's, and candle's convolution at the
    /// engine's shapes, side by side.
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
            ("tiny VAE 256²", 1, 32, 32, 256),
            ("tiny VAE 128²", 1, 64, 32, 128),
            ("tiny UNet 32² (CFG)", 2, 64, 64, 32),
        ] {
            let k = if what.contains("1×1") { 1 } else { 3 };
            let x = Tensor::randn(0f32, 1., (n, c, h, h), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (o, c, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., o, &dev).unwrap();
            let conv = Conv2d::new(wt.clone(), Some(b.clone()), 1, k / 2).unwrap();
            // The form the layer ran in before Winograd's.
            let gemm_form = match k > 1 && c * k * k <= PANEL_MAX_INNER {
                true if conv_direct::available() => Form::Direct,
                true => Form::Panels,
                false => Form::Taps,
            };
            let gemm = Conv2d::with_form(wt.clone(), Some(b.clone()), 1, k / 2, gemm_form).unwrap();
            let time = |f: &dyn Fn() -> Tensor| {
                f();
                let t = std::time::Instant::now();
                for _ in 0..3 {
                    f();
                }
                t.elapsed().as_secs_f64() / 3.0
            };
            let ours = time(&|| conv.forward(&x).unwrap());
            let shifted = time(&|| gemm.forward(&x).unwrap());
            let candle = time(&|| reference(&x, &wt, Some(&b), k / 2));
            let gflops = |s: f64| 2.0 * (n * c * o * h * h * k * k) as f64 / s / 1e9;
            println!(
                "{what:28} {n}×{c}→{o} {h}²: {:?} {:7.1} ms ({:5.1} GFLOP/s), {gemm_form:?} {:7.1} ms ({:5.1}), candle {:7.1} ms; ours/candle {:.2}",
                conv.form,
                ours * 1e3,
                gflops(ours),
                shifted * 1e3,
                gflops(shifted),
                candle * 1e3,
                ours / candle
            );
        }
    }
}
