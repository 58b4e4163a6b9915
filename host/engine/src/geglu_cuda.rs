//! GEGLU with its projection's bias on NVIDIA GPUs (`src/cuda/geglu.cu`): f16/bf16, one pass
//! reading the product's `[value | gate]` rows and the bias, writing `(value + b) · gelu(gate + b)`.
//! candle's ops take three passes over the wide product plus one for the bias (at 1024², every
//! step's feed-forwards move ~20 GB that way). `FOCAL_FUSED_GEGLU=0` turns it off.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use crate::cuda_support::{loads_by_8, Switch};
use crate::linear::Linear;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/geglu.ptx"));
const MODULE: &str = "focal_geglu";
const THREADS: u32 = 256;
/// Blocks per launch at most (the kernel loops over the rest): enough to fill any GPU.
const MAX_BLOCKS: usize = 8192;

/// Whether the fused kernel takes `geglu(proj(x))`.
pub(crate) fn applies(x: &Tensor, proj: &Linear) -> bool {
    let width = proj.weight().dim(0).unwrap_or(0);
    ENABLED.on()
        && x.device().is_cuda()
        && matches!(x.dtype(), DType::F16 | DType::BF16)
        && proj.weight().dtype() == x.dtype()
        // 8 values a load on each half.
        && width > 0
        && width.is_multiple_of(16)
}

static ENABLED: Switch = Switch::new("FOCAL_FUSED_GEGLU");

/// `(value + b_v) · gelu(gate + b_g)` for `product = [value | gate]` (the last axis) and `bias`.
pub(crate) fn geglu_with_bias(product: &Tensor, bias: &Tensor) -> Result<Tensor> {
    product.contiguous()?.apply_op2_no_bwd(&bias.to_dtype(product.dtype())?.contiguous()?, &FusedGeglu)
}

struct FusedGeglu;

impl FusedGeglu {
    fn launch<T: DeviceRepr + CudaDType>(
        &self,
        kernel: &str,
        (h, hl): (&CudaStorage, &Layout),
        (b, bl): (&CudaStorage, &Layout),
        rows: usize,
        half: usize,
    ) -> Result<CudaStorage> {
        let dev = h.device();
        let h = h.as_cuda_slice::<T>()?.slice(hl.start_offset()..);
        let b = b.as_cuda_slice::<T>()?.slice(bl.start_offset()..);
        // SAFETY: the kernel writes every element (each 8-value group of each row).
        let out = unsafe { dev.alloc::<T>(rows * half)? };
        let func = dev.get_or_load_custom_func(kernel, MODULE, PTX)?;
        let groups = rows * half / 8;
        let config = LaunchConfig {
            grid_dim: (groups.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows, half) = (rows as i64, half as i32);
        let mut builder = func.builder();
        builder.arg(&h).arg(&b).arg(&out).arg(&rows).arg(&half);
        // SAFETY: the kernel's parameters, in its order and types.
        unsafe { builder.launch(config) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
}

impl CustomOp2 for FusedGeglu {
    fn name(&self) -> &'static str {
        "geglu-bias-fused"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("the fused GEGLU kernel runs on CUDA devices only")
    }

    fn cuda_fwd(&self, h: &CudaStorage, hl: &Layout, b: &CudaStorage, bl: &Layout) -> Result<(CudaStorage, Shape)> {
        let mut dims = hl.shape().dims().to_vec();
        let width = dims.last().copied().unwrap_or(0);
        // The halves start on 8 values too.
        if width == 0 || !width.is_multiple_of(16) || bl.shape().dims() != [width] || !(loads_by_8(hl) && loads_by_8(bl)) {
            bail!("geglu-bias-fused: product {:?}, bias {:?}", hl.shape(), bl.shape())
        }
        let half = width / 2;
        let rows = hl.shape().elem_count() / width;
        *dims.last_mut().expect("rank ≥ 1") = half;
        let storage = match h.dtype() {
            DType::F16 => self.launch::<f16>("geglu_bias_f16", (h, hl), (b, bl), rows, half)?,
            DType::BF16 => self.launch::<bf16>("geglu_bias_bf16", (h, hl), (b, bl), rows, half)?,
            dtype => bail!("geglu-bias-fused: {dtype:?} (f16 or bf16)"),
        };
        Ok((storage, Shape::from(dims)))
    }
}
