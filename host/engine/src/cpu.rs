//! What the engine's own CPU kernels (conv, linear, attention, norm, GEGLU) share: the f32
//! view of a tensor's storage, the output pointer parallel tasks write through; and the
//! parallel f16 → f32 widening the checkpoint loader uses.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// The values of a contiguous f32 tensor; `op` names the kernel in the error otherwise.
pub fn f32_values<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("{op} takes f32 tensors") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{op} takes contiguous tensors") };
    Ok(&data[start..end])
}

/// An output pointer shared by parallel tasks that each write their own disjoint part of it.
/// (Read it with [`get`](Self::get): a closure naming the field would capture the bare pointer,
/// which is not `Send`.)
#[derive(Clone, Copy)]
pub struct SharedMut(*mut f32);
// SAFETY: only used for writes to disjoint regions, each by one task, while the owner waits.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub fn new(ptr: *mut f32) -> Self {
        Self(ptr)
    }

    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// `t.to_dtype(dtype)`, with f16/bf16 → f32 on the CPU widened in parallel chunks: a checkpoint
/// load widens 6.9 GB of f16, which candle's conversion does on one thread.
pub fn to_dtype(t: &Tensor, dtype: DType) -> Result<Tensor> {
    if dtype == DType::F32 && t.device().is_cpu() && matches!(t.dtype(), DType::F16 | DType::BF16) {
        return t.contiguous()?.apply_op1_no_bwd(&WidenToF32);
    }
    t.to_dtype(dtype)
}

struct WidenToF32;

/// Values per parallel chunk of the widening.
const WIDEN_CHUNK: usize = 1 << 16;

impl CustomOp1 for WidenToF32 {
    fn name(&self) -> &'static str {
        "widen-to-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("widen-to-f32 takes a contiguous tensor") };
        let mut out = vec![0f32; end - start];
        match storage {
            CpuStorage::F16(data) => out
                .par_chunks_mut(WIDEN_CHUNK)
                .zip(data[start..end].par_chunks(WIDEN_CHUNK))
                .for_each(|(dst, src)| src.convert_to_f32_slice(dst)),
            CpuStorage::BF16(data) => out
                .par_chunks_mut(WIDEN_CHUNK)
                .zip(data[start..end].par_chunks(WIDEN_CHUNK))
                .for_each(|(dst, src)| src.convert_to_f32_slice(dst)),
            _ => candle_core::bail!("widen-to-f32 takes f16 or bf16"),
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_matches_candle() {
        let t = Tensor::randn(0f32, 3., (3, 70000), &candle_core::Device::Cpu).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let half = t.to_dtype(dtype).unwrap().t().unwrap(); // non-contiguous too
            let ours = to_dtype(&half, DType::F32).unwrap();
            assert_eq!(ours.dtype(), DType::F32);
            assert_eq!(ours.to_vec2::<f32>().unwrap(), half.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap());
        }
    }
}
