//! Group normalisation, optionally followed by SiLU (every ResBlock of the UNet and the VAE
//! runs `silu(group_norm(x))`). On the CPU in f32 it is one fused pass per (batch item, group),
//! the groups in parallel: statistics, then `x·scale + shift` and the SiLU written once.
//! candle's version takes about ten single-threaded passes over the tensor, which at the VAE's
//! 512² activations cost more than the convolutions beside them. On NVIDIA GPUs, the engine's
//! two kernels (`group_norm_cuda`). Other devices and dtypes normalise through candle's fused
//! layer-norm kernel, one row per (batch item, group), then apply the channels' affine: candle's
//! own `GroupNorm` makes ten passes, most of them in f32.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::f32_values;
use crate::fastmath;
use crate::profile::{self, Op};

#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    /// The affine parameters as host floats when they live on the CPU in f32.
    host: Option<Affine>,
    groups: usize,
    eps: f64,
}

#[derive(Clone, Debug)]
struct Affine {
    weight: Arc<[f32]>,
    bias: Arc<[f32]>,
}

impl GroupNorm {
    pub fn new(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> Result<Self> {
        let channels = weight.dim(0)?;
        let host_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        let host = if host_f32(&weight) && host_f32(&bias) {
            Some(Affine { weight: Arc::from(weight.to_vec1::<f32>()?), bias: Arc::from(bias.to_vec1::<f32>()?) })
        } else {
            None
        };
        if groups == 0 || !channels.is_multiple_of(groups) || bias.dims1()? != channels {
            candle_core::bail!("group norm: {channels} channels in {groups} groups with {} biases", bias.elem_count());
        }
        Ok(Self { weight, bias, host, groups, eps })
    }

    /// `silu(group_norm(x))`.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        profile::time(Op::GroupNorm, || match &self.host {
            Some(affine) if x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() >= 2 => {
                let op = FusedGroupNorm { affine: affine.clone(), groups: self.groups, eps: self.eps, silu };
                x.contiguous()?.apply_op1_no_bwd(&op)
            }
            #[cfg(feature = "cuda")]
            _ if crate::group_norm_cuda::applies(x) => {
                crate::group_norm_cuda::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, silu)
            }
            _ => self.by_candle_ops(x, silu),
        })
    }

    /// `silu?(group_norm(x))` by candle's ops on any device and dtype (on a GPU the reference
    /// the fused kernels are compared with).
    pub fn by_candle_ops(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let y = self.by_layer_norm(x)?;
        if silu {
            candle_nn::ops::silu(&y)
        } else {
            Ok(y)
        }
    }
}

impl GroupNorm {
    /// `x` `[B, C, …]` normalised per (item, group) by candle's layer norm over each group's
    /// values (statistics in f32, unit scale, no shift), then scaled and shifted per channel.
    fn by_layer_norm(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.len() < 2 || dims[1] != self.weight.elem_count() {
            candle_core::bail!("group norm of {} channels on {:?}", self.weight.elem_count(), x.shape());
        }
        let rows = dims[0] * self.groups;
        let row = x.elem_count() / rows.max(1);
        let unit = Tensor::ones(row, x.dtype(), x.device())?;
        let zero = Tensor::zeros(row, x.dtype(), x.device())?;
        let normalised = candle_nn::ops::layer_norm(&x.contiguous()?.reshape((rows, row))?, &unit, &zero, self.eps as f32)?;
        let mut per_channel = vec![1; dims.len()];
        per_channel[1] = dims[1];
        let (scale, shift) =
            (self.weight.to_dtype(x.dtype())?.reshape(per_channel.as_slice())?, self.bias.to_dtype(x.dtype())?.reshape(per_channel)?);
        normalised.reshape(dims)?.broadcast_mul(&scale)?.broadcast_add(&shift)
    }

    /// What `forward_silu` would apply to each (batch item, channel) of `x`, as `(scale,
    /// shift)` for [`normalized_silu`], for a consumer that normalises values as it reads them
    /// (`Conv2d::forward_normalized`); `None` where `forward_silu` runs on candle.
    pub(crate) fn silu_affines(&self, x: &Tensor) -> Result<Option<Vec<(f32, f32)>>> {
        let Some(affine) = self.host.as_ref().filter(|_| x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4) else {
            return Ok(None);
        };
        profile::time(Op::GroupNorm, || {
            let (n, channels, h, w) = x.dims4()?;
            let spatial = h * w;
            if !channels.is_multiple_of(self.groups) || affine.weight.len() != channels || spatial == 0 {
                return Ok(None);
            }
            let x = x.contiguous()?;
            let (storage, layout) = x.storage_and_layout();
            let candle_core::Storage::Cpu(storage) = &*storage else { return Ok(None) };
            let values = f32_values(storage, layout, "group-norm-affines")?;
            let per_group = channels / self.groups;
            let mut affines = vec![(0f32, 0f32); n * channels];
            affines.par_chunks_mut(per_group).zip(values.par_chunks(per_group * spatial)).enumerate().for_each(|(index, (dst, src))| {
                let first_channel = (index % self.groups) * per_group;
                let group = &GroupChannels {
                    weight: &affine.weight[first_channel..],
                    bias: &affine.bias[first_channel..],
                    spatial,
                    eps: self.eps,
                    silu: true,
                };
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked above).
                    return unsafe { affines_avx512(dst, src, group) };
                }
                dst.iter_mut().zip(group_affine(src, group)).for_each(|(d, a)| *d = a);
            });
            Ok(Some(affines))
        })
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn affines_avx512(dst: &mut [(f32, f32)], src: &[f32], group: &GroupChannels) {
    dst.iter_mut().zip(group_affine(src, group)).for_each(|(d, a)| *d = a);
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }
}

struct FusedGroupNorm {
    affine: Affine,
    groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp1 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "group-norm-fused"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_values(storage, layout, self.name())?;
        let dims = layout.shape().dims();
        let channels = dims[1];
        let spatial: usize = dims[2..].iter().product();
        if !channels.is_multiple_of(self.groups) || self.affine.weight.len() != channels {
            candle_core::bail!("group-norm-fused: {channels} channels do not fit {} groups", self.groups);
        }
        let per_group = channels / self.groups * spatial;
        let mut out = vec![0f32; x.len()];
        if per_group == 0 {
            return Ok((CpuStorage::F32(out), layout.shape().clone()));
        }
        out.par_chunks_mut(per_group).zip(x.par_chunks(per_group)).enumerate().for_each(|(index, (dst, src))| {
            let first_channel = (index % self.groups) * (channels / self.groups);
            let channels = &GroupChannels {
                weight: &self.affine.weight[first_channel..],
                bias: &self.affine.bias[first_channel..],
                spatial,
                eps: self.eps,
                silu: self.silu,
            };
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked above).
                return unsafe { normalize_group_avx512(dst, src, channels) };
            }
            normalize_group(dst, src, channels);
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// One group's channels: their affine parameters (from the group's first), plane size, ε, and
/// whether SiLU follows.
struct GroupChannels<'a> {
    weight: &'a [f32],
    bias: &'a [f32],
    spatial: usize,
    eps: f64,
    silu: bool,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn normalize_group_avx512(dst: &mut [f32], src: &[f32], group: &GroupChannels) {
    normalize_group(dst, src, group)
}

/// One (batch item, group): statistics, then `x·scale + shift` (and SiLU) per channel. Also
/// compiled for AVX-512 (the default build targets baseline x86-64: 4 lanes).
#[inline(always)]
fn normalize_group(dst: &mut [f32], src: &[f32], group: &GroupChannels) {
    for ((scale, shift), (dst, src)) in group_affine(src, group).zip(dst.chunks_mut(group.spatial).zip(src.chunks(group.spatial))) {
        if group.silu {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = normalized_silu(s, scale, shift);
            }
        } else {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s * scale + shift;
            }
        }
    }
}

/// One (batch item, group)'s statistics as each channel's `(scale, shift)`: `x·scale + shift`
/// normalises the channel.
#[inline(always)]
fn group_affine<'a>(src: &[f32], group: &'a GroupChannels) -> impl Iterator<Item = (f32, f32)> + 'a {
    let count = src.len() as f64;
    // Two passes: the mean, then the mean square deviation (no cancellation).
    let mean = lane_sum(src, |v| v) / count;
    let mean32 = mean as f32;
    let var = lane_sum(src, |v| (v - mean32) * (v - mean32)) / count;
    let rstd = 1.0 / (var + group.eps).sqrt();
    let channels = src.len() / group.spatial;
    group.weight[..channels].iter().zip(&group.bias[..channels]).map(move |(&w, &b)| {
        let scale = (w as f64 * rstd) as f32;
        let shift = (b as f64 - mean * w as f64 * rstd) as f32;
        (scale, shift)
    })
}

/// `silu(x·scale + shift)`: one value of `forward_silu`, wherever it is computed.
#[inline(always)]
pub(crate) fn normalized_silu(x: f32, scale: f32, shift: f32) -> f32 {
    let y = x * scale + shift;
    y / (1.0 + fastmath::exp(-y))
}

/// `Σ f(v)`: 16 f32 lanes over blocks of 4096 values (the compiler vectorises the lanes; a
/// plain running sum waits on each add), the blocks summed in f64.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    const LANES: usize = 16;
    let mut total = 0f64;
    for block in values.chunks(4096) {
        let mut lanes = [0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane += f(v);
            }
        }
        total += lanes.iter().map(|&l| l as f64).sum::<f64>() + chunks.remainder().iter().map(|&v| f(v) as f64).sum::<f64>();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn matches_candle_with_and_without_silu() {
        let dev = Device::Cpu;
        for &(n, c, h, w, groups) in &[(1, 32, 5, 7, 32), (2, 64, 8, 8, 32), (2, 6, 3, 1, 3), (1, 8, 1, 1, 2)] {
            let x = ((Tensor::randn(0f32, 1., (n, c, h, w), &dev).unwrap() * 3.0).unwrap() + 0.5).unwrap();
            let weight = Tensor::randn(1f32, 0.2, c, &dev).unwrap();
            let bias = Tensor::randn(0f32, 0.2, c, &dev).unwrap();
            let ours = GroupNorm::new(weight.clone(), bias.clone(), groups, 1e-5).unwrap();
            let theirs = candle_nn::GroupNorm::new(weight, bias, c, groups, 1e-5).unwrap();
            let expected = theirs.forward(&x).unwrap();
            assert!(max_diff(&ours.forward(&x).unwrap(), &expected) < 1e-4, "{n}×{c}×{h}×{w}/{groups}");
            let expected = candle_nn::ops::silu(&expected).unwrap();
            assert!(max_diff(&ours.forward_silu(&x).unwrap(), &expected) < 1e-4, "silu {n}×{c}×{h}×{w}/{groups}");
            // A non-contiguous input (transposed spatial axes) gives the same as its copy.
            let xt = x.transpose(2, 3).unwrap();
            assert!(max_diff(&ours.forward(&xt).unwrap(), &ours.forward(&xt.contiguous().unwrap()).unwrap()) == 0.0);
            // The path of other devices and dtypes (candle's layer norm per group), in f32 and in
            // half precision against candle's GroupNorm on the same inputs; rank 3 as well.
            assert!(max_diff(&ours.by_layer_norm(&x).unwrap(), &theirs.forward(&x).unwrap()) < 1e-4, "layer-norm path");
            let half = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
            let theirs16 = candle_nn::GroupNorm::new(half(&ours.weight), half(&ours.bias), c, groups, 1e-5).unwrap();
            let ours16 = GroupNorm::new(half(&ours.weight), half(&ours.bias), groups, 1e-5).unwrap();
            let (mine, reference) =
                (ours16.forward_silu(&half(&x)).unwrap(), candle_nn::ops::silu(&theirs16.forward(&half(&x)).unwrap()).unwrap());
            assert_eq!(mine.dtype(), DType::F16);
            assert!(max_diff(&mine.to_dtype(DType::F32).unwrap(), &reference.to_dtype(DType::F32).unwrap()) < 2e-2, "f16 {n}×{c}×{h}×{w}");
            let flat = x.flatten_from(2).unwrap();
            assert!(max_diff(&ours.by_layer_norm(&flat).unwrap(), &theirs.forward(&flat).unwrap()) < 1e-4, "rank 3");
        }
    }
}
