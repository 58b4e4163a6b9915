//! PIL's `Image.resize(..., LANCZOS)` for 8-bit images (Pillow's `Resample.c`), bit-exact:
//! per-axis kernels of support `3·max(scale, 1)`, coefficients normalised in double precision
//! and rounded to 22-bit fixed point, a horizontal pass over only the rows the vertical pass
//! reads, rounded and clipped to bytes, then the vertical pass.

use crate::pixels::Pixels;

const PRECISION_BITS: u32 = 32 - 8 - 2;
const LANCZOS_SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-LANCZOS_SUPPORT..LANCZOS_SUPPORT).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// One axis: for each output position the first input index, the count, and the fixed-point
/// weights (`ksize` per position).
struct Kernel {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

impl Kernel {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` over the whole input axis.
    fn new(in_size: usize, out_size: usize) -> Kernel {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = LANCZOS_SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                let w = lanczos((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            for (x, &kx) in k.iter().enumerate().take(xmax) {
                let v = if ww != 0.0 { kx / ww } else { kx };
                let scaled = v * (1u32 << PRECISION_BITS) as f64;
                weights[xx * ksize + x] = if v < 0.0 { (scaled - 0.5) as i32 } else { (scaled + 0.5) as i32 };
            }
            bounds.push((xmin, xmax));
        }
        Kernel { ksize, bounds, weights }
    }

    fn apply(&self, out: usize, sample: impl Fn(usize) -> u8) -> u8 {
        let (min, count) = self.bounds[out];
        let k = &self.weights[out * self.ksize..];
        let mut ss: i64 = 1 << (PRECISION_BITS - 1);
        for (i, &w) in k.iter().enumerate().take(count) {
            ss += sample(min + i) as i64 * w as i64;
        }
        (ss >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

/// Resize to `width`×`height` as PIL's LANCZOS does for L and RGB images (PIL premultiplies
/// RGBA first; Fooocus never resizes RGBA). Sizes of 0 give an empty image.
pub fn resize_lanczos(src: &Pixels, width: u32, height: u32) -> Pixels {
    let c = src.channels as usize;
    let (in_w, in_h) = (src.width as usize, src.height as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if out_w == 0 || out_h == 0 || in_w == 0 || in_h == 0 {
        return Pixels { width, height, channels: src.channels, data: vec![0; out_w * out_h * c] };
    }
    if (out_w, out_h) == (in_w, in_h) {
        return src.clone();
    }
    let vertical = (out_h != in_h).then(|| Kernel::new(in_h, out_h));
    // The horizontal pass covers only the input rows the vertical one reads.
    let (first_row, rows) = match &vertical {
        Some(v) => {
            let first = v.bounds[0].0;
            let (last_min, last_count) = v.bounds[out_h - 1];
            (first, last_min + last_count - first)
        }
        None => (0, in_h),
    };
    let mut data = Vec::new();
    let mut row_width = in_w;
    let horizontal = if out_w != in_w {
        let h = Kernel::new(in_w, out_w);
        let mut tmp = vec![0u8; out_w * rows * c];
        for y in 0..rows {
            let row = &src.data[(first_row + y) * in_w * c..][..in_w * c];
            for x in 0..out_w {
                for ch in 0..c {
                    tmp[(y * out_w + x) * c + ch] = h.apply(x, |i| row[i * c + ch]);
                }
            }
        }
        row_width = out_w;
        Some(tmp)
    } else {
        None
    };
    let (plane, plane_first) = match &horizontal {
        Some(tmp) => (tmp.as_slice(), 0),
        None => (src.data.as_slice(), first_row),
    };
    match &vertical {
        Some(v) => {
            data.resize(out_w * out_h * c, 0);
            for y in 0..out_h {
                for x in 0..row_width {
                    for ch in 0..c {
                        let value = v.apply(y, |i| plane[((i - first_row + plane_first) * row_width + x) * c + ch]);
                        data[(y * out_w + x) * c + ch] = value;
                    }
                }
            }
        }
        None => data = plane.to_vec(),
    }
    Pixels { width, height, channels: src.channels, data }
}

/// Fooocus's `resize_image(im, width, height)` (`resize_mode=1`): LANCZOS to cover `width`×`height`
/// with the aspect ratio kept (Python's integer division for the other side), then the centre cut
/// out (PIL's paste at a negative offset).
pub fn resize_fill(src: &Pixels, width: u32, height: u32) -> Pixels {
    let (w, h) = (src.width as u64, src.height as u64);
    if w == 0 || h == 0 || width == 0 || height == 0 {
        return resize_lanczos(src, width, height);
    }
    let wider = width as f64 / height as f64 > w as f64 / h as f64;
    let src_w = if wider { width as u64 } else { w * height as u64 / h };
    let src_h = if !wider { height as u64 } else { h * width as u64 / w };
    let resized = resize_lanczos(src, src_w as u32, src_h as u32);
    let left = src_w / 2 - width as u64 / 2;
    let top = src_h / 2 - height as u64 / 2;
    crate::crop(&resized, crate::CropBox { top: top as u32, bottom: top as u32 + height, left: left as u32, right: left as u32 + width })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_an_upscale_sum_to_one_in_fixed_point() {
        let k = Kernel::new(10, 25);
        for xx in 0..25 {
            let sum: i64 = k.weights[xx * k.ksize..][..k.bounds[xx].1].iter().map(|&w| w as i64).sum();
            assert!((sum - (1 << PRECISION_BITS)).abs() <= 8, "position {xx}: {sum}");
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let src = Pixels::rgb(7, 5, vec![77; 7 * 5 * 3]).unwrap();
        let out = resize_lanczos(&src, 19, 3);
        assert!(out.data.iter().all(|&v| v == 77));
        assert_eq!((out.width, out.height, out.data.len()), (19, 3, 19 * 3 * 3));
    }
}
