//! What the engine's CUDA kernels (`attention_flash`, `geglu_cuda`, `group_norm_cuda`) share: the
//! environment switch that turns a kernel off for comparisons (attention reads its own, which
//! also picks a variant), and their inputs' alignment rule.

use std::sync::OnceLock;

use candle_core::Layout;

/// A fused kernel's switch: on unless its environment variable is "0" (read once).
pub(crate) struct Switch {
    var: &'static str,
    on: OnceLock<bool>,
}

impl Switch {
    pub(crate) const fn new(var: &'static str) -> Self {
        Self { var, on: OnceLock::new() }
    }

    pub(crate) fn on(&self) -> bool {
        *self.on.get_or_init(|| std::env::var(self.var).map_or(true, |v| v.trim() != "0"))
    }
}

/// A half-precision input the kernels read 16 bytes (8 values) at a time: contiguous, starting on
/// 8 values (the kernels' row widths are multiples of 8, so every row does too).
pub(crate) fn loads_by_8(layout: &Layout) -> bool {
    layout.is_contiguous() && layout.start_offset().is_multiple_of(8)
}
