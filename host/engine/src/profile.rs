//! Where the engine's time goes: wall time per kind of layer, summed over every call while
//! profiling is on (`focal bench` turns it on; off it costs one relaxed atomic load per layer).
//!
//! Layers run one after another (each one parallel inside), so the sums add up to the forward
//! pass; what no layer claims is the glue between them (reshapes, adds, concatenations).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use candle_core::Device;

/// The kinds of layer timed separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Conv,
    Linear,
    Attention,
    GroupNorm,
    LayerNorm,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Conv, Op::Linear, Op::Attention, Op::GroupNorm, Op::LayerNorm];

    pub fn name(self) -> &'static str {
        match self {
            Op::Conv => "conv",
            Op::Linear => "linear",
            Op::Attention => "attention",
            Op::GroupNorm => "group_norm",
            Op::LayerNorm => "layer_norm",
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static CALLS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static SYNC: Mutex<Option<Device>> = Mutex::new(None);

/// Turn timing on or off; either way the sums start again from zero.
pub fn enable(on: bool) {
    for i in 0..Op::ALL.len() {
        NANOS[i].store(0, Ordering::Relaxed);
        CALLS[i].store(0, Ordering::Relaxed);
    }
    ENABLED.store(on, Ordering::Relaxed);
}

/// While profiling, wait for `device` before and after each timed layer: a GPU runs kernels
/// asynchronously, so without waiting the times would be the launches'. `None`: no waiting.
pub fn synchronize_with(device: Option<Device>) {
    *SYNC.lock().unwrap_or_else(|e| e.into_inner()) = device;
}

/// Whether timed layers wait for a device ([`synchronize_with`]).
pub fn waits_for_device() -> bool {
    SYNC.lock().unwrap_or_else(|e| e.into_inner()).is_some()
}

fn synchronize() {
    if let Some(device) = SYNC.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        // A failed wait shows up in the layer's own result; the timing stays best-effort.
        let _ = device.synchronize();
    }
}

/// Run `f`, adding its wall time to `op`'s sum while profiling is on.
pub fn time<T>(op: Op, f: impl FnOnce() -> T) -> T {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    synchronize();
    let start = Instant::now();
    let out = f();
    synchronize();
    NANOS[op as usize].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    CALLS[op as usize].fetch_add(1, Ordering::Relaxed);
    out
}

/// One kind of layer's totals since [`enable`].
#[derive(Clone, Copy, Debug)]
pub struct OpTotal {
    pub op: Op,
    pub seconds: f64,
    pub calls: u64,
}

/// The sums since [`enable`], every kind (zero where none ran).
pub fn totals() -> Vec<OpTotal> {
    Op::ALL
        .iter()
        .map(|&op| OpTotal {
            op,
            seconds: NANOS[op as usize].load(Ordering::Relaxed) as f64 * 1e-9,
            calls: CALLS[op as usize].load(Ordering::Relaxed),
        })
        .collect()
}
