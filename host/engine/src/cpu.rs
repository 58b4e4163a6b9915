//! What the engine's own CPU kernels (conv, linear, attention, norm, GEGLU) share: the f32
//! view of a tensor's storage, and the output pointer parallel tasks write through.

use candle_core::{CpuStorage, Layout, Result};

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
