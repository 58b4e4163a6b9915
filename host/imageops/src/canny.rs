//! PyraCanny's preprocessor (Fooocus `extras/preprocessors.py:canny_pyramid`) with OpenCV 4.10's
//! Canny (`imgproc/canny.cpp`: 3×3 Sobel with replicated borders, L1 magnitude, non-maximum
//! suppression by the tan 22.5° sectors in 15-bit fixed point, hysteresis over 8 neighbours) and
//! numpy 1.26's arithmetic (percentiles interpolated in f64, the rest in f32).

use crate::cv_resize::{resize_area, resize_linear_f32, FloatImage};
use crate::Pixels;

/// `round(tan(22.5°) · 2^15)`.
const TG22: i64 = 13573;
const SHIFT: u32 = 15;

/// `cv2.Canny(gray, low, high)` (aperture 3, L1 gradient): 255 on edges, 0 elsewhere.
pub fn canny(gray: &[u8], width: usize, height: usize, low: i32, high: i32) -> Vec<u8> {
    let (w, h) = (width as i64, height as i64);
    let px = |x: i64, y: i64| gray[(y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) as usize] as i32;
    let mut dx = vec![0i32; width * height];
    let mut dy = vec![0i32; width * height];
    let mut mag = vec![0i32; width * height];
    for y in 0..h {
        for x in 0..w {
            let gx = px(x + 1, y - 1) - px(x - 1, y - 1) + 2 * (px(x + 1, y) - px(x - 1, y)) + px(x + 1, y + 1) - px(x - 1, y + 1);
            let gy = px(x - 1, y + 1) - px(x - 1, y - 1) + 2 * (px(x, y + 1) - px(x, y - 1)) + px(x + 1, y + 1) - px(x + 1, y - 1);
            let i = (y * w + x) as usize;
            (dx[i], dy[i], mag[i]) = (gx, gy, gx.abs() + gy.abs());
        }
    }
    // Magnitudes outside the image are 0.
    let m = |x: i64, y: i64| if x < 0 || y < 0 || x >= w || y >= h { 0 } else { mag[(y * w + x) as usize] };
    // 2: edge, 0: candidate, 1: not an edge.
    let mut map = vec![1u8; width * height];
    let mut stack = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) as usize;
            let v = mag[i];
            if v <= low {
                continue;
            }
            let (xs, ys) = (dx[i] as i64, dy[i] as i64);
            let (ax, ay) = (xs.abs(), ys.abs() << SHIFT);
            let tg22x = ax * TG22;
            let local_max = if ay < tg22x {
                v > m(x - 1, y) && v >= m(x + 1, y)
            } else if ay > tg22x + (ax << (SHIFT + 1)) {
                v > m(x, y - 1) && v >= m(x, y + 1)
            } else {
                let s = if (xs ^ ys) < 0 { -1 } else { 1 };
                v > m(x - s, y - 1) && v > m(x + s, y + 1)
            };
            if !local_max {
                continue;
            }
            if v > high {
                map[i] = 2;
                stack.push((x, y));
            } else {
                map[i] = 0;
            }
        }
    }
    while let Some((x, y)) = stack.pop() {
        for (nx, ny) in [(x - 1, y - 1), (x, y - 1), (x + 1, y - 1), (x - 1, y), (x + 1, y), (x - 1, y + 1), (x, y + 1), (x + 1, y + 1)] {
            if nx >= 0 && ny >= 0 && nx < w && ny < h {
                let j = (ny * w + nx) as usize;
                if map[j] == 0 {
                    map[j] = 2;
                    stack.push((nx, ny));
                }
            }
        }
    }
    map.iter().map(|&v| if v == 2 { 255 } else { 0 }).collect()
}

/// Canny of each channel, as `float32 / 255`.
fn canny_color(image: &Pixels, low: i32, high: i32) -> FloatImage {
    let (w, h, cn) = (image.width as usize, image.height as usize, image.channels as usize);
    let mut data = vec![0f32; w * h * cn];
    for c in 0..cn {
        let channel: Vec<u8> = image.data.iter().skip(c).step_by(cn).copied().collect();
        for (i, e) in canny(&channel, w, h, low, high).into_iter().enumerate() {
            data[i * cn + c] = e as f32 / 255.0;
        }
    }
    FloatImage { width: image.width, height: image.height, channels: image.channels, data }
}

/// numpy 1.26's `np.percentile(x, q)` (linear): the sorted values around `(n − 1)·q/100`,
/// interpolated in f64 (`b − (b − a)·(1 − t)` from `t = ½` on).
fn percentile(sorted: &[f32], q: f64) -> f64 {
    let n = sorted.len() as f64;
    let q = q / 100.0;
    // numpy's `_compute_virtual_index` with the linear method's α = β = 1, in its operation order.
    const ALPHA: f64 = 1.0;
    const BETA: f64 = 1.0;
    let virtual_index = n * q + (ALPHA + q * (1.0 - ALPHA - BETA)) - 1.0;
    let prev = virtual_index.floor().clamp(0.0, n - 1.0);
    let next = (prev + 1.0).min(n - 1.0);
    let t = virtual_index - virtual_index.floor();
    let (a, b) = (sorted[prev as usize], sorted[next as usize]);
    let diff = (b - a) as f64;
    if t >= 0.5 {
        b as f64 - diff * (1.0 - t)
    } else {
        a as f64 + diff * t
    }
}

/// Fooocus's `norm255(x, low, high)` then `.clip(0, 255).astype(uint8)`.
pub fn norm255(values: &[f32], low: f64, high: f64) -> Vec<u8> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let (v_min, v_max) = (percentile(&sorted, low), percentile(&sorted, high));
    let (min32, range32) = (v_min as f32, (v_max - v_min) as f32);
    values.iter().map(|&x| (((x - min32) / range32) * 255.0).clamp(0.0, 255.0) as u8).collect()
}

/// `canny_pyramid(image, low, high)`: Canny at 0.2, 0.3, …, 1.0 of the size (INTER_AREA), each
/// level's edges blended into the linearly upscaled sum (¾ old, ¼ new), channels summed,
/// normalised between the 1st and 99th percentiles. One byte a pixel.
pub fn canny_pyramid(image: &Pixels, low: i32, high: i32) -> Option<Vec<u8>> {
    let (w, h) = (image.width as f64, image.height as f64);
    let mut acc: Option<FloatImage> = None;
    for k in [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0] {
        let (hs, ws) = ((h * k) as u32, (w * k) as u32);
        let small = resize_area(image, ws, hs)?;
        let edge = canny_color(&small, low, high);
        acc = Some(match acc {
            None => edge,
            Some(prev) => {
                let up = resize_linear_f32(&prev, edge.width, edge.height);
                let data = up.data.iter().zip(&edge.data).map(|(a, e)| a * 0.75 + e * 0.25).collect();
                FloatImage { data, ..edge }
            }
        });
    }
    let acc = acc?;
    let cn = acc.channels as usize;
    let summed: Vec<f32> = acc.data.chunks_exact(cn).map(|px| px.iter().fold(0.0f32, |s, v| s + v)).collect();
    Some(norm255(&summed, 1.0, 99.0))
}
