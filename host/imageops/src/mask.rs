//! Fooocus's inpaint masks (`modules/util.py`, `modules/inpaint_worker.py`, Fooocus-API's
//! `apply_image_input`): a one-channel `u8` mask, 255 where the image is repainted.

use crate::{box_blur, resize_lanczos, Pixels};

/// The mask Fooocus-API reads from an uploaded mask image (already `HWC3`): its red channel, or
/// white where the mean of the mask resized to `width`×`height` (LANCZOS) is above 127.
pub fn mask_from_upload(mask_rgb: &Pixels, width: u32, height: u32) -> Vec<u8> {
    // Fooocus takes channel 0 as it is; a mask of another size is brought to the image's first.
    let sized =
        if (mask_rgb.width, mask_rgb.height) == (width, height) { mask_rgb.clone() } else { resize_lanczos(mask_rgb, width, height) };
    sized
        .data
        .chunks(3)
        .map(|p| {
            let mean = (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0;
            if mean > 127.0 {
                255
            } else {
                p[0]
            }
        })
        .collect()
}

/// One 3×3 max (or min) filter pass, pixels outside the image left out (OpenCV's default
/// border for `dilate`/`erode`).
fn filter3<T: Copy + Ord>(data: &[T], width: usize, height: usize, pick: fn(T, T) -> T) -> Vec<T> {
    let mut rows = data.to_vec();
    for y in 0..height {
        let row = &data[y * width..(y + 1) * width];
        for x in 0..width {
            let mut v = row[x];
            if x > 0 {
                v = pick(v, row[x - 1]);
            }
            if x + 1 < width {
                v = pick(v, row[x + 1]);
            }
            rows[y * width + x] = v;
        }
    }
    let mut out = rows.clone();
    for y in 0..height {
        for x in 0..width {
            let mut v = rows[y * width + x];
            if y > 0 {
                v = pick(v, rows[(y - 1) * width + x]);
            }
            if y + 1 < height {
                v = pick(v, rows[(y + 1) * width + x]);
            }
            out[y * width + x] = v;
        }
    }
    out
}

/// `erode_or_dilate(x, k)`: `k` passes of a 3×3 dilation (`k > 0`) or erosion (`k < 0`).
pub fn erode_or_dilate(mask: &[u8], width: u32, height: u32, k: i32) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let pick: fn(u8, u8) -> u8 = if k > 0 { std::cmp::max } else { std::cmp::min };
    let mut m = mask.to_vec();
    for _ in 0..k.unsigned_abs() {
        m = filter3(&m, w, h, pick);
    }
    m
}

/// `morphological_open` (a soft dilation, despite the name): 256 inside (`> 127`), then 32
/// times `max(dilate3×3(x) − 8, x)`, clipped to 0–255 — a 32-pixel linear falloff outside.
pub fn soft_mask(mask: &[u8], width: u32, height: u32) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut x: Vec<i16> = mask.iter().map(|&v| if v > 127 { 256 } else { 0 }).collect();
    for _ in 0..32 {
        let dilated = filter3(&x, w, h, std::cmp::max);
        for (v, d) in x.iter_mut().zip(dilated) {
            *v = (*v).max(d - 8);
        }
    }
    x.iter().map(|&v| v.clamp(0, 255) as u8).collect()
}

/// `up255(x, t)`: 255 where above `t`, else 0.
pub fn threshold(mask: &[u8], t: u8) -> Vec<u8> {
    mask.iter().map(|&v| if v > t { 255 } else { 0 }).collect()
}

/// `fooocus_fill`: the masked area (`mask >= 127`) filled by box blurs of shrinking radius,
/// the known pixels put back after each.
pub fn fooocus_fill(image: &Pixels, mask: &[u8]) -> Pixels {
    let ch = image.channels as usize;
    let known: Vec<bool> = mask.iter().map(|&m| m < 127).collect();
    let mut current = image.clone();
    for (radius, repeats) in [(512, 2), (256, 2), (128, 4), (64, 4), (33, 8), (15, 8), (5, 16), (3, 16)] {
        for _ in 0..repeats {
            current = box_blur(&current, radius);
            for (i, _) in known.iter().enumerate().filter(|(_, &k)| k) {
                current.data[i * ch..(i + 1) * ch].copy_from_slice(&image.data[i * ch..(i + 1) * ch]);
            }
        }
    }
    current
}

/// `color_correction`: `gen·w + orig·(1 − w)` with `w = soft / 255`, in float32, truncated.
pub fn blend(generated: &Pixels, original: &Pixels, soft: &[u8]) -> Pixels {
    let ch = original.channels as usize;
    let data = generated
        .data
        .iter()
        .zip(&original.data)
        .enumerate()
        .map(|(i, (&fg, &bg))| {
            let w = soft[i / ch] as f32 / 255.0;
            (fg as f32 * w + bg as f32 * (1.0 - w)).clamp(0.0, 255.0) as u8
        })
        .collect();
    Pixels { data, ..original.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_mask_falls_off_by_8_per_pixel() {
        let mut m = vec![0u8; 40];
        m[0] = 255;
        let soft = soft_mask(&m, 40, 1);
        assert_eq!(&soft[..4], &[255, 248, 240, 232]);
        assert_eq!(soft[32], 0);
    }

    #[test]
    fn dilation_grows_and_erosion_shrinks() {
        let mut m = vec![0u8; 25];
        m[12] = 255;
        let grown = erode_or_dilate(&m, 5, 5, 1);
        assert_eq!(grown.iter().filter(|&&v| v == 255).count(), 9);
        assert_eq!(erode_or_dilate(&grown, 5, 5, -1), m);
    }
}
