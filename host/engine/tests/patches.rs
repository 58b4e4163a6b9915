//! Fooocus's sampling patches, each checked on the tiny model against the formula of
//! `modules/patch.py` composed here from plain (unpatched) UNet evaluations — not by comparing
//! the patched denoiser with itself.
mod common;

use candle_core::{Device, Tensor};
use focal_engine::patches::{self, FooocusPatches};
use focal_engine::pipeline::CfgDenoiser;
use focal_engine::sampler::Denoiser;
use focal_engine::schedule::ModelSampling;
use focal_engine::sdxl::{Conditioning, SizeIds};
use focal_engine::{LoadOptions, SdxlModel};

struct Setup {
    model: SdxlModel,
    cond: Conditioning,
    uncond: Conditioning,
    x: Tensor,
}

fn setup() -> Setup {
    let model = SdxlModel::load(&common::checkpoint(common::MODEL_A), &LoadOptions::default()).unwrap();
    let cond = model.encode_prompt("a red fox in the snow", 2).unwrap();
    let uncond = model.encode_prompt("blurry", 2).unwrap();
    let x = (focal_engine::pipeline::initial_noise(3, (1, 4, 8, 8)).unwrap() * 5.0).unwrap();
    Setup { model, cond, uncond, x }
}

const SIZE: u32 = 64;

/// Denoised prediction of one prompt with explicit ADM size ids, straight from the UNet.
fn plain_x0(s: &Setup, c: &Conditioning, size: SizeIds, sigma: f32) -> Tensor {
    let sampling = ModelSampling::sdxl();
    let t = sampling.timestep(sigma) as f32;
    let x_in = (&s.x / ((sigma as f64).powi(2) + 1.0).sqrt()).unwrap();
    let y = s.model.adm(&c.pooled, size).unwrap();
    let eps = s.model.unet.forward(&x_in, &[t], &c.context, &y).unwrap();
    (&s.x - (eps * sigma as f64).unwrap()).unwrap()
}

fn patched(s: &Setup, cfg: f32, p: FooocusPatches, sigma: f32) -> Tensor {
    let sampling = ModelSampling::sdxl();
    let mut d = CfgDenoiser::with_patches(&s.model, &sampling, &s.cond, &s.uncond, SizeIds::plain(SIZE, SIZE), cfg, Some(p)).unwrap();
    d.denoise(&s.x, sigma).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    common::to_vec(a).iter().zip(common::to_vec(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Equal up to float32 rounding (batched vs single UNet calls), relative to the magnitude.
fn close(a: &Tensor, b: &Tensor) -> bool {
    let scale = common::to_vec(b).iter().fold(0f32, |m, v| m.max(v.abs()));
    max_diff(a, b) <= 2e-5 * (1.0 + scale)
}

fn cfg_mix(du: &Tensor, dc: &Tensor, cfg: f64) -> Tensor {
    (du + ((dc - du).unwrap() * cfg).unwrap()).unwrap()
}

const OFF: FooocusPatches = FooocusPatches { sharpness: 0.0, adaptive_cfg: 30.0, adm_positive: 1.0, adm_negative: 1.0, adm_end: 0.0 };

#[test]
fn each_patch_follows_its_formula() {
    let s = setup();
    let plain = SizeIds::plain(SIZE, SIZE);
    for sigma in [14.6146_f32, 3.0, 0.5] {
        let t = ModelSampling::sdxl().timestep(sigma) as f32;
        let p = patches::progress(t);
        let (dc, du) = (plain_x0(&s, &s.cond, plain, sigma), plain_x0(&s, &s.uncond, plain, sigma));

        // All off: plain CFG on denoised values.
        assert!(close(&patched(&s, 7.0, OFF, sigma), &cfg_mix(&du, &dc, 7.0)));

        // Adaptive CFG: real CFG 9 × progress + mimicked CFG 4 × (1 − progress); not above CFG.
        let adaptive = FooocusPatches { adaptive_cfg: 4.0, ..OFF };
        let expected = ((cfg_mix(&du, &dc, 9.0) * p).unwrap() + (cfg_mix(&du, &dc, 4.0) * (1.0 - p)).unwrap()).unwrap();
        assert!(close(&patched(&s, 9.0, adaptive, sigma), &expected), "adaptive CFG at σ={sigma}");
        assert!(close(&patched(&s, 4.0, adaptive, sigma), &cfg_mix(&du, &dc, 4.0)), "CFG not above adaptive");

        // ADM: scaled sizes (1.5 positive, 0.8 negative) while t > 999·(1 − end), plain after.
        let adm = FooocusPatches { adm_positive: 1.5, adm_negative: 0.8, adm_end: 0.3, ..OFF };
        let expected = if t > 999.0 * 0.7 {
            let pos = SizeIds { height: 96, width: 96, crop_top: 0, crop_left: 0, target_height: 64, target_width: 64 };
            let neg = SizeIds { height: 51, width: 51, crop_top: 0, crop_left: 0, target_height: 64, target_width: 64 };
            cfg_mix(&plain_x0(&s, &s.uncond, neg, sigma), &plain_x0(&s, &s.cond, pos, sigma), 7.0)
        } else {
            cfg_mix(&du, &dc, 7.0)
        };
        let got = patched(&s, 7.0, adm, sigma);
        assert!(close(&got, &expected), "ADM at σ={sigma} (t={t})");
        if t > 999.0 * 0.7 {
            assert!(max_diff(&got, &cfg_mix(&du, &dc, 7.0)) > 1e-3, "the scaled ADM matters at σ={sigma}");
        }

        // Sharpness 25: positive eps blended with its filtered version by 0.001·25·progress.
        let sharp = FooocusPatches { sharpness: 25.0, ..OFF };
        let alpha = 0.001 * 25.0 * p;
        let eps_pos = (&s.x - &dc).unwrap();
        let eps_neg = (&s.x - &du).unwrap();
        let filtered = patches::anisotropic_filter(&eps_pos, &dc).unwrap();
        let eps_pos = ((filtered * alpha).unwrap() + (eps_pos * (1.0 - alpha)).unwrap()).unwrap();
        let eps = (&eps_neg + ((eps_pos - &eps_neg).unwrap() * 7.0).unwrap()).unwrap();
        let expected = (&s.x - eps).unwrap();
        let got = patched(&s, 7.0, sharp, sigma);
        assert!(close(&got, &expected), "sharpness at σ={sigma}");
        if alpha > 0.0 {
            assert!(max_diff(&got, &cfg_mix(&du, &dc, 7.0)) > 1e-5, "sharpness changes the result at σ={sigma}");
        }
    }
}

/// Reflect-padded 13×13 Gaussian blur (σ = 3), written independently of the engine's filter.
fn gaussian_blur(v: &[f32], h: usize, w: usize) -> Vec<f32> {
    let k: Vec<f64> = (-6..=6).map(|i: i32| (-(i * i) as f64 / 18.0).exp()).collect();
    let total: f64 = k.iter().sum();
    let refl = |i: i64, n: usize| -> usize {
        let n = n as i64;
        (if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        }) as usize
    };
    let mut out = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0f64;
            for (a, ka) in k.iter().enumerate() {
                for (b, kb) in k.iter().enumerate() {
                    let yy = refl(y as i64 + a as i64 - 6, h);
                    let xx = refl(x as i64 + b as i64 - 6, w);
                    acc += ka * kb * v[yy * w + xx] as f64;
                }
            }
            out[y * w + x] = (acc / (total * total)) as f32;
        }
    }
    out
}

#[test]
fn the_anisotropic_filter_blurs_along_but_not_across_guide_edges() {
    let (h, w) = (10, 16);
    let values: Vec<f32> = (0..h * w).map(|i| ((i * 37) % 11) as f32).collect();
    let x = Tensor::from_vec(values.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
    // A guide with one pixel differing by a hair: range weights ≈ 1, a plain Gaussian blur.
    let mut flat = vec![0f32; h * w];
    flat[0] = 1e-6;
    let guide = Tensor::from_vec(flat, (1, 1, h, w), &Device::Cpu).unwrap();
    let got = common::to_vec(&patches::anisotropic_filter(&x, &guide).unwrap());
    let expected = gaussian_blur(&values, h, w);
    assert!(got.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-3), "flat guide = Gaussian blur");
    // A pixel that stands out in every guide channel is neither smeared into its neighbours
    // nor averaged away (the range kernel gives ≈0 weight across it); a Gaussian would do both.
    let c = 4;
    let spot = 5 * w + 8;
    let mut xv = vec![0f32; c * h * w];
    let mut gv = vec![0f32; c * h * w];
    for ch in 0..c {
        xv[ch * h * w + spot] = 1000.0;
        gv[ch * h * w + spot] = 1.0;
    }
    let x = Tensor::from_vec(xv.clone(), (1, c, h, w), &Device::Cpu).unwrap();
    let guide = Tensor::from_vec(gv, (1, c, h, w), &Device::Cpu).unwrap();
    let out = common::to_vec(&patches::anisotropic_filter(&x, &guide).unwrap());
    assert!((out[spot] - 1000.0).abs() < 1e-2, "the spot keeps its value: {}", out[spot]);
    assert!(out[spot + 1].abs() < 1e-2 && out[spot - w].abs() < 1e-2, "neighbours untouched");
    let blurred = gaussian_blur(&xv[..h * w], h, w);
    assert!(blurred[spot + 1] > 1.0 && blurred[spot] < 100.0, "a plain blur would smear it");
}

/// Fooocus's `lcm` scheduler runs on the distilled table with LCM boundary conditions:
/// D = c_out·(x − σ·ε) + c_skip·x, c_skip = σd²/((10t)² + σd²), c_out = 10t/√((10t)² + σd²).
#[test]
fn lcm_prediction_applies_the_boundary_conditions_at_distilled_timesteps() {
    let s = setup();
    let ms = ModelSampling::for_scheduler(focal_engine::schedule::Scheduler::Lcm);
    for sigma in [14.6146_f32, 1.0, 0.1] {
        let t = ms.timestep(sigma);
        assert_eq!(t % 20, 19, "distilled timesteps are 20·i + 19");
        let x_in = (&s.x / ((sigma as f64).powi(2) + 1.0).sqrt()).unwrap();
        let y = s.model.adm(&s.cond.pooled, SizeIds::plain(SIZE, SIZE)).unwrap();
        let eps = s.model.unet.forward(&x_in, &[t as f32], &s.cond.context, &y).unwrap();
        let x0 = (&s.x - (eps * sigma as f64).unwrap()).unwrap();
        let ts = 10.0 * t as f64;
        let (c_skip, c_out) = (0.25 / (ts * ts + 0.25), ts / (ts * ts + 0.25).sqrt());
        let expected = ((x0 * c_out).unwrap() + (&s.x * c_skip).unwrap()).unwrap();
        let mut d = CfgDenoiser::new(&s.model, &ms, &s.cond, &s.uncond, SizeIds::plain(SIZE, SIZE), 1.0).unwrap();
        assert!(close(&d.denoise(&s.x, sigma).unwrap(), &expected), "LCM at σ={sigma}");
    }
}

/// `edm_playground_v2.5`: ComfyUI's EDM preconditioning (σ_data ½, input `x/√(σ²+¼)`,
/// continuous timestep `¼·ln σ`, `D = x·¼/(σ²+¼) + out·σ·½/√(σ²+¼)`), composed from a plain UNet call.
#[test]
fn edm_playground_preconditioning_follows_the_edm_formula() {
    let s = setup();
    let ms = ModelSampling::for_scheduler(focal_engine::schedule::Scheduler::EdmPlaygroundV25);
    let size = SizeIds::plain(SIZE, SIZE);
    for sigma in [80.0f32, 3.0, 0.05] {
        let mut d = CfgDenoiser::new(&s.model, &ms, &s.cond, &s.uncond, size, 1.0).unwrap();
        let got = d.denoise(&s.x, sigma).unwrap();
        let sg = sigma as f64;
        let x_in = (&s.x / (sg * sg + 0.25).sqrt()).unwrap();
        let y = s.model.adm(&s.cond.pooled, size).unwrap();
        let out = s.model.unet.forward(&x_in, &[0.25 * sigma.ln()], &s.cond.context, &y).unwrap();
        let want = ((&s.x * (0.25 / (sg * sg + 0.25))).unwrap() + (out * (sg * 0.5 / (sg * sg + 0.25).sqrt())).unwrap()).unwrap();
        assert!(close(&got, &want), "σ = {sigma}: max |Δ| {}", max_diff(&got, &want));
    }
    // The EDM schedule Fooocus runs: karras between 0.002 and 120.
    let sig = focal_engine::schedule::Scheduler::EdmPlaygroundV25.sigmas(&ms, 4);
    assert!((sig[0] - 120.0).abs() < 1e-3 && (sig[3] - 0.002).abs() < 1e-6 && sig[4] == 0.0, "{sig:?}");
}
