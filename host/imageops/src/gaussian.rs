//! `cv2.GaussianBlur(image, (0, 0), sigma)` on 8-bit images as OpenCV 4.10 computes it: the kernel
//! size from sigma (`round(6σ + 1) | 1`), `getGaussianKernelBitExact`'s normalised kernel turned
//! into 8-bit fixed point with error diffusion (`getGaussianKernelFixedPoint_ED`: the taps sum to
//! exactly 256), then rows and columns convolved in exact integers (Q8, then Q16) with
//! `BORDER_REFLECT_101`, and one rounding at the end.

use crate::Pixels;

/// The Q8 taps for `sigma` (odd count, symmetric, summing to 256).
pub fn fixed_point_kernel(sigma: f64) -> Vec<u32> {
    let n = (((sigma * 3.0 * 2.0 + 1.0).round_ties_even() as i64) | 1) as usize;
    let half = n / 2;
    let scale = -0.125 / (sigma * sigma);
    // x runs over 1 − n, 3 − n, …: twice the offset from the centre.
    let values: Vec<f64> = (0..half).map(|i| (((2 * i) as f64 + 1.0 - n as f64).powi(2) * scale).exp()).collect();
    let sum = values.iter().sum::<f64>() * 2.0 + 1.0;
    let mul = 1.0 / sum;
    let mut taps = vec![0u32; n];
    let (mut err, mut total) = (0.0f64, 0u32);
    for (i, v) in values.iter().enumerate() {
        let adjusted = v * mul * 256.0 + err;
        let rounded = adjusted.round_ties_even();
        err = adjusted - rounded;
        taps[i] = rounded as u32;
        taps[n - 1 - i] = rounded as u32;
        total += 2 * rounded as u32;
    }
    taps[half] = 256 - total;
    taps
}

/// `BORDER_REFLECT_101`: …, 2, 1 | 0, 1, 2, … | n−2, n−3, …
fn reflect101(i: i64, n: usize) -> usize {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let i = i.rem_euclid(period);
    (if i < n { i } else { period - i }) as usize
}

/// The blurred image (any channel count).
pub fn gaussian_blur(image: &Pixels, sigma: f64) -> Pixels {
    let taps = fixed_point_kernel(sigma);
    let half = (taps.len() / 2) as i64;
    let (w, h, cn) = (image.width as usize, image.height as usize, image.channels as usize);
    // Row sums fit 16 bits (at most 255 · 256).
    let mut rows = vec![0u16; w * h * cn];
    for y in 0..h {
        let line = &image.data[y * w * cn..(y + 1) * w * cn];
        for x in 0..w {
            for c in 0..cn {
                let sum: u32 =
                    taps.iter().enumerate().map(|(k, &t)| t * line[reflect101(x as i64 + k as i64 - half, w) * cn + c] as u32).sum();
                rows[(y * w + x) * cn + c] = sum as u16;
            }
        }
    }
    let mut out = vec![0u8; w * h * cn];
    for y in 0..h {
        for x in 0..w {
            for c in 0..cn {
                let sum: u32 = taps
                    .iter()
                    .enumerate()
                    .map(|(k, &t)| t * rows[(reflect101(y as i64 + k as i64 - half, h) * w + x) * cn + c] as u32)
                    .sum();
                out[(y * w + x) * cn + c] = ((sum + (1 << 15)) >> 16).min(255) as u8;
            }
        }
    }
    Pixels::new(image.width, image.height, image.channels, out).expect("same shape as the input")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_sum_to_one_in_q8() {
        for sigma in [0.5, 0.8, 1.5, 3.0] {
            let taps = fixed_point_kernel(sigma);
            assert_eq!(taps.iter().sum::<u32>(), 256, "{sigma}");
            assert!(taps.len() % 2 == 1);
        }
        assert_eq!(fixed_point_kernel(0.8).len(), 7);
    }

    #[test]
    fn reflect_101_mirrors_without_the_edge() {
        assert_eq!((reflect101(-1, 5), reflect101(-2, 5), reflect101(5, 5), reflect101(6, 5)), (1, 2, 3, 2));
    }
}
