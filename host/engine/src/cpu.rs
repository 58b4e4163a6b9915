//! What the engine's own CPU kernels (conv, linear, attention, norm, GEGLU) share: the f32
//! view of a tensor's storage, the output pointer parallel tasks write through; the parallel
//! f16 → f32 widening the checkpoint loader uses, and the lossless narrowing back that lets
//! layers keep a half-precision checkpoint's weights at half the memory.

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

/// `f` on the values of a contiguous f32, f16 or bf16 tensor as f32. Half ones are widened in
/// parallel into this thread's scratch buffer, kept between calls (a fresh buffer per call
/// spent as long in page faults as in the widening).
pub fn with_f32_values<R>(storage: &CpuStorage, layout: &Layout, op: &str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{op} takes contiguous tensors") };
    let widen_into = |out: &mut [f32]| match storage {
        CpuStorage::F16(data) => widen(&data[start..end], out),
        CpuStorage::BF16(data) => widen(&data[start..end], out),
        _ => unreachable!("checked below"),
    };
    match storage {
        CpuStorage::F32(data) => return Ok(f(&data[start..end])),
        CpuStorage::F16(_) | CpuStorage::BF16(_) => {}
        _ => candle_core::bail!("{op} takes f32, f16 or bf16 tensors"),
    }
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < end - start {
                buf.resize(end - start, 0.0);
            }
            widen_into(&mut buf[..end - start]);
            Ok(f(&buf[..end - start]))
        }
        // Already lent on this thread (a nested call): a buffer of its own.
        Err(_) => {
            let mut own = vec![0f32; end - start];
            widen_into(&mut own);
            Ok(f(&own))
        }
    })
}

fn widen<T: Copy + Send + Sync>(src: &[T], dst: &mut [f32])
where
    [T]: HalfFloatSliceExt,
{
    dst.par_chunks_mut(WIDEN_CHUNK).zip(src.par_chunks(WIDEN_CHUNK)).for_each(|(dst, src)| src.convert_to_f32_slice(dst));
}

/// A CPU f32 tensor as f16 (else bf16) when every value survives the round trip exactly (a
/// half-precision checkpoint's weights, not merged with anything); `None` otherwise. One
/// parallel pass per candidate type.
pub fn narrowed_exactly(t: &Tensor) -> Option<Tensor> {
    if !t.device().is_cpu() || t.dtype() != DType::F32 {
        return None;
    }
    let t = t.contiguous().ok()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(storage) = &*storage else { return None };
    let values = f32_values(storage, layout, "narrow").ok()?;
    fn exactly<H: Copy + Send + Sync + Default>(values: &[f32], to: fn(f32) -> H, back: fn(H) -> f32) -> Option<Vec<H>> {
        let mut out = vec![H::default(); values.len()];
        let ok = out.par_chunks_mut(WIDEN_CHUNK).zip(values.par_chunks(WIDEN_CHUNK)).all(|(dst, src)| {
            src.iter().zip(dst).all(|(&v, d)| {
                *d = to(v);
                back(*d).to_bits() == v.to_bits()
            })
        });
        ok.then_some(out)
    }
    let shape = t.shape().clone();
    if let Some(h) = exactly(values, half::f16::from_f32, half::f16::to_f32) {
        return Tensor::from_vec(h, shape, t.device()).ok();
    }
    exactly(values, half::bf16::from_f32, half::bf16::to_f32).and_then(|h| Tensor::from_vec(h, shape, t.device()).ok())
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
            CpuStorage::F16(data) => widen(&data[start..end], &mut out),
            CpuStorage::BF16(data) => widen(&data[start..end], &mut out),
            _ => candle_core::bail!("widen-to-f32 takes f16 or bf16"),
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Hands memory the allocator holds free back to the system (glibc keeps freed heap pages for
/// reuse; after a UNet's steps that is a gigabyte the VAE decode would otherwise add to). A
/// no-op where the allocator is not glibc's.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_keeps_only_exact_values() {
        let dev = candle_core::Device::Cpu;
        let halves = Tensor::randn(0f32, 1., (4, 300), &dev).unwrap().to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap();
        let narrowed = narrowed_exactly(&halves).unwrap();
        assert_eq!(narrowed.dtype(), DType::F16);
        assert_eq!(narrowed.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(), halves.to_vec2::<f32>().unwrap());
        let bf = Tensor::new(&[2f32.powi(100), -3.0, 0.5], &dev).unwrap(); // beyond f16's range, exact in bf16
        assert_eq!(narrowed_exactly(&bf).unwrap().dtype(), DType::BF16);
        let full = Tensor::new(&[0.1f32, 1.0], &dev).unwrap();
        assert!(narrowed_exactly(&full).is_none());
    }

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
