//! Fooocus's CPDS preprocessor (`extras/preprocessors.py:cpds`) and the `cv2.decolor` it is built
//! on (Lu, Xu and Jia's contrast-preserving decolorization, OpenCV 4.10 `photo/contrast_preserve`).
//!
//! decolor: the image as floats (`x · (1/255)`), shrunk to `h + w ≤ 800` (INTER_LINEAR, aspect
//! kept) for the fitting; per pixel the colour-contrast target `Cg` (Lab gradient length / 100)
//! and the x/y gradients of the nine monomials `R^r G^g B^b` (1 ≤ r+g+b ≤ 2); a least-squares map
//! `Mt` from them; up to 16 fixed-point iterations of the weights on the gradients' sign
//! agreement `alf`; the grey image is the weighted monomials of the full image, stretched to
//! [0, 1] and rounded to 8 bits; the "colour boost" is the input with its Lab lightness replaced
//! by that grey. Sums run in the order and precision OpenCV's loops use. The order of the colour
//! channels is OpenCV's (B, G, R by index): Fooocus hands in RGB and decolor reads it as BGR, and
//! so does this.

use crate::cv_resize::{resize_linear_f32, FloatImage};
use crate::lab::{bgr_to_lab, bgr_to_lab_u8, lab_to_bgr_u8};
use crate::Pixels;

/// The exponents (r, g, b) of the monomials, in OpenCV's loop order.
const MONOMIALS: [[i32; 3]; 9] = [[0, 0, 1], [0, 0, 2], [0, 1, 0], [0, 1, 1], [0, 2, 0], [1, 0, 0], [1, 0, 1], [1, 1, 0], [2, 0, 0]];
const SIGMA: f32 = 0.02;
const MAX_ITERATIONS: usize = 15;
const TOLERANCE: f64 = 1e-4;

pub struct Decolored {
    /// One byte a pixel.
    pub gray: Vec<u8>,
    /// The input with its lightness replaced by `gray`.
    pub color_boost: Pixels,
}

/// `c · R^r · G^g · B^b` of one float pixel (stored B, G, R), multiplied left to right in double as
/// C++ evaluates `c * pow(float, int) * …` (the grey image passes its weight as `c`, the gradients 1).
fn monomial(c: f64, px: &[f32], [r, g, b]: [i32; 3]) -> f64 {
    let p = |v: f32, e: i32| (v as f64).powi(e);
    c * p(px[2], r) * p(px[1], g) * p(px[0], b)
}

/// x then y differences of a plane (`v[i][j] − v[i][j+1]`, `v[i][j] − v[i+1][j]`, 0 on the last
/// column/row), each read column by column (OpenCV transposes before flattening).
fn gradients(plane: &[f32], w: usize, h: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(2 * w * h);
    for j in 0..w {
        out.extend((0..h).map(|i| if j + 1 < w { (plane[i * w + j] - plane[i * w + j + 1]) as f64 } else { 0.0 }));
    }
    for j in 0..w {
        out.extend((0..h).map(|i| if i + 1 < h { (plane[i * w + j] - plane[(i + 1) * w + j]) as f64 } else { 0.0 }));
    }
    out
}

fn channel(img: &FloatImage, c: usize) -> Vec<f32> {
    img.data.chunks_exact(3).map(|px| px[c]).collect()
}

/// `cv::solve(a, b, DECOMP_NORMAL)` with a square `a`, which OpenCV solves directly (the normal
/// flag only applies to tall matrices): `LUImpl<float>` — partial pivoting, elimination and back
/// substitution in float. `None` when a pivot falls under 10·FLT_EPSILON (OpenCV then answers 0).
// Index loops, as OpenCV's: the order of the float operations is the point.
#[allow(clippy::needless_range_loop)]
fn solve(a: &[[f32; 9]; 9], b: &[Vec<f32>]) -> Option<Vec<Vec<f32>>> {
    let n = b[0].len();
    let mut m = *a;
    let mut x: Vec<Vec<f32>> = b.to_vec();
    for i in 0..9 {
        let mut k = i;
        for j in i + 1..9 {
            if m[j][i].abs() > m[k][i].abs() {
                k = j;
            }
        }
        if m[k][i].abs() < f32::EPSILON * 10.0 {
            return None;
        }
        if k != i {
            for j in i..9 {
                let t = m[i][j];
                m[i][j] = m[k][j];
                m[k][j] = t;
            }
            x.swap(i, k);
        }
        let d = -1.0 / m[i][i];
        for j in i + 1..9 {
            let alpha = m[j][i] * d;
            for c in i + 1..9 {
                m[j][c] += alpha * m[i][c];
            }
            let (upper, lower) = x.split_at_mut(j);
            for (t, s) in lower[0].iter_mut().zip(&upper[i]) {
                *t += alpha * s;
            }
        }
    }
    for i in (0..9).rev() {
        for c in 0..n {
            let mut s = x[i][c];
            for k in i + 1..9 {
                s -= m[i][k] * x[k][c];
            }
            x[i][c] = s / m[i][i];
        }
    }
    Some(x)
}

/// The monomial weights fitted on `small` (OpenCV's `grad_system`, `weak_order`, solver loop).
fn weights(small: &FloatImage) -> Option<[f64; 9]> {
    let (w, h) = (small.width as usize, small.height as usize);
    let (b, g, r) = (channel(small, 0), channel(small, 1), channel(small, 2));
    // Where all three channels rise (+1) or all fall (−1) by more than 0.05.
    let (rg, gg, bg) = (gradients(&r, w, h), gradients(&g, w, h), gradients(&b, w, h));
    let level = 0.05;
    let alf: Vec<f64> = (0..rg.len())
        .map(|i| {
            let up = (rg[i] > level && gg[i] > level && bg[i] > level) as i32 as f64;
            let down = (rg[i] < -level && gg[i] < -level && bg[i] < -level) as i32 as f64;
            up - down
        })
        .collect();
    let lab: Vec<[f32; 3]> = small.data.chunks_exact(3).map(|px| bgr_to_lab([px[0], px[1], px[2]])).collect();
    let lab_gradients: Vec<Vec<f64>> = (0..3).map(|k| gradients(&lab.iter().map(|p| p[k]).collect::<Vec<_>>(), w, h)).collect();
    let cg: Vec<f64> = (0..rg.len())
        .map(|i| (lab_gradients[0][i].powi(2) + lab_gradients[1][i].powi(2) + lab_gradients[2][i].powi(2)).sqrt() / 100.0)
        .collect();
    let poly: Vec<Vec<f64>> = MONOMIALS
        .iter()
        .map(|&e| {
            let plane: Vec<f32> = small.data.chunks_exact(3).map(|px| monomial(1.0, px, e) as f32).collect();
            gradients(&plane, w, h)
        })
        .collect();
    // Mt solves (P Pᵀ) Mt = P ∘ Cg, in float as OpenCV stores them (P Pᵀ summed in double).
    let p: Vec<Vec<f32>> = poly.iter().map(|row| row.iter().map(|&v| v as f32).collect()).collect();
    let rhs: Vec<Vec<f32>> = poly.iter().map(|row| row.iter().zip(&cg).map(|(v, c)| (v * c) as f32).collect()).collect();
    let mut a = [[0f32; 9]; 9];
    for i in 0..9 {
        for j in 0..9 {
            a[i][j] = p[i].iter().zip(&p[j]).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>() as f32;
        }
    }
    let mt = solve(&a, &rhs)?;

    let mut wei = [0f64; 9];
    for (k, e) in MONOMIALS.iter().enumerate() {
        if e.iter().sum::<i32>() == 1 {
            wei[k] = 0.33;
        }
    }
    let n = cg.len();
    let sq_sigma = (SIGMA * SIGMA) as f64;
    let fitted = |wei: &[f64; 9], i: usize| (0..9).fold(0.0, |val, j| val + poly[j][i] * wei[j]);
    let energy = |wei: &[f64; 9]| {
        let sum = (0..n).fold(0.0, |sum, i| {
            let val = fitted(wei, i);
            let (t, t1) = (val - cg[i], val + cg[i]);
            sum + -(((-t * t) / SIGMA as f64).exp() + ((-t1 * t1) / SIGMA as f64).exp()).ln()
        });
        sum / n as f64
    };
    let (mut e, mut previous, mut iterations) = (0.0f64, f64::INFINITY, 0);
    let mut term = vec![0f64; n];
    while (e - previous).abs() > TOLERANCE {
        iterations += 1;
        previous = e;
        for (i, term) in term.iter_mut().enumerate() {
            let val = fitted(&wei, i);
            let (t, t1) = (val - cg[i], val + cg[i]);
            let pos = ((1.0 + alf[i]) / 2.0) * (-0.5 * (t * t) / sq_sigma).exp();
            let neg = ((1.0 - alf[i]) / 2.0) * (-0.5 * (t1 * t1) / sq_sigma).exp();
            let sum = pos + neg;
            *term = (pos - neg) / (sum + if sum == 0.0 { 1.0 } else { 0.0 });
        }
        for (k, w) in wei.iter_mut().enumerate() {
            *w = mt[k].iter().zip(&term).fold(0.0, |acc, (m, t)| acc + *m as f64 * t);
        }
        e = energy(&wei);
        if iterations > MAX_ITERATIONS {
            break;
        }
    }
    Some(wei)
}

/// `cv2.decolor(image)` on a 3-channel image; `None` for an empty one or another channel count.
pub fn decolor(image: &Pixels) -> Option<Decolored> {
    if image.channels != 3 || image.width == 0 || image.height == 0 {
        return None;
    }
    let (w, h) = (image.width as usize, image.height as usize);
    let scale = (1.0f64 / 255.0) as f32;
    let img =
        FloatImage { width: image.width, height: image.height, channels: 3, data: image.data.iter().map(|&v| v as f32 * scale).collect() };
    let shrunk = (h + w > 800).then(|| {
        let factor = 800.0 / (h + w) as f64;
        let side = |v: usize| ((v as f64 * factor + 0.5) as u32).max(1);
        resize_linear_f32(&img, side(w), side(h))
    });
    // A flat image has nothing to fit (OpenCV's solve fails too): all weights 0, a black grey image.
    let wei = weights(shrunk.as_ref().unwrap_or(&img)).unwrap_or([0.0; 9]);

    let mut gray = vec![0f32; w * h];
    for (k, &e) in MONOMIALS.iter().enumerate() {
        let weight = wei[k] as f32 as f64;
        for (g, px) in gray.iter_mut().zip(img.data.chunks_exact(3)) {
            *g = (*g as f64 + monomial(weight, px, e)) as f32;
        }
    }
    let min = gray.iter().copied().fold(f32::MAX, f32::min);
    let max = gray.iter().copied().fold(-f32::MAX, f32::max);
    let range = max - min;
    let gray: Vec<u8> = gray.iter().map(|&g| (((g - min) / range) * 255.0).round_ties_even().clamp(0.0, 255.0) as u8).collect();

    let boosted: Vec<u8> = image
        .data
        .chunks_exact(3)
        .zip(&gray)
        .flat_map(|(px, &l)| {
            let lab = bgr_to_lab_u8([px[0], px[1], px[2]]);
            lab_to_bgr_u8([l, lab[1], lab[2]])
        })
        .collect();
    Some(Decolored { gray, color_boost: Pixels::new(image.width, image.height, 3, boosted)? })
}

/// Fooocus's `cpds(x)`: a σ 0.8 Gaussian blur, decolor, then per pixel the grey level plus the
/// distance between the blurred colour and its boost, stretched between the 4th and 96th
/// percentiles. One byte a pixel.
pub fn cpds(image: &Pixels) -> Option<Vec<u8>> {
    let raw = crate::gaussian::gaussian_blur(image, 0.8);
    let Decolored { gray, color_boost } = decolor(&raw)?;
    let result: Vec<f32> = raw
        .data
        .chunks_exact(3)
        .zip(color_boost.data.chunks_exact(3))
        .zip(&gray)
        .map(|((r, b), &d)| {
            let sq = |c: usize| (r[c] as f32 - b[c] as f32) * (r[c] as f32 - b[c] as f32);
            d as f32 + (sq(0) + sq(1) + sq(2)).sqrt()
        })
        .collect();
    Some(crate::canny::norm255(&result, 4.0, 96.0))
}
