//! Group normalisation (+ SiLU) on NVIDIA GPUs (`src/cuda/group_norm.cuh`): two kernels, the
//! statistics of each (item, group) in chunks that fill the GPU, then `silu?((x − mean)·rstd·w + b)`
//! written once, computed in f32. candle's layer norm runs one block per (item, group) — 32 blocks
//! for a VAE decode's batch of one — and the affine and SiLU take three more passes.
//! `FOCAL_FUSED_GROUP_NORM=0` turns it off.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use crate::cuda_support::Switch;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/group_norm.ptx"));
const MODULE: &str = "focal_group_norm";
const THREADS: u32 = 256;
/// Values a block takes at least, and chunks per (item, group) at most.
const CHUNK_MIN: usize = 16 << 10;
const CHUNKS_MAX: usize = 64;

pub(crate) fn applies(x: &Tensor) -> bool {
    ENABLED.on() && x.device().is_cuda() && matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) && x.rank() >= 2
}

static ENABLED: Switch = Switch::new("FOCAL_FUSED_GROUP_NORM");

/// `silu?(group_norm(x)·weight + bias)` for `x` `[B, C, …]`.
pub(crate) fn group_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64, silu: bool) -> Result<Tensor> {
    let (weight, bias) = (weight.to_dtype(x.dtype())?.contiguous()?, bias.to_dtype(x.dtype())?.contiguous()?);
    x.contiguous()?.apply_op3_no_bwd(&weight, &bias, &FusedGroupNorm { groups, eps: eps as f32, silu })
}

struct FusedGroupNorm {
    groups: usize,
    eps: f32,
    silu: bool,
}

/// One group's values and how they are cut: `[items·groups]` spans of `span` values, `chunks`
/// blocks of `chunk` values each.
struct Geometry {
    rows: usize,
    span: usize,
    spatial: usize,
    chunk: usize,
    chunks: usize,
}

impl FusedGroupNorm {
    fn geometry(&self, dims: &[usize]) -> Result<Geometry> {
        let (items, channels) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        if channels == 0 || !channels.is_multiple_of(self.groups) || spatial == 0 || items == 0 {
            bail!("group-norm-cuda: {channels} channels in {} groups, shape {dims:?}", self.groups)
        }
        let span = channels / self.groups * spatial;
        let chunks = span.div_ceil(CHUNK_MIN).clamp(1, CHUNKS_MAX);
        let chunk = span.div_ceil(chunks);
        Ok(Geometry { rows: items * self.groups, span, spatial, chunk, chunks: span.div_ceil(chunk) })
    }

    fn launch<T: DeviceRepr + CudaDType>(
        &self,
        suffix: &str,
        (x, xl): (&CudaStorage, &Layout),
        (w, wl): (&CudaStorage, &Layout),
        (b, bl): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let g = self.geometry(xl.shape().dims())?;
        let dev = x.device();
        let x = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
        let w = w.as_cuda_slice::<T>()?.slice(wl.start_offset()..);
        let b = b.as_cuda_slice::<T>()?.slice(bl.start_offset()..);
        // (count, mean, M2) per block, as f32 triples; every block writes its own.
        let partials = unsafe { dev.alloc::<f32>(3 * g.rows * g.chunks)? };
        // SAFETY: the apply kernel writes every value of every span.
        let out = unsafe { dev.alloc::<T>(g.rows * g.span)? };
        let config = LaunchConfig { grid_dim: (g.chunks as u32, g.rows as u32, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        let (span, chunk, spatial) = (g.span as i64, g.chunk as i64, g.spatial as i64);
        let stats = dev.get_or_load_custom_func(&format!("group_norm_stats_{suffix}"), MODULE, PTX)?;
        let mut builder = stats.builder();
        builder.arg(&x).arg(&partials).arg(&span).arg(&chunk);
        // SAFETY: the kernels' parameters, in their order and types; the grid is the geometry's.
        unsafe { builder.launch(config) }.w()?;
        let apply = dev.get_or_load_custom_func(&format!("group_norm_apply_{suffix}"), MODULE, PTX)?;
        let (groups, per_group, silu) = (self.groups as i32, (g.span / g.spatial) as i32, self.silu as i32);
        let mut builder = apply.builder();
        builder.arg(&x).arg(&partials).arg(&w).arg(&b).arg(&out).arg(&span).arg(&chunk).arg(&spatial);
        builder.arg(&groups).arg(&per_group).arg(&self.eps).arg(&silu);
        unsafe { builder.launch(config) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
}

impl CustomOp3 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "group-norm-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("the fused group-norm kernels run on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = xl.shape().dims();
        if dims.len() < 2 || wl.shape().dims() != [dims[1]] || bl.shape().dims() != [dims[1]] || !xl.is_contiguous() {
            bail!("group-norm-cuda: x {:?}, weight {:?}, bias {:?}", xl.shape(), wl.shape(), bl.shape())
        }
        let storage = match x.dtype() {
            DType::F32 => self.launch::<f32>("f32", (x, xl), (w, wl), (b, bl))?,
            DType::F16 => self.launch::<f16>("f16", (x, xl), (w, wl), (b, bl))?,
            DType::BF16 => self.launch::<bf16>("bf16", (x, xl), (w, wl), (b, bl))?,
            dtype => bail!("group-norm-cuda: {dtype:?}"),
        };
        Ok((storage, xl.shape().clone()))
    }
}
