//! Attention on NVIDIA GPUs through the engine's fused kernels: f16/bf16, no mask, head dimension
//! 64 (every SDXL attention but the VAE's) or 128. The scores stay on the multiprocessor, and q, k
//! and v are read where they lie in `[B, N, heads·D]` (no split/transpose copies). Two variants
//! of one algorithm: `mma` (`src/cuda/flash_attention_mma.cuh`, the default: PTX mma.sync with
//! the running state in registers) and `wmma` (`flash_attention.cuh`: WMMA, whose unspecified
//! fragment layout keeps the output rows in shared memory). `FOCAL_FLASH_ATTENTION=wmma` picks
//! the latter, `=0` neither (candle's ops in query chunks), for comparisons on a GPU.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use crate::cuda_support::loads_by_8;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attention.ptx"));
const MODULE: &str = "focal_flash_attention";
// Both variants' geometry (focal_flash::, focal_flash_mma::): 4 warps of 16 query rows, 64 keys a step.
const THREADS: u32 = 128;
const ROWS: usize = 64;
const KEYS: usize = 64;
const HEAD_DIMS: [usize; 2] = [64, 128];
/// Shared memory a block launches with statically; more needs the function's limit raised.
const STATIC_SHARED_LIMIT: usize = 48 << 10;

/// Whether the fused kernel takes this attention.
pub(crate) fn applies(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, masked: bool) -> bool {
    let (Ok((_, _, inner)), true) = (q.dims3(), heads > 0) else { return false };
    !masked
        && variant() != Variant::Off
        && q.device().is_cuda()
        && matches!(q.dtype(), DType::F16 | DType::BF16)
        && k.dtype() == q.dtype()
        && v.dtype() == q.dtype()
        && inner % heads == 0
        && HEAD_DIMS.contains(&(inner / heads))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Off,
    Wmma,
    Mma,
}

/// `FOCAL_FLASH_ATTENTION`: 0 (off), wmma, or mma (unset or anything else); read once.
fn variant() -> Variant {
    static VARIANT: OnceLock<Variant> = OnceLock::new();
    *VARIANT.get_or_init(|| match std::env::var("FOCAL_FLASH_ATTENTION").unwrap_or_default().trim() {
        "0" => Variant::Off,
        "wmma" => Variant::Wmma,
        _ => Variant::Mma,
    })
}

/// `[B, N, heads·D]` attention of contiguous copies (when needed) of q, k and v.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &FlashAttention { heads })
}

/// Dynamic shared memory of one block: the variant's `Layout<D>::BYTES` in the kernel.
fn shared_bytes(variant: Variant, head_dim: usize) -> usize {
    match variant {
        // Keys [64][D + 8] and values transposed [D][64 + 8], in 16-bit values.
        Variant::Mma => KEYS * (head_dim + 8) * 2 + head_dim * (KEYS + 8) * 2,
        // Keys and values [64][D + 8], then per warp its f32 scores [16][64 + 4] and output rows [16][D + 4].
        _ => 2 * KEYS * (head_dim + 8) * 2 + 4 * 16 * (KEYS + 4) * 4 + 4 * 16 * (head_dim + 4) * 4,
    }
}

struct FlashAttention {
    heads: usize,
}

impl FlashAttention {
    fn launch<T: DeviceRepr + CudaDType>(
        &self,
        suffix: &str,
        (q, ql): (&CudaStorage, &Layout),
        (k, kl): (&CudaStorage, &Layout),
        (v, vl): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let (b, n, inner) = ql.shape().dims3()?;
        let m = kl.shape().dims3()?.1;
        let head_dim = inner / self.heads;
        let dev = q.device();
        let q = q.as_cuda_slice::<T>()?.slice(ql.start_offset()..);
        let k = k.as_cuda_slice::<T>()?.slice(kl.start_offset()..);
        let v = v.as_cuda_slice::<T>()?.slice(vl.start_offset()..);
        // SAFETY: every element is written by the kernel (each row below n of each head).
        let out = unsafe { dev.alloc::<T>(b * n * inner)? };
        let variant = variant();
        let kernel = match variant {
            Variant::Mma => format!("flash_attention_mma_{suffix}"),
            _ => format!("flash_attention_{suffix}"),
        };
        let func = dev.get_or_load_custom_func(&kernel, MODULE, PTX)?;
        let shared = shared_bytes(variant, head_dim);
        if shared > STATIC_SHARED_LIMIT {
            func.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32).w()?;
        }
        let config = LaunchConfig {
            grid_dim: (n.div_ceil(ROWS) as u32, self.heads as u32, b as u32),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        let (n, m, heads) = (n as i32, m as i32, self.heads as i32);
        let scale_log2 = (std::f64::consts::LOG2_E / (head_dim as f64).sqrt()) as f32;
        let mut builder = func.builder();
        builder.arg(&q).arg(&k).arg(&v).arg(&out).arg(&n).arg(&m).arg(&heads).arg(&scale_log2);
        // SAFETY: the kernel's parameters, in its order and types; the grid covers q's rows.
        unsafe { builder.launch(config) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "attention-flash"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("the fused attention kernel runs on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (b, _, inner) = ql.shape().dims3()?;
        let (kb, _, k_inner) = kl.shape().dims3()?;
        let head_dim = inner / self.heads;
        if kl.shape() != vl.shape() || (kb, k_inner) != (b, inner) || !HEAD_DIMS.contains(&head_dim) {
            bail!("attention-flash: q {:?}, k {:?}, v {:?} with {} heads", ql.shape(), kl.shape(), vl.shape(), self.heads)
        }
        if !(loads_by_8(ql) && loads_by_8(kl) && loads_by_8(vl)) {
            bail!("attention-flash: inputs must be contiguous and start on 8 elements")
        }
        let storage = match (q.dtype(), head_dim) {
            (DType::F16, 64) => self.launch::<f16>("f16_d64", (q, ql), (k, kl), (v, vl))?,
            (DType::BF16, 64) => self.launch::<bf16>("bf16_d64", (q, ql), (k, kl), (v, vl))?,
            (DType::F16, _) => self.launch::<f16>("f16_d128", (q, ql), (k, kl), (v, vl))?,
            (DType::BF16, _) => self.launch::<bf16>("bf16_d128", (q, ql), (k, kl), (v, vl))?,
            (dtype, _) => bail!("attention-flash: {dtype:?} (f16 or bf16)"),
        };
        Ok((storage, ql.shape().clone()))
    }
}
