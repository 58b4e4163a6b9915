//! What Fooocus adds around the sampler (`modules/patch.py`): sharpness (an anisotropic filter
//! on the positive prediction, weighted by progress), adaptive CFG ("CFG mimicking from TSNR")
//! and positive/negative ADM size scaling that switches off after `adm_end` of the timesteps.
//! `progress = 1 − t/999` from each model call's integer timestep.

use candle_core::{Device, Tensor};

use crate::sdxl::SizeIds;
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FooocusPatches {
    pub sharpness: f32,
    pub adaptive_cfg: f32,
    pub adm_positive: f32,
    pub adm_negative: f32,
    pub adm_end: f32,
}

impl Default for FooocusPatches {
    /// Fooocus's defaults (sharpness 2, adaptive CFG 7, ADM 1.5 / 0.8 until 30 %).
    fn default() -> Self {
        Self { sharpness: 2.0, adaptive_cfg: 7.0, adm_positive: 1.5, adm_negative: 0.8, adm_end: 0.3 }
    }
}

/// Python's `round` (half to even) of `v / 64`, times 64.
fn round_to_64(v: u32) -> u32 {
    let q = v as f64 / 64.0;
    let r = q.round();
    let r = if (q - q.trunc() - 0.5).abs() < 1e-12 && r as u64 % 2 == 1 { r - 1.0 } else { r };
    (r as u32) * 64
}

/// Fooocus's ADM size ids: `(emphasized, consistent)` for an image of `width`×`height` and a
/// scale (1.5 positive, 0.8 negative): emphasized = `(int(h·s), int(w·s), 0, 0, H64, W64)`,
/// consistent = `(H64, W64, 0, 0, H64, W64)` with sizes rounded to multiples of 64.
pub fn adm_sizes(width: u32, height: u32, scale: f32) -> (SizeIds, SizeIds) {
    let (h64, w64) = (round_to_64(height), round_to_64(width));
    // The f32's shortest decimal (e.g. 0.8), as Python holds the setting.
    let scale: f64 = scale.to_string().parse().unwrap_or(scale as f64);
    let scaled = |v: u32| (v as f64 * scale) as u32;
    let emphasized =
        SizeIds { height: scaled(height), width: scaled(width), crop_top: 0, crop_left: 0, target_height: h64, target_width: w64 };
    (emphasized, SizeIds::plain(w64, h64))
}

/// The emphasized ADM applies while `t > 999·(1 − adm_end)` (strictly).
pub fn adm_emphasized(t: f32, adm_end: f32) -> bool {
    t as f64 > 999.0 * (1.0 - adm_end as f64)
}

pub fn progress(t: f32) -> f64 {
    1.0 - t as f64 / 999.0
}

/// CFG on eps with Fooocus's mimicking: above `adaptive`, blend real and mimicked CFG by progress.
pub fn compute_cfg(eps_neg: &Tensor, eps_pos: &Tensor, cfg: f64, adaptive: f64, progress: f64) -> Result<Tensor> {
    let diff = (eps_pos - eps_neg)?;
    let real = (eps_neg + (&diff * cfg)?)?;
    if cfg > adaptive {
        let mimic = (eps_neg + (&diff * adaptive)?)?;
        Ok(((real * progress)? + (mimic * (1.0 - progress))?)?)
    } else {
        Ok(real)
    }
}

/// Fooocus's `adaptive_anisotropic_filter(x, guide)` on `[1, C, H, W]`: the guide is normalised
/// per sample, then `x` gets a 13×13 joint bilateral blur (reflect padding, spatial Gaussian σ=3,
/// range weight `exp(−0.5·d²/9)` with `d` the L1 guide distance summed over channels).
pub fn anisotropic_filter(x: &Tensor, guide: &Tensor) -> Result<Tensor> {
    const R: isize = 6;
    let (_, c, h, w) = x.dims4()?;
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let gs: Vec<f32> = guide.flatten_all()?.to_vec1()?;
    // Normalise the guide: (g − mean) / (std + 1e-5), torch's unbiased std over C·H·W.
    let n = gs.len() as f64;
    let mean = gs.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = gs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let g: Vec<f32> = gs.iter().map(|&v| ((v as f64 - mean) / (var.sqrt() + 1e-5)) as f32).collect();
    // Normalised 1-D Gaussian, σ = 3: the spatial kernel is its outer product.
    let g1: Vec<f64> = (-R..=R).map(|i| (-0.5 * (i * i) as f64 / 9.0).exp()).collect();
    let sum: f64 = g1.iter().sum();
    let g1: Vec<f64> = g1.iter().map(|v| v / sum).collect();
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let mut i = i;
        if i < 0 {
            i = -i;
        }
        if i >= n {
            i = 2 * (n - 1) - i;
        }
        i as usize
    };
    let plane = h * w;
    let mut out = vec![0f32; xs.len()];
    for y in 0..h {
        for xx in 0..w {
            let centre = y * w + xx;
            let mut acc = vec![0f64; c];
            let mut norm = 0f64;
            for dy in -R..=R {
                let yy = reflect(y as isize + dy, h);
                for dx in -R..=R {
                    let xn = reflect(xx as isize + dx, w);
                    let at = yy * w + xn;
                    let d: f64 = (0..c).map(|ch| (g[ch * plane + at] - g[ch * plane + centre]).abs() as f64).sum();
                    let weight = g1[(dy + R) as usize] * g1[(dx + R) as usize] * (-0.5 * d * d / 9.0).exp();
                    norm += weight;
                    for (ch, a) in acc.iter_mut().enumerate() {
                        *a += weight * xs[ch * plane + at] as f64;
                    }
                }
            }
            for (ch, a) in acc.iter().enumerate() {
                out[ch * plane + centre] = (a / norm) as f32;
            }
        }
    }
    Ok(Tensor::from_vec(out, x.shape(), &Device::Cpu)?.to_device(x.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_half_to_even_and_truncate_the_scaled_ones() {
        // The cases the reference notes confirmed on Fooocus: 160 → 128, 96 → 128, 224 → 256.
        assert_eq!((round_to_64(160), round_to_64(96), round_to_64(224), round_to_64(1152)), (128, 128, 256, 1152));
        let (e, c) = adm_sizes(160, 96, 1.5);
        assert_eq!((e.height, e.width, e.target_height, e.target_width), (144, 240, 128, 128));
        assert_eq!((c.height, c.width), (128, 128));
        let (e, _) = adm_sizes(1152, 896, 0.8);
        assert_eq!((e.height, e.width), (716, 921)); // int(896·0.8) = 716, int(1152·0.8) = 921
        assert!(adm_emphasized(700.0, 0.3) && !adm_emphasized(699.3, 0.3) && !adm_emphasized(0.0, 1.0) && !adm_emphasized(999.0, 0.0));
    }
}
