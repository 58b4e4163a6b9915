//! Winograd's minimal filtering F(4×4, 3×3) for stride-1, padding-1 3×3 convolutions in f32 on
//! the CPU (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016; the
//! matrices below are theirs). Each 4×4 output tile is `Aᵀ [U ⊙ V] A` with `V = Bᵀ d B` the
//! transform of its 6×6 input tile and `U = G g Gᵀ` that of the 3×3 kernel: summed over the input
//! channels, the 36 element-wise products become 36 independent matrix products
//! `M[ξ] (out × tiles) = U[ξ] (out × in) · V[ξ] (in × tiles)` — 36 multiply-adds per tile and
//! channel pair instead of 144, a quarter of the direct form's work, on the same GEMM.
//!
//! The price is rounding: the transforms scale values by up to 8 and 1/24, so outputs differ
//! from the direct sum by ~1e-6 of the layer's magnitudes (the unit test bounds it; whole SDXL
//! images move by a fraction of one level of 255, see `focal bench`).
//!
//! Memory stays flat: the kernel transform is made per call (it is 4× the kernel, too much to
//! keep for every layer), for blocks of output channels; tile rows go through in blocks whose
//! transforms stay within a few tens of MiB, whatever the image size; no padded copy of the input.

use std::cell::Cell;

use rayon::prelude::*;

use crate::blas::Product;
use crate::cpu::SharedMut;
use crate::norm;

/// Output tile side, input tile side, and the points of the transformed tile.
const OUT: usize = 4;
const SPAN: usize = 6;
const POINTS: usize = SPAN * SPAN;

/// Bᵀ (input transform).
const BT: [[f32; SPAN]; SPAN] = [
    [4., 0., -5., 0., 1., 0.],
    [0., -4., -4., 1., 1., 0.],
    [0., 4., -4., -1., 1., 0.],
    [0., -2., -1., 2., 1., 0.],
    [0., 2., -1., -2., 1., 0.],
    [0., 4., 0., -5., 0., 1.],
];

/// G (kernel transform).
const G: [[f32; 3]; SPAN] = [
    [1. / 4., 0., 0.],
    [-1. / 6., -1. / 6., -1. / 6.],
    [-1. / 6., 1. / 6., -1. / 6.],
    [1. / 24., 1. / 12., 1. / 6.],
    [1. / 24., -1. / 12., 1. / 6.],
    [0., 0., 1.],
];

/// Aᵀ (output transform).
const AT: [[f32; SPAN]; OUT] = [[1., 1., 1., 1., 1., 0.], [0., 1., -1., 2., -2., 0.], [0., 1., 1., 4., 4., 0.], [0., 1., -1., 8., -8., 1.]];

/// Values (f32) of a block's transformed inputs or products: 8 MiB each (in L3 between the
/// transforms and the products), unless that leaves fewer than [`BLOCK_TILES`] tiles.
const BLOCK_VALUES: usize = 2 << 20;
/// Fewest tiles of a block (the products' columns), where the image has them.
const BLOCK_TILES: usize = 256;
/// Values (f32) of the transformed kernels held at once: 128 MiB.
const KERNEL_VALUES: usize = 32 << 20;

/// A layer's sizes: batch, in channels, height, width (of the input it convolves, which is
/// the output's), out channels; `doubled`: the input given is the nearest-neighbour half of
/// that (`h/2 × w/2`; the decoders' upsampling, never made whole).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub doubled: bool,
}

impl Shape {
    /// Height and width of the input given.
    fn given(&self) -> (usize, usize) {
        match self.doubled {
            true => (self.h / 2, self.w / 2),
            false => (self.h, self.w),
        }
    }

    /// 4×4 output tiles of one batch item, down and across.
    fn tiles(&self) -> (usize, usize) {
        (self.h.div_ceil(OUT), self.w.div_ceil(OUT))
    }

    /// Output tiles of the whole batch: the columns of the 36 products.
    pub fn tile_count(&self) -> usize {
        let (th, tw) = self.tiles();
        self.n * th * tw
    }
}

/// `out [n, o, h, w] = bias + conv3×3(input [n, c, h, w], weight)` with zero padding 1 (the
/// input `[n, c, h/2, w/2]` nearest-upsampled when `s.doubled`); the weight tap-major,
/// `[3, 3, o, c]` (the layout `conv.rs` keeps for its GEMM forms). With `normalized`, each
/// value is first `silu(x·scale + shift)` with its (batch item, channel)'s pair (`[n, c]`): a
/// group norm and SiLU (`norm.rs`) applied as the input is read, never made whole.
pub fn run(input: &[f32], normalized: Option<&[(f32, f32)]>, weight: &[f32], bias: Option<&[f32]>, s: Shape) -> Vec<f32> {
    let Shape { n, c, h, w, o, .. } = s;
    let (gh, gw) = s.given();
    assert!(!s.doubled || (h % 2, w % 2) == (0, 0));
    assert_eq!(input.len(), n * c * gh * gw);
    assert!(normalized.is_none_or(|pairs| pairs.len() == n * c));
    assert_eq!(weight.len(), 9 * o * c);
    assert!(bias.is_none_or(|b| b.len() == o));
    let (th, tw) = s.tiles();
    // Blocks of whole tile rows (of any batch item), as even as the budget allows.
    let tile_rows = n * th;
    let fitting = (BLOCK_VALUES / (POINTS * c.max(o))).max(BLOCK_TILES);
    let blocks = tile_rows.div_ceil(fitting.div_ceil(tw).min(tile_rows));
    let block_rows = tile_rows.div_ceil(blocks);
    // Blocks of output channels whose transformed kernels fit the budget (16 at least).
    let group = match POINTS * o * c <= KERNEL_VALUES {
        true => o,
        false => ((KERNEL_VALUES / (POINTS * c)) / 16 * 16).clamp(16, o),
    };
    let mut out = vec![0f32; n * o * h * w];
    let most = Block { first_row: 0, rows: block_rows, th, tw }.stride();
    let (v_len, m_len, u_len) = (POINTS * c * most, POINTS * group * most, POINTS * group * c);
    let mut scratch = SCRATCH.take();
    if scratch.len() < v_len + m_len + u_len {
        scratch = vec![0f32; v_len + m_len + u_len];
    }
    let (v, rest) = scratch.split_at_mut(v_len);
    let (m, rest) = rest.split_at_mut(m_len);
    let u = &mut rest[..u_len];
    let mut kernels_of = None;
    for first_row in (0..tile_rows).step_by(block_rows) {
        let rows = block_rows.min(tile_rows - first_row);
        let block = Block { first_row, rows, th, tw };
        let (tiles, stride) = (rows * tw, block.stride());
        transform_inputs(input, normalized, v, s, block);
        for o0 in (0..o).step_by(group) {
            let og = group.min(o - o0);
            if kernels_of != Some(o0) {
                transform_kernels(weight, u, s, o0, og);
                kernels_of = Some(o0);
            }
            let (u, v, mp) = (u.as_ptr() as usize, v.as_ptr() as usize, SharedMut::new(m.as_mut_ptr()));
            (0..POINTS).into_par_iter().for_each(|point| {
                // SAFETY: U[point] is og × c, V[point] c × tiles and M[point] og × tiles (rows
                // `stride` apart), each inside its buffer (sized for the largest block and group);
                // this task alone writes M[point].
                unsafe {
                    Product {
                        m: og,
                        n: tiles,
                        k: c,
                        a: (u as *const f32).add(point * og * c),
                        lda: c,
                        b: (v as *const f32).add(point * c * stride),
                        ldb: stride,
                        b_transposed: false,
                        c: mp.get().add(point * og * stride),
                        ldc: stride,
                        accumulate: false,
                    }
                    .run(false)
                }
            });
            transform_outputs(m, &mut out, bias, s, block, o0, og);
        }
    }
    if scratch.len() <= SCRATCH_KEPT {
        SCRATCH.set(scratch);
    }
    out
}

thread_local! {
    /// The transforms' buffers, kept between a thread's calls up to [`SCRATCH_KEPT`] values
    /// (fresh pages cost a fault each: a UNet layer's 60 MB of them took 10–20 ms).
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Values (f32) of scratch a thread keeps between calls: 64 MiB.
const SCRATCH_KEPT: usize = 16 << 20;

/// Tile rows `first_row..first_row + rows` of the batch (row `r` is tile row `r % th` of item
/// `r / th`), `tw` tiles each.
#[derive(Clone, Copy)]
struct Block {
    first_row: usize,
    rows: usize,
    th: usize,
    tw: usize,
}

impl Block {
    /// Row stride of the block's transformed inputs and products: its tiles and a vector more
    /// (the transforms move whole vectors of tiles; the GEMMs never see the spare columns).
    fn stride(self) -> usize {
        self.rows * self.tw + LANES
    }

    /// Runs of the block's tile rows within one batch item: (item, first tile row, rows).
    fn runs(self) -> impl Iterator<Item = (usize, usize, usize)> {
        let end = self.first_row + self.rows;
        let mut r = self.first_row;
        std::iter::from_fn(move || {
            (r < end).then(|| {
                let (item, ty) = (r / self.th, r % self.th);
                let count = (self.th - ty).min(end - r);
                r += count;
                (item, ty, count)
            })
        })
    }
}

/// `v [36, c, tiles]` = Bᵀ d B of every input tile of the block, per channel in parallel.
fn transform_inputs(input: &[f32], normalized: Option<&[(f32, f32)]>, v: &mut [f32], s: Shape, block: Block) {
    let v = SharedMut::new(v.as_mut_ptr());
    (0..s.c).into_par_iter().for_each_init(Vec::new, |scratch, ch| {
        let job = InputChannel { input, normalized, v, s, block, ch };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { job.run_avx512(scratch) };
        }
        job.run::<false>(scratch)
    });
}

/// One input channel's share of [`transform_inputs`].
struct InputChannel<'a> {
    input: &'a [f32],
    normalized: Option<&'a [(f32, f32)]>,
    v: SharedMut,
    s: Shape,
    block: Block,
    ch: usize,
}

impl InputChannel<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, scratch: &mut Vec<f32>) {
        self.run::<true>(scratch)
    }

    /// Each input row the block reads is transformed along x once (16 tiles at a time), then
    /// each tile row down its six rows, straight into `v`.
    #[inline(always)]
    fn run<const AVX512: bool>(&self, scratch: &mut Vec<f32>) {
        let Shape { c, h, w, .. } = self.s;
        let (gh, gw) = self.s.given();
        let (tw, ch) = (self.block.tw, self.ch);
        let stride = self.block.stride();
        // Rows are padded to whole vectors of tiles.
        let twp = tw.next_multiple_of(LANES);
        let mut column = 0;
        for (item, ty0, count) in self.block.runs() {
            let plane = &self.input[(item * c + ch) * gh * gw..][..gh * gw];
            // along[r][j][tx] = Σ_m Bᵀ[j][m] · x[4·tx − 1 + m] of input row 4·ty0 − 1 + r;
            // phases[q][1 + tx] = x[4·tx + q] (zero outside the row, and before it).
            let span = OUT * count + 2;
            scratch.clear();
            scratch.resize(OUT * (twp + LANES) + span * SPAN * twp + gw + w, 0f32);
            let (phases, rest) = scratch.split_at_mut(OUT * (twp + LANES));
            let (along, rest) = rest.split_at_mut(span * SPAN * twp);
            let (normal, doubled) = rest.split_at_mut(gw);
            let pair = self.normalized.map(|pairs| pairs[item * c + ch]);
            for r in 0..span {
                let dst = &mut along[r * SPAN * twp..][..SPAN * twp];
                let Some(y) = (OUT * ty0 + r).checked_sub(1).filter(|&y| y < h) else {
                    continue;
                };
                let mut row = &plane[if self.s.doubled { y / 2 } else { y } * gw..][..gw];
                if let Some((scale, shift)) = pair {
                    normal.iter_mut().zip(row).for_each(|(n, &x)| *n = norm::normalized_silu(x, scale, shift));
                    row = normal;
                }
                if self.s.doubled {
                    doubled.chunks_exact_mut(2).zip(row).for_each(|(two, &x)| two.fill(x));
                    row = doubled;
                }
                let (p0, rest) = phases.split_at_mut(twp + LANES);
                let (p1, rest) = rest.split_at_mut(twp + LANES);
                let (p2, p3) = rest.split_at_mut(twp + LANES);
                let vectors = row.chunks_exact(OUT * LANES);
                let mut tx = 1;
                for pixels in vectors.clone() {
                    let [q0, q1, q2, q3] = deinterleave::<AVX512>(pixels.try_into().unwrap());
                    p0[tx..tx + LANES].copy_from_slice(&q0);
                    p1[tx..tx + LANES].copy_from_slice(&q1);
                    p2[tx..tx + LANES].copy_from_slice(&q2);
                    p3[tx..tx + LANES].copy_from_slice(&q3);
                    tx += LANES;
                }
                let whole = vectors.remainder().chunks_exact(OUT);
                let tail = whole.remainder();
                for quad in whole {
                    (p0[tx], p1[tx], p2[tx], p3[tx]) = (quad[0], quad[1], quad[2], quad[3]);
                    tx += 1;
                }
                if !tail.is_empty() {
                    let value = |q: usize| tail.get(q).copied().unwrap_or(0.0);
                    (p0[tx], p1[tx], p2[tx], p3[tx]) = (value(0), value(1), value(2), value(3));
                }
                let phase = |q: usize, from: usize| -> Lanes { phases[q * (twp + LANES) + from..][..LANES].try_into().unwrap() };
                for tx0 in (0..tw).step_by(LANES) {
                    let taps =
                        [phase(3, tx0), phase(0, tx0 + 1), phase(1, tx0 + 1), phase(2, tx0 + 1), phase(3, tx0 + 1), phase(0, tx0 + 2)];
                    for (j, lanes) in apply(&BT, &taps).iter().enumerate() {
                        dst[j * twp + tx0..][..LANES].copy_from_slice(lanes);
                    }
                }
            }
            for t in 0..count {
                for j in 0..SPAN {
                    for tx0 in (0..tw).step_by(LANES) {
                        let rows: [Lanes; SPAN] =
                            std::array::from_fn(|i| along[((OUT * t + i) * SPAN + j) * twp + tx0..][..LANES].try_into().unwrap());
                        for (a, out) in apply(&BT, &rows).iter().enumerate() {
                            // SAFETY: point a·6 + j, channel ch, this tile row's columns of the
                            // block and at most 15 past them — the next tile row's, rewritten
                            // next, or the row's padding: inside v, this channel's task's alone.
                            unsafe {
                                self.v.get().add(((a * SPAN + j) * c + ch) * stride + column + tx0).cast::<Lanes>().write_unaligned(*out)
                            };
                        }
                    }
                }
                column += tw;
            }
        }
    }
}

/// A tile row's 4 output rows of 16 tiles (`y[q][l]`, column q of tile l) in pixel order:
/// `pixels[4·l + q]` — a 4 × 16 transpose.
#[inline(always)]
fn interleave<const AVX512: bool>(y: &[Lanes; OUT]) -> [f32; OUT * LANES] {
    #[cfg(target_arch = "x86_64")]
    if AVX512 {
        // SAFETY: AVX512 is true only in code compiled for AVX-512F, run where the CPU has it.
        return unsafe { transpose_avx512::<true>(y) };
    }
    let mut pixels = [0f32; OUT * LANES];
    for (l, four) in pixels.chunks_exact_mut(OUT).enumerate() {
        for (q, value) in four.iter_mut().enumerate() {
            *value = y[q][l];
        }
    }
    pixels
}

/// The inverse of [`interleave`]: 64 pixels of a row as the 4 phases `x[4·l + q]` of 16 tiles.
#[inline(always)]
fn deinterleave<const AVX512: bool>(pixels: &[f32; OUT * LANES]) -> [Lanes; OUT] {
    #[cfg(target_arch = "x86_64")]
    if AVX512 {
        // SAFETY: as in interleave.
        let rows: &[Lanes; OUT] = unsafe { &*(pixels as *const [f32; OUT * LANES]).cast() };
        let flat = unsafe { transpose_avx512::<false>(rows) };
        return std::array::from_fn(|q| flat[q * LANES..][..LANES].try_into().unwrap());
    }
    std::array::from_fn(|q| std::array::from_fn(|l| pixels[OUT * l + q]))
}

/// The 4 × 16 → 16 × 4 transpose of [`interleave`] (`TO_PIXELS`) or its inverse: each 128-bit
/// lane's 4 × 4 transposed and the 4 × 4 blocks of lanes swapped, in one order or the other.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose_avx512<const TO_PIXELS: bool>(rows: &[Lanes; OUT]) -> [f32; OUT * LANES] {
    use std::arch::x86_64::*;
    #[inline(always)]
    unsafe fn within_lanes(r: [__m512; OUT]) -> [__m512; OUT] {
        let t0 = _mm512_castps_pd(_mm512_unpacklo_ps(r[0], r[1]));
        let t1 = _mm512_castps_pd(_mm512_unpackhi_ps(r[0], r[1]));
        let t2 = _mm512_castps_pd(_mm512_unpacklo_ps(r[2], r[3]));
        let t3 = _mm512_castps_pd(_mm512_unpackhi_ps(r[2], r[3]));
        [
            _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2)),
            _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3)),
        ]
    }
    #[inline(always)]
    unsafe fn across_lanes(u: [__m512; OUT]) -> [__m512; OUT] {
        let v0 = _mm512_shuffle_f32x4::<0b01_00_01_00>(u[0], u[1]);
        let v1 = _mm512_shuffle_f32x4::<0b01_00_01_00>(u[2], u[3]);
        let v2 = _mm512_shuffle_f32x4::<0b11_10_11_10>(u[0], u[1]);
        let v3 = _mm512_shuffle_f32x4::<0b11_10_11_10>(u[2], u[3]);
        [
            _mm512_shuffle_f32x4::<0b10_00_10_00>(v0, v1),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(v0, v1),
            _mm512_shuffle_f32x4::<0b10_00_10_00>(v2, v3),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(v2, v3),
        ]
    }
    unsafe {
        let r: [__m512; OUT] = std::array::from_fn(|i| _mm512_loadu_ps(rows[i].as_ptr()));
        let t = match TO_PIXELS {
            true => across_lanes(within_lanes(r)),
            false => within_lanes(across_lanes(r)),
        };
        let mut out = [0f32; OUT * LANES];
        for (i, v) in t.into_iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(i * LANES), v);
        }
        out
    }
}

/// Tiles one vector holds (the transforms run across 16 tiles at a time).
const LANES: usize = 16;
type Lanes = [f32; LANES];

/// `matrix · vectors`, lane by lane (the matrices are constants: zero terms fold away).
#[inline(always)]
fn apply<const R: usize, const C: usize>(matrix: &[[f32; C]; R], vectors: &[Lanes; C]) -> [Lanes; R] {
    std::array::from_fn(|r| {
        let mut sum = [0f32; LANES];
        for (&coef, x) in matrix[r].iter().zip(vectors) {
            if coef != 0.0 {
                for (s, &x) in sum.iter_mut().zip(x) {
                    *s += coef * x;
                }
            }
        }
        sum
    })
}

/// `u [36, og, c]` = G g Gᵀ for output channels `o0..o0 + og`, per channel in parallel (the
/// weight `[3, 3, o, c]`, so each sum runs along contiguous input channels).
fn transform_kernels(weight: &[f32], u: &mut [f32], s: Shape, o0: usize, og: usize) {
    let u = SharedMut::new(u.as_mut_ptr());
    (0..og).into_par_iter().for_each_init(Vec::new, |half, oi| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above); u as below.
            return unsafe { kernel_avx512(weight, u, s, o0, og, oi, half) };
        }
        kernel(weight, u, s, o0, og, oi, half)
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512(weight: &[f32], u: SharedMut, s: Shape, o0: usize, og: usize, oi: usize, half: &mut Vec<f32>) {
    kernel(weight, u, s, o0, og, oi, half)
}

/// Output channel `o0 + oi`'s share of [`transform_kernels`].
#[inline(always)]
fn kernel(weight: &[f32], u: SharedMut, s: Shape, o0: usize, og: usize, oi: usize, half: &mut Vec<f32>) {
    let Shape { c, o, .. } = s;
    {
        let tap = |k: usize, l: usize| &weight[((k * 3 + l) * o + o0 + oi) * c..][..c];
        // half[a][l] = Σ_k G[a][k] · g[k][l], then U[a·6 + j] = Σ_l half[a][l] · G[j][l].
        half.clear();
        half.resize(SPAN * 3 * c, 0f32);
        for (a, ga) in G.iter().enumerate() {
            for l in 0..3 {
                let dst = &mut half[(a * 3 + l) * c..][..c];
                for (k, &coef) in ga.iter().enumerate() {
                    if coef != 0.0 {
                        dst.iter_mut().zip(tap(k, l)).for_each(|(d, &x)| *d += coef * x);
                    }
                }
            }
        }
        for a in 0..SPAN {
            for (j, gj) in G.iter().enumerate() {
                // SAFETY: row oi of point a·6 + j: inside u, written by this task alone.
                let dst = unsafe { std::slice::from_raw_parts_mut(u.get().add(((a * SPAN + j) * og + oi) * c), c) };
                dst.fill(0.0);
                for (l, &coef) in gj.iter().enumerate() {
                    if coef != 0.0 {
                        let src = &half[(a * 3 + l) * c..][..c];
                        dst.iter_mut().zip(src).for_each(|(d, &x)| *d += coef * x);
                    }
                }
            }
        }
    }
}

/// The block's output tiles of channels `o0..o0 + og`: `y = Aᵀ M A (+ bias)`, per channel in
/// parallel, cut at the image's edges.
#[allow(clippy::too_many_arguments)]
fn transform_outputs(m: &[f32], out: &mut [f32], bias: Option<&[f32]>, s: Shape, block: Block, o0: usize, og: usize) {
    let out = SharedMut::new(out.as_mut_ptr());
    (0..og).into_par_iter().for_each_init(Vec::new, |down, oi| {
        let job = OutputChannel { m, out, offset: bias.map_or(0.0, |b| b[o0 + oi]), s, block, o0, og, oi };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { job.run_avx512(down) };
        }
        job.run::<false>(down)
    });
}

/// One output channel's share of [`transform_outputs`].
struct OutputChannel<'a> {
    m: &'a [f32],
    out: SharedMut,
    offset: f32,
    s: Shape,
    block: Block,
    o0: usize,
    og: usize,
    oi: usize,
}

impl OutputChannel<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, down: &mut Vec<Lanes>) {
        self.run::<true>(down)
    }

    /// Per tile row: down the tile's six rows first (six streams of `m` at a time, into a
    /// tile row's scratch), then across, back to pixel order.
    #[inline(always)]
    fn run<const AVX512: bool>(&self, down: &mut Vec<Lanes>) {
        let Shape { h, w, o, .. } = self.s;
        let (tw, oc) = (self.block.tw, self.o0 + self.oi);
        let stride = self.block.stride();
        let vectors = tw.div_ceil(LANES);
        down.clear();
        down.resize(SPAN * OUT * vectors, [0f32; LANES]);
        let mut column = 0;
        for (item, ty0, count) in self.block.runs() {
            for ty in ty0..ty0 + count {
                // down[j][p] = Σ_a Aᵀ[p][a] · M[a·6 + j] (whole vectors: lanes past the tile row
                // read the next one's or the padding).
                for j in 0..SPAN {
                    for vector in 0..vectors {
                        let points: [Lanes; SPAN] = std::array::from_fn(|a| {
                            let from = ((a * SPAN + j) * self.og + self.oi) * stride + column + vector * LANES;
                            self.m[from..from + LANES].try_into().unwrap()
                        });
                        for (p, lanes) in apply(&AT, &points).into_iter().enumerate() {
                            down[(j * OUT + p) * vectors + vector] = lanes;
                        }
                    }
                }
                // y[p][q] = Σ_j Aᵀ[q][j] · down[j][p] (+ bias), tile l's four values to 4·l + q.
                for p in 0..OUT.min(h - OUT * ty) {
                    // SAFETY: row 4·ty + p of channel oc of this item: inside out, this task's alone.
                    let row = unsafe { std::slice::from_raw_parts_mut(self.out.get().add(((item * o + oc) * h + OUT * ty + p) * w), w) };
                    for vector in 0..vectors {
                        let across: [Lanes; SPAN] = std::array::from_fn(|j| down[(j * OUT + p) * vectors + vector]);
                        let mut y = apply(&AT, &across);
                        y.iter_mut().flatten().for_each(|value| *value += self.offset);
                        let pixels = interleave::<AVX512>(&y);
                        let x0 = OUT * LANES * vector;
                        match row.get_mut(x0..x0 + OUT * LANES) {
                            Some(dst) => dst.copy_from_slice(&pixels),
                            None => row[x0..].copy_from_slice(&pixels[..w - x0]),
                        }
                    }
                }
                column += tw;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Against candle's direct convolution, at shapes that cut tiles at the edges, batch items
    /// sharing a block, several blocks and several groups of output channels.
    #[test]
    fn matches_the_direct_convolution() {
        let dev = Device::Cpu;
        for &(n, c, o, h, w, bias) in &[
            (1, 1, 1, 4, 4, false),
            (1, 3, 5, 7, 9, true),
            (2, 8, 4, 6, 5, true),
            (1, 16, 8, 1, 1, true),
            (2, 5, 3, 13, 2, false),
            // Several blocks of tile rows (at least 256 tiles: 32 rows of 8), a row's end not
            // a whole vector of pixels (140 = 2·64 + 12; doubled from 70).
            (1, 64, 24, 200, 30, true),
            (1, 24, 8, 260, 140, true),
            // Several groups of output channels (32 Mi / (36·9000) = 103 → 96 per group).
            (2, 9000, 100, 5, 6, true),
        ] {
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (o, c, 3, 3), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., o, &dev).unwrap();
            let mut want = x.conv2d(&wt, 1, 1, 1, 1).unwrap();
            if bias {
                want = want.broadcast_add(&b.reshape((1, o, 1, 1)).unwrap()).unwrap();
            }
            let taps = wt.permute((2, 3, 0, 1)).unwrap().contiguous().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = b.to_vec1::<f32>().unwrap();
            let got = run(
                &x.flatten_all().unwrap().to_vec1().unwrap(),
                None,
                &taps,
                bias.then_some(&b[..]),
                Shape { n, c, h, w, o, doubled: false },
            );
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            check(&got, &want, c, &format!("{n} {c}→{o} {h}×{w}"));
            // The same layer on the input's nearest-neighbour half, given as that half.
            if (h % 2, w % 2) == (0, 0) && h * w > 1 {
                let half = x.narrow(2, 0, h / 2).unwrap().narrow(3, 0, w / 2).unwrap();
                let whole = half.upsample_nearest2d(h, w).unwrap();
                let mut want = whole.conv2d(&wt, 1, 1, 1, 1).unwrap();
                if bias {
                    want = want.broadcast_add(&Tensor::new(&b[..], &dev).unwrap().reshape((1, o, 1, 1)).unwrap()).unwrap();
                }
                let given = half.flatten_all().unwrap().to_vec1().unwrap();
                let got = run(&given, None, &taps, bias.then_some(&b[..]), Shape { n, c, h, w, o, doubled: true });
                check(&got, &want.flatten_all().unwrap().to_vec1::<f32>().unwrap(), c, &format!("{n} {c}→{o} {h}×{w} doubled"));
            }
        }
    }

    fn check(got: &[f32], want: &[f32], c: usize, what: &str) {
        assert_eq!(got.len(), want.len());
        // Sums of 9c products of N(0, 1) values have a spread of √(9c); Winograd's rounding
        // stays within 1e-4 of it at worst, ~1e-5 typically (a wrong transform is off by O(1)).
        let scale = (9.0 * c as f32).sqrt();
        let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let rms = (got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / got.len() as f32).sqrt();
        println!("{what}: worst {:.2e}, rms {:.2e} of the spread", worst / scale, rms / scale);
        assert!(worst < 1e-4 * scale && rms < 2e-5 * scale, "{what}: worst {worst}, rms {rms} (scale {scale})");
    }
}
