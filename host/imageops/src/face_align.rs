//! FaceSwap's face crop after detection (Fooocus's `extras/face_crop.py:align_warp_face`): the
//! similarity transform that puts the five landmarks on FFHQ's 512-px face template, as OpenCV
//! 4.10's `estimateAffinePartial2D(…, method=LMEDS)` fits it, then `warpAffine` to 512×512 with
//! bilinear taps and a constant border of BGR (135, 133, 132).
//!
//! The fit follows OpenCV's own steps so the same points give the same matrix: 13 least-median
//! draws of two points from `cv::RNG(-1)`, the median of f32 squared errors, its inlier
//! threshold, then least squares over the inliers (OpenCV refines with Levenberg–Marquardt,
//! which lands on the same minimum: the problem is linear). The warp is OpenCV's fixed-point one:
//! coordinates in 1/1024 px rounded to 1/32, weights in 1/32768.

use crate::Pixels;

/// `FaceRestoreHelper.face_template` for 512-px faces: eyes, nose tip, mouth corners.
pub const FACE_TEMPLATE: [[f64; 2]; 5] =
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118]];
/// The crop's side (`face_size`).
pub const FACE_SIZE: u32 = 512;
/// `align_warp_face`'s border, given in BGR (135, 133, 132) to an image Fooocus holds as BGR.
pub const BORDER_RGB: [u8; 3] = [132, 133, 135];

/// Fooocus's crop of the face whose five landmarks (image pixels) are given: 512×512 RGB. `None`
/// when the points do not fix a transform (OpenCV answers no matrix; Fooocus then fails).
pub fn face_crop(image: &Pixels, landmarks: &[(f32, f32); 5]) -> Option<Pixels> {
    let from = landmarks.map(|(x, y)| [x, y]);
    let to = FACE_TEMPLATE.map(|[x, y]| [x as f32, y as f32]);
    let m = estimate_similarity_lmeds(&from, &to)?;
    Some(warp_affine(image, &m, FACE_SIZE, FACE_SIZE, BORDER_RGB))
}

/// OpenCV's `cv::RNG`: multiply-with-carry on 64 bits.
struct CvRng(u64);

impl CvRng {
    fn next(&mut self) -> u32 {
        self.0 = (self.0 as u32 as u64).wrapping_mul(4_164_903_690).wrapping_add(self.0 >> 32);
        self.0 as u32
    }

    /// `uniform(0, n)`.
    fn below(&mut self, n: u32) -> usize {
        (self.next() % n) as usize
    }
}

/// `[a, −b, tx, b, a, ty]` through two point pairs (`AffinePartial2DEstimatorCallback::runKernel`).
fn similarity_through(from: [[f32; 2]; 2], to: [[f32; 2]; 2]) -> [f64; 6] {
    let [[x1, y1], [x2, y2]] = from.map(|p| p.map(f64::from));
    let [[cx1, cy1], [cx2, cy2]] = to.map(|p| p.map(f64::from));
    let d = 1.0 / ((x1 - x2) * (x1 - x2) + (y1 - y2) * (y1 - y2));
    let s0 = d * ((cx1 - cx2) * (x1 - x2) + (cy1 - cy2) * (y1 - y2));
    let s1 = d * ((cy1 - cy2) * (x1 - x2) - (cx1 - cx2) * (y1 - y2));
    let s2 = d * ((cy1 - cy2) * (x1 * y2 - x2 * y1) - (cx1 * y2 - cx2 * y1) * (y1 - y2) - (cx1 * x2 - cx2 * x1) * (x1 - x2));
    let s3 = d * (-(cx1 - cx2) * (x1 * y2 - x2 * y1) - (cy1 * x2 - cy2 * x1) * (x1 - x2) - (cy1 * y2 - cy2 * y1) * (y1 - y2));
    [s0, -s1, s2, s1, s0, s3]
}

/// Squared reprojection errors in f32, as `computeError` takes them.
fn errors(m: &[f64; 6], from: &[[f32; 2]], to: &[[f32; 2]]) -> Vec<f32> {
    let f = m.map(|v| v as f32);
    from.iter()
        .zip(to)
        .map(|(p, t)| {
            let a = f[0] * p[0] + f[1] * p[1] + f[2] - t[0];
            let b = f[3] * p[0] + f[4] * p[1] + f[5] - t[1];
            a * a + b * b
        })
        .collect()
}

/// `estimateAffinePartial2D(from, to, method=LMEDS)` with its defaults (confidence 0.99, refined).
pub fn estimate_similarity_lmeds(from: &[[f32; 2]], to: &[[f32; 2]]) -> Option<[f64; 6]> {
    let count = from.len();
    if count < 2 || to.len() != count {
        return None;
    }
    if count == 2 {
        return Some(similarity_through([from[0], from[1]], [to[0], to[1]]));
    }
    // RANSACUpdateNumIters(0.99, 0.45, 2, 2000) = round(ln 0.01 / ln(1 − 0.55²)) = 13.
    const ITERATIONS: usize = 13;
    let mut rng = CvRng(u64::MAX);
    let mut best: Option<([f64; 6], f32)> = None;
    for _ in 0..ITERATIONS {
        // Two distinct indices (two points are never collinear, so every draw is kept).
        let i = rng.below(count as u32);
        let j = loop {
            let j = rng.below(count as u32);
            if j != i {
                break j;
            }
        };
        let model = similarity_through([from[i], from[j]], [to[i], to[j]]);
        // nth_element over the errors' bit patterns as ints (the same order for these floats).
        let mut err = errors(&model, from, to);
        err.sort_by_key(|e| e.to_bits() as i32);
        let median = err[count / 2];
        if best.is_none_or(|(_, m)| (median as f64) < m as f64) {
            best = Some((model, median));
        }
    }
    let (model, median) = best?;
    let sigma = (2.5 * 1.4826 * (1.0 + 5.0 / (count - 2) as f64) * (median as f64).sqrt()).max(0.001);
    let limit = (sigma * sigma) as f32;
    let inliers: Vec<usize> = errors(&model, from, to).iter().enumerate().filter(|(_, &e)| e <= limit).map(|(k, _)| k).collect();
    if inliers.len() < 2 {
        return None;
    }
    Some(least_squares_similarity(&inliers.iter().map(|&k| (from[k], to[k])).collect::<Vec<_>>()))
}

/// The similarity `[a, −b, tx, b, a, ty]` minimising the squared distances over `pairs`.
fn least_squares_similarity(pairs: &[([f32; 2], [f32; 2])]) -> [f64; 6] {
    let n = pairs.len() as f64;
    let mut sums = [0f64; 4];
    for (f, t) in pairs {
        for (s, v) in sums.iter_mut().zip([f[0], f[1], t[0], t[1]]) {
            *s += v as f64;
        }
    }
    let [mx, my, tx, ty] = sums.map(|s| s / n);
    let (mut along, mut across, mut norm) = (0.0, 0.0, 0.0);
    for (f, t) in pairs {
        let (x, y) = (f[0] as f64 - mx, f[1] as f64 - my);
        let (u, v) = (t[0] as f64 - tx, t[1] as f64 - ty);
        along += x * u + y * v;
        across += x * v - y * u;
        norm += x * x + y * y;
    }
    let (a, b) = (along / norm, across / norm);
    [a, -b, tx - (a * mx - b * my), b, a, ty - (b * mx + a * my)]
}

/// `cv2.warpAffine(src, m, (width, height), INTER_LINEAR, BORDER_CONSTANT, border)` on 8-bit RGB.
pub fn warp_affine(src: &Pixels, m: &[f64; 6], width: u32, height: u32, border: [u8; 3]) -> Pixels {
    const AB_BITS: u32 = 10;
    const INTER_BITS: u32 = 5;
    const ROUND_DELTA: i32 = (1 << AB_BITS) / (1 << INTER_BITS) / 2;
    let scale = (1 << AB_BITS) as f64;
    // The inverse map, computed as warpAffine does.
    let det = m[0] * m[4] - m[1] * m[3];
    let d = if det != 0.0 { 1.0 / det } else { 0.0 };
    let (a11, a22) = (m[4] * d, m[0] * d);
    let (a12, a21) = (m[1] * -d, m[3] * -d);
    let b1 = -a11 * m[2] - a12 * m[5];
    let b2 = -a21 * m[2] - a22 * m[5];
    let fixed = |v: f64| round_to_int(v * scale);
    let adelta: Vec<i32> = (0..width).map(|x| fixed(a11 * x as f64)).collect();
    let bdelta: Vec<i32> = (0..width).map(|x| fixed(a21 * x as f64)).collect();
    let (sw, sh) = (src.width as i32, src.height as i32);
    let stride = src.width as usize * 3;
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        let x0 = fixed(a12 * y as f64 + b1).wrapping_add(ROUND_DELTA);
        let y0 = fixed(a22 * y as f64 + b2).wrapping_add(ROUND_DELTA);
        for x in 0..width as usize {
            let fx = x0.wrapping_add(adelta[x]) >> (AB_BITS - INTER_BITS);
            let fy = y0.wrapping_add(bdelta[x]) >> (AB_BITS - INTER_BITS);
            let (sx, sy) = (saturate_i16(fx >> INTER_BITS), saturate_i16(fy >> INTER_BITS));
            let (ax, ay) = (fx & 31, fy & 31);
            let w = [(32 - ay) * (32 - ax) * 32, (32 - ay) * ax * 32, ay * (32 - ax) * 32, ay * ax * 32];
            if sx >= sw || sx + 1 < 0 || sy >= sh || sy + 1 < 0 {
                out.extend_from_slice(&border);
                continue;
            }
            let tap = |tx: i32, ty: i32, c: usize| -> i32 {
                if (0..sw).contains(&tx) && (0..sh).contains(&ty) {
                    src.data[ty as usize * stride + tx as usize * 3 + c] as i32
                } else {
                    border[c] as i32
                }
            };
            for c in 0..3 {
                let sum = tap(sx, sy, c) * w[0] + tap(sx + 1, sy, c) * w[1] + tap(sx, sy + 1, c) * w[2] + tap(sx + 1, sy + 1, c) * w[3];
                out.push(((sum + (1 << 14)) >> 15).clamp(0, 255) as u8);
            }
        }
    }
    Pixels::rgb(width, height, out).expect("width × height × 3 bytes")
}

/// `saturate_cast<int>(double)`: round half to even, clamped.
fn round_to_int(v: f64) -> i32 {
    let r = v.round_ties_even();
    if r.is_nan() {
        0
    } else {
        r.clamp(i32::MIN as f64, i32::MAX as f64) as i32
    }
}

fn saturate_i16(v: i32) -> i32 {
    v.clamp(i16::MIN as i32, i16::MAX as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rng_is_opencvs() {
        // cv::RNG(-1): state 2^64 − 1; first outputs as OpenCV's formula gives them.
        let mut rng = CvRng(u64::MAX);
        let first = rng.next();
        assert_eq!(first, (0xFFFF_FFFFu64 * 4_164_903_690 + 0xFFFF_FFFF) as u32);
    }

    #[test]
    fn exact_points_give_their_similarity() {
        let m_true = [0.8f64, -0.3, 12.0, 0.3, 0.8, -7.0];
        let from: Vec<[f32; 2]> = FACE_TEMPLATE.iter().map(|p| [p[0] as f32 / 3.0, p[1] as f32 / 2.0]).collect();
        let to: Vec<[f32; 2]> = from
            .iter()
            .map(|p| {
                let (x, y) = (p[0] as f64, p[1] as f64);
                [(m_true[0] * x + m_true[1] * y + m_true[2]) as f32, (m_true[3] * x + m_true[4] * y + m_true[5]) as f32]
            })
            .collect();
        let m = estimate_similarity_lmeds(&from, &to).unwrap();
        for k in 0..6 {
            assert!((m[k] - m_true[k]).abs() < 1e-4, "{k}: {} vs {}", m[k], m_true[k]);
        }
    }
}
