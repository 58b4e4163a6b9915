//! The image as BLIP's captioner takes it (`extras/interrogate.py`): `ToTensor` (bytes / 255),
//! `Resize((384, 384), BICUBIC)` on the tensor, `Normalize` with CLIP's mean and deviation.
//!
//! The resize is torch's tensor bicubic as torchvision 0.16 (Fooocus's pin) calls it: no
//! antialiasing (0.17 changed that default), `align_corners=False`, Keys' cubic with A = −0.75, edge
//! taps clamped, rows of each tap weighted in x then summed in y, all in f32 — values may leave
//! [0, 1] and are not clamped.

use candle_core::{Device, Tensor};
use focal_imageops::Pixels;

#[allow(clippy::excessive_precision)]
const MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
const STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];
const A: f32 = -0.75;

/// `[1, 3, side, side]`, normalised.
pub fn image_tensor(image: &Pixels, side: usize, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = (image.width as usize, image.height as usize);
    let xs = taps(w, side);
    let ys = taps(h, side);
    let mut data = vec![0f32; 3 * side * side];
    for c in 0..3 {
        let plane: Vec<f32> = image.data.chunks_exact(image.channels as usize).map(|px| px[c] as f32 / 255.0).collect();
        let out = &mut data[c * side * side..(c + 1) * side * side];
        for (oy, (yi, yw)) in ys.iter().enumerate() {
            for (ox, (xi, xw)) in xs.iter().enumerate() {
                let mut value = 0f32;
                for (j, (&y, &wy)) in yi.iter().zip(yw).enumerate() {
                    let row = &plane[y * w..];
                    let mut across = row[xi[0]] * xw[0];
                    for i in 1..4 {
                        across += row[xi[i]] * xw[i];
                    }
                    value = if j == 0 { across * wy } else { value + across * wy };
                }
                out[oy * side + ox] = (value - MEAN[c]) / STD[c];
            }
        }
    }
    Tensor::from_vec(data, (1, 3, side, side), device)
}

/// Per output index, the four source indices (clamped) and their weights.
fn taps(input: usize, output: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let floor = real.floor();
            let t = real - floor;
            let first = floor as i64 - 1;
            let index = |k: i64| (first + k).clamp(0, input as i64 - 1) as usize;
            ([index(0), index(1), index(2), index(3)], [far(t + 1.0), near(t), near(1.0 - t), far((1.0 - t) + 1.0)])
        })
        .collect()
}

/// Keys' kernel for |x| ≤ 1 (`cubic_convolution1`).
fn near(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

/// Keys' kernel for 1 < |x| < 2 (`cubic_convolution2`).
fn far(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_edges_clamp() {
        for (input, output) in [(50, 384), (1000, 384), (384, 384)] {
            for (idx, w) in taps(input, output) {
                assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                assert!(idx.iter().all(|&i| i < input));
            }
        }
        // Same size: the source pixel itself (t = 0 gives weights 0, 1, 0, 0).
        let (idx, w) = taps(384, 384)[10];
        assert_eq!((idx[1], w[1]), (10, 1.0));
    }
}
