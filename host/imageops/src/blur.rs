//! PIL's `ImageFilter.BoxBlur(radius)` (Pillow `BoxBlur.c`, one pass): each row, then each
//! column, averaged over `2r + 1` pixels with the edge pixels repeated outwards, in PIL's 24-bit
//! fixed point with its unsigned 32-bit wrap-around.

use crate::Pixels;

/// Box-blur `image` with integer `radius` (0 copies it), exactly as PIL does.
pub fn box_blur(image: &Pixels, radius: u32) -> Pixels {
    if radius == 0 || image.width == 0 || image.height == 0 {
        return image.clone();
    }
    let (w, h, ch) = (image.width as usize, image.height as usize, image.channels as usize);
    let weights = Weights::new(radius);
    // Rows.
    let mut rows = vec![0u8; image.data.len()];
    for y in 0..h {
        let line = y * w * ch..(y + 1) * w * ch;
        blur_line(&image.data[line.clone()], &mut rows[line], ch, weights);
    }
    // Columns, through a transposed copy as PIL does.
    let mut column = vec![0u8; h * ch];
    let mut blurred = vec![0u8; h * ch];
    let mut out = rows.clone();
    for x in 0..w {
        for y in 0..h {
            let at = (y * w + x) * ch;
            column[y * ch..(y + 1) * ch].copy_from_slice(&rows[at..at + ch]);
        }
        blur_line(&column, &mut blurred, ch, weights);
        for y in 0..h {
            let at = (y * w + x) * ch;
            out[at..at + ch].copy_from_slice(&blurred[y * ch..(y + 1) * ch]);
        }
    }
    Pixels { data: out, ..image.clone() }
}

#[derive(Clone, Copy)]
struct Weights {
    radius: usize,
    /// Weight of each whole pixel in the window, `2^24 / (2r + 1)` computed in float32.
    ww: u32,
    /// Weight of the two pixels just outside it (the rounding remainder).
    fw: u32,
}

impl Weights {
    fn new(radius: u32) -> Self {
        let ww = ((1u32 << 24) as f32 / (radius as f32 * 2.0 + 1.0)) as u32;
        let fw = (1u32 << 24).wrapping_sub((radius * 2 + 1).wrapping_mul(ww)) / 2;
        Self { radius: radius as usize, ww, fw }
    }
}

/// `ImagingLineBoxBlur8/32` on one line of `ch`-channel pixels.
fn blur_line(input: &[u8], out: &mut [u8], ch: usize, wt: Weights) {
    let n = input.len() / ch;
    let last = n - 1;
    let r = wt.radius;
    let edge_a = (r + 1).min(n);
    let edge_b = n.saturating_sub(r + 1);
    for c in 0..ch {
        let px = |i: usize| input[i * ch + c] as u32;
        let mut acc = px(0) * (r as u32 + 1);
        for x in 0..edge_a.saturating_sub(1) {
            acc = acc.wrapping_add(px(x));
        }
        acc = acc.wrapping_add(px(last).wrapping_mul((r + 1 - edge_a) as u32));
        let mut step = |x: usize, sub: usize, add: usize, left: usize, right: usize, acc: &mut u32| {
            *acc = acc.wrapping_add((px(add) as i32 - px(sub) as i32) as u32);
            let bulk = acc.wrapping_mul(wt.ww).wrapping_add((px(left) + px(right)).wrapping_mul(wt.fw));
            out[x * ch + c] = (bulk.wrapping_add(1 << 23) >> 24) as u8;
        };
        if edge_a <= edge_b {
            for x in 0..edge_a {
                step(x, 0, x + r, 0, x + r + 1, &mut acc);
            }
            for x in edge_a..edge_b {
                step(x, x - r - 1, x + r, x - r - 1, x + r + 1, &mut acc);
            }
            for x in edge_b..=last {
                step(x, x - r - 1, last, x - r - 1, last, &mut acc);
            }
        } else {
            for x in 0..edge_b {
                step(x, 0, x + r, 0, x + r + 1, &mut acc);
            }
            for x in edge_b..edge_a {
                step(x, 0, last, 0, last, &mut acc);
            }
            for x in edge_a..=last {
                step(x, x - r - 1, last, x - r - 1, last, &mut acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_image_stays_flat_and_radius_zero_copies() {
        let flat = Pixels::new(5, 3, 3, vec![77; 45]).unwrap();
        assert_eq!(box_blur(&flat, 2), flat);
        assert_eq!(box_blur(&flat, 100), flat);
        let ramp = Pixels::new(4, 1, 1, vec![0, 10, 20, 30]).unwrap();
        assert_eq!(box_blur(&ramp, 0), ramp);
    }
}
