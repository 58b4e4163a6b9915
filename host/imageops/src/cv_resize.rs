//! OpenCV 4.10's `cv2.resize` as Fooocus's preprocessors call it (`imgproc/resize.cpp`, scalar
//! paths, no FMA): INTER_AREA on 8-bit images (integer factors: block means, 2×2 rounded half up;
//! other factors: OpenCV's fractional area table with float weights, rounded half to even) and
//! INTER_LINEAR on float images (half-pixel centres, edge-clamped, horizontal then vertical).

use crate::Pixels;

/// A float image, `H×W×C` interleaved (numpy `float32`).
#[derive(Clone, Debug, PartialEq)]
pub struct FloatImage {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub data: Vec<f32>,
}

/// `saturate_cast<uchar>(float)`: round half to even, clamp.
fn saturate_u8(v: f32) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

/// OpenCV's `resize` keeps `1 / (dst/src)`, not `src/dst`.
fn scale(src: u32, dst: u32) -> f64 {
    1.0 / (dst as f64 / src as f64)
}

/// `computeResizeAreaTab`: `(destination index, source index, weight)` per contribution.
fn area_table(ssize: usize, dsize: usize, scale: f64) -> Vec<(usize, usize, f32)> {
    let mut tab = Vec::with_capacity(ssize * 2);
    for dx in 0..dsize {
        let fsx1 = dx as f64 * scale;
        let fsx2 = fsx1 + scale;
        let cell = scale.min(ssize as f64 - fsx1);
        let mut sx1 = fsx1.ceil() as i64;
        let sx2 = (fsx2.floor() as i64).min(ssize as i64 - 1);
        sx1 = sx1.min(sx2);
        if sx1 as f64 - fsx1 > 1e-3 {
            tab.push((dx, (sx1 - 1) as usize, ((sx1 as f64 - fsx1) / cell) as f32));
        }
        for sx in sx1..sx2 {
            tab.push((dx, sx as usize, (1.0 / cell) as f32));
        }
        if fsx2 - sx2 as f64 > 1e-3 {
            tab.push((dx, sx2 as usize, ((fsx2 - sx2 as f64).min(1.0).min(cell) / cell) as f32));
        }
    }
    tab
}

/// `cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA)` for a downscale (the same size
/// is a copy); an upscale (OpenCV then interpolates linearly; Fooocus never asks) gives `None`.
pub fn resize_area(src: &Pixels, width: u32, height: u32) -> Option<Pixels> {
    if (width, height) == (src.width, src.height) {
        return Some(src.clone());
    }
    if width == 0 || height == 0 || width > src.width || height > src.height {
        return None;
    }
    let (sx, sy) = (scale(src.width, width), scale(src.height, height));
    let (ix, iy) = (sx.round() as usize, sy.round() as usize);
    let fast = (sx - ix as f64).abs() < f64::EPSILON && (sy - iy as f64).abs() < f64::EPSILON;
    Some(if fast { area_fast(src, width, height, ix, iy) } else { area_general(src, width, height, sx, sy) })
}

/// Whole-pixel blocks: 2×2 as `(sum + 2) >> 2` (OpenCV's vector op), others `sum · (1/area)`.
fn area_fast(src: &Pixels, width: u32, height: u32, ix: usize, iy: usize) -> Pixels {
    let cn = src.channels as usize;
    let sw = src.width as usize;
    let mut data = vec![0u8; width as usize * height as usize * cn];
    let inv_area = 1.0f32 / (ix * iy) as f32;
    for dy in 0..height as usize {
        for dx in 0..width as usize {
            for c in 0..cn {
                let mut sum = 0u32;
                for y in dy * iy..(dy + 1) * iy {
                    for x in dx * ix..(dx + 1) * ix {
                        sum += src.data[(y * sw + x) * cn + c] as u32;
                    }
                }
                data[(dy * width as usize + dx) * cn + c] =
                    if ix == 2 && iy == 2 && matches!(cn, 1 | 3 | 4) { ((sum + 2) >> 2) as u8 } else { saturate_u8(sum as f32 * inv_area) };
            }
        }
    }
    Pixels { width, height, data, ..src.clone() }
}

/// OpenCV's `ResizeArea_Invoker`: each source row's weighted columns into `buf`, rows weighted into
/// `sum`, written out as the destination row changes.
fn area_general(src: &Pixels, width: u32, height: u32, sx: f64, sy: f64) -> Pixels {
    let cn = src.channels as usize;
    let (sw, dw) = (src.width as usize, width as usize * cn);
    let xtab = area_table(src.width as usize, width as usize, sx);
    let ytab = area_table(src.height as usize, height as usize, sy);
    let mut data = vec![0u8; dw * height as usize];
    let mut buf = vec![0f32; dw];
    let mut sum = vec![0f32; dw];
    let mut prev_dy = ytab.first().map_or(0, |t| t.0);
    for &(dy, row, beta) in &ytab {
        buf.iter_mut().for_each(|b| *b = 0.0);
        let s = &src.data[row * sw * cn..(row + 1) * sw * cn];
        for &(dx, sxi, alpha) in &xtab {
            for c in 0..cn {
                buf[dx * cn + c] += s[sxi * cn + c] as f32 * alpha;
            }
        }
        if dy != prev_dy {
            let out = &mut data[prev_dy * dw..(prev_dy + 1) * dw];
            for i in 0..dw {
                out[i] = saturate_u8(sum[i]);
                sum[i] = beta * buf[i];
            }
            prev_dy = dy;
        } else {
            for i in 0..dw {
                sum[i] += beta * buf[i];
            }
        }
    }
    let out = &mut data[prev_dy * dw..(prev_dy + 1) * dw];
    for i in 0..dw {
        out[i] = saturate_u8(sum[i]);
    }
    Pixels { width, height, data, ..src.clone() }
}

/// Source index and weights `(1 − f, f)` of each destination coordinate (`fx = (d + ½)·scale − ½`
/// in f32, clamped to the edges).
fn linear_table(ssize: u32, dsize: u32) -> Vec<(usize, f32, f32)> {
    let scale = scale(ssize, dsize);
    (0..dsize)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut f = f - s as f32;
            if s < 0 {
                (s, f) = (0, 0.0);
            }
            if s >= ssize as i64 - 1 {
                (s, f) = (ssize as i64 - 1, 0.0);
            }
            (s as usize, 1.0 - f, f)
        })
        .collect()
}

/// `cv2.resize(src, (width, height), interpolation=cv2.INTER_LINEAR)` on a float image.
pub fn resize_linear_f32(src: &FloatImage, width: u32, height: u32) -> FloatImage {
    let cn = src.channels as usize;
    let (sw, sh) = (src.width as usize, src.height as usize);
    let xtab = linear_table(src.width, width);
    let ytab = linear_table(src.height, height);
    let dw = width as usize * cn;
    let horizontal = |row: usize| -> Vec<f32> {
        let s = &src.data[row * sw * cn..(row + 1) * sw * cn];
        let mut out = vec![0f32; dw];
        for (dx, &(sx, a0, a1)) in xtab.iter().enumerate() {
            let next = (sx + 1).min(sw - 1);
            for c in 0..cn {
                out[dx * cn + c] = s[sx * cn + c] * a0 + s[next * cn + c] * a1;
            }
        }
        out
    };
    let mut data = Vec::with_capacity(dw * height as usize);
    for &(sy, b0, b1) in &ytab {
        let (r0, r1) = (horizontal(sy), horizontal((sy + 1).min(sh - 1)));
        data.extend(r0.iter().zip(&r1).map(|(a, b)| a * b0 + b * b1));
    }
    FloatImage { width, height, channels: src.channels, data }
}
