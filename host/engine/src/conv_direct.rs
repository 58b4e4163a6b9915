//! The direct form of a stride-1 k×k convolution, for CPUs with AVX-512 (`conv.rs` picks it).
//!
//! Same geometry as the shifted GEMM: the input zero-padded into planes of `wp` columns, the
//! output computed "wide" (each row keeps its `k − 1` spare columns), so output column `q` of a
//! tap `(kh, kw)` reads input `q + kh·wp + kw`. Instead of k² matrix products it runs one
//! register tile per 4 output channels × 96 output columns: for every input channel and tap, six
//! 16-lane loads of the input and four broadcast weights feed 24 fused multiply-adds into 24
//! accumulators that stay in registers for the whole sum. No GEMM packing, no im2col copy: the
//! layers with few channels (the VAE at full resolution, small models), where a GEMM's inner
//! dimension is short, run at the FMA units' speed.
//!
//! Weights are packed per quad of output channels, `[⌈o/4⌉, c, k², 4]` (zeros pad the last
//! quad), so a tile's four weights of one tap are adjacent.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use crate::cpu::SharedMut;

/// Output channels of a register tile.
pub const QUAD: usize = 4;
/// 16-lane vectors of output columns in a register tile.
const VECS: usize = 6;
const LANES: usize = 16;
/// Output columns of a register tile.
pub const TILE: usize = VECS * LANES;

/// Quads of a parallel task (32 output channels) and tiles of its column block (384 columns).
const TASK_QUADS: usize = 8;
const TASK_TILES: usize = 4;
/// Input channels summed per pass over a task's tiles (their input rows stay in L2).
const CHANNEL_CHUNK: usize = 32;

/// Whether this CPU runs the direct form.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `[o, c, k, k]` → `[⌈o/4⌉, c, k², 4]`.
pub fn pack(weight: &Tensor) -> Result<Tensor> {
    let (o, c, k, _) = weight.dims4()?;
    let quads = o.div_ceil(QUAD);
    let padded = match quads * QUAD - o {
        0 => weight.clone(),
        extra => Tensor::cat(&[weight, &weight.zeros_like()?.narrow(0, 0, 1)?.repeat((extra, 1, 1, 1))?], 0)?,
    };
    padded.reshape((quads, QUAD, c, k * k))?.permute((0, 2, 3, 1))?.contiguous()
}

/// The inverse of [`pack`], for the layer's other devices and dtypes.
pub fn unpack(packed: &Tensor, out_channels: usize, k: usize) -> Result<Tensor> {
    let (quads, c, _, _) = packed.dims4()?;
    packed.permute((0, 3, 1, 2))?.reshape((quads * QUAD, c, k, k))?.narrow(0, 0, out_channels)
}

/// The sizes of one batch item's convolution.
#[derive(Clone, Copy)]
pub struct Geometry {
    /// Input channels, kernel side, padded width and padded plane (values per channel).
    pub c: usize,
    pub k: usize,
    pub wp: usize,
    pub plane: usize,
    /// Output columns (spare ones included) and the wide output's row stride, a multiple of
    /// [`TILE`] at least `cols`.
    pub cols: usize,
    pub stride: usize,
}

/// Extra zero values `padded` needs past its planes: the last tile's loads run up to a tile
/// beyond the output columns (into columns that are dropped).
pub const SLACK: usize = TILE;

/// The wide output (`⌈o/4⌉·4` rows of `g.stride`) of one batch item, from its bias (padded to
/// whole quads) or zero.
///
/// `padded` holds the `c` planes plus `k + SLACK` values; `weight` is packed; only call where
/// [`available`] said so.
pub fn run(weight: &[f32], padded: &[f32], wide: &mut [f32], bias: Option<&[f32]>, g: Geometry) {
    let quads = weight.len() / (g.c * g.k * g.k * QUAD).max(1);
    assert!(padded.len() >= g.c * g.plane + g.k + SLACK && wide.len() >= quads * QUAD * g.stride && g.stride >= g.cols);
    assert!(g.stride.is_multiple_of(TILE) && bias.is_none_or(|b| b.len() >= quads * QUAD));
    let taps: Vec<usize> = (0..g.k * g.k).map(|t| (t / g.k) * g.wp + t % g.k).collect();
    let tiles = g.cols.div_ceil(TILE);
    let (quad_groups, tile_groups) = (quads.div_ceil(TASK_QUADS), tiles.div_ceil(TASK_TILES));
    let wide = SharedMut::new(wide.as_mut_ptr());
    (0..quad_groups * tile_groups).into_par_iter().for_each(|task| {
        let (qg, tg) = (task / tile_groups, task % tile_groups);
        let quad_range = qg * TASK_QUADS..((qg + 1) * TASK_QUADS).min(quads);
        let tile_range = tg * TASK_TILES..((tg + 1) * TASK_TILES).min(tiles);
        for c0 in (0..g.c).step_by(CHANNEL_CHUNK) {
            let channels = CHANNEL_CHUNK.min(g.c - c0);
            // Quads inner: each reads the tile's input rows the previous one brought into L1.
            for tile in tile_range.clone() {
                for quad in quad_range.clone() {
                    let start = match (c0, bias) {
                        (0, Some(b)) => Start::Bias(&b[quad * QUAD..(quad + 1) * QUAD]),
                        (0, None) => Start::Zero,
                        _ => Start::Accumulate,
                    };
                    // SAFETY: the asserts above bound every read (the last tile's loads end
                    // inside the slack) and write (rows of whole quads, `stride` columns); this
                    // task alone writes its quads' rows at its tiles' columns.
                    unsafe {
                        tile_avx512(
                            weight.as_ptr().add((quad * g.c + c0) * taps.len() * QUAD),
                            padded.as_ptr().add(c0 * g.plane + tile * TILE),
                            g.plane,
                            channels,
                            &taps,
                            wide.get().add(quad * QUAD * g.stride + tile * TILE),
                            g.stride,
                            start,
                        )
                    };
                }
            }
        }
    });
}

/// What a tile's accumulators start from.
#[derive(Clone, Copy)]
enum Start<'a> {
    Zero,
    Bias(&'a [f32]),
    /// The partial sums the tile's output holds (a later chunk of input channels).
    Accumulate,
}

/// One register tile: 4 output rows (`stride` apart) × 96 columns at `out`, summed over
/// `channels` input planes (`plane` apart) at `x` and the taps' offsets; `w` the quad's packed
/// weights from the first of those channels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512(
    w: *const f32,
    x: *const f32,
    plane: usize,
    channels: usize,
    taps: &[usize],
    out: *mut f32,
    stride: usize,
    start: Start,
) {
    use std::arch::x86_64::*;
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); VECS]; QUAD];
        for (q, row) in acc.iter_mut().enumerate() {
            for (i, a) in row.iter_mut().enumerate() {
                *a = match start {
                    Start::Zero => _mm512_setzero_ps(),
                    Start::Bias(b) => _mm512_set1_ps(b[q]),
                    Start::Accumulate => _mm512_loadu_ps(out.add(q * stride + i * LANES)),
                };
            }
        }
        let mut w = w;
        for ci in 0..channels {
            let xc = x.add(ci * plane);
            for &offset in taps {
                let xt = xc.add(offset);
                let mut xv = [_mm512_setzero_ps(); VECS];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(xt.add(i * LANES));
                }
                for (q, row) in acc.iter_mut().enumerate() {
                    let wq = _mm512_set1_ps(*w.add(q));
                    for (a, v) in row.iter_mut().zip(xv) {
                        *a = _mm512_fmadd_ps(wq, v, *a);
                    }
                }
                w = w.add(QUAD);
            }
        }
        for (q, row) in acc.iter().enumerate() {
            for (i, a) in row.iter().enumerate() {
                _mm512_storeu_ps(out.add(q * stride + i * LANES), *a);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512(_: *const f32, _: *const f32, _: usize, _: usize, _: &[usize], _: *mut f32, _: usize, _: Start) {
    unreachable!("the direct form runs only where available() says so")
}
