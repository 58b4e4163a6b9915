//! Every sampler × scheduler against the independent PyTorch reference in
//! `tests/fixtures/samplers` (ComfyUI scheduler formulas, k-diffusion sampler formulas, an
//! analytic denoiser; stochastic samplers with their noise switched off), then the noise of the
//! stochastic samplers: determinism per seed and the moments of what they inject.
mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use focal_engine::sampler::{sample, Denoiser, NoiseSource, Sampler};
use focal_engine::schedule::{sampling_sigmas, ModelSampling, Scheduler};

/// The same analytic "model" as the reference script: D(x, σ) = 0.8·x/(1+σ²) + 0.1·sin x.
struct Analytic;

impl Denoiser for Analytic {
    fn denoise(&mut self, x: &Tensor, sigma: f32) -> focal_engine::Result<Tensor> {
        let s = sigma as f64;
        Ok(((x * (0.8 / (1.0 + s * s)))? + (x.sin()? * 0.1)?)?)
    }
}

fn refs() -> HashMap<String, Tensor> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/samplers/refs.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn run(sampler: Sampler, ms: &ModelSampling, x: Tensor, sigmas: &[f32], noise: &mut NoiseSource) -> Tensor {
    sample(sampler, &mut Analytic, x, sigmas, ms, noise, &mut |_, _, _, _| Ok(())).unwrap()
}

#[test]
fn every_scheduler_matches_the_reference_sigmas() {
    let refs = refs();
    for &scheduler in Scheduler::ALL {
        let ms = ModelSampling::for_scheduler(scheduler);
        for steps in [9, 10] {
            let want = common::to_vec(&refs[&format!("sigmas/{scheduler}/{steps}")]);
            let got = scheduler.sigmas(&ms, steps);
            assert_eq!(got.len(), want.len(), "{scheduler} {steps}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{scheduler} {steps}: {got:?} vs {want:?}");
            }
        }
    }
}

#[test]
fn every_sampler_with_every_scheduler_matches_the_reference() {
    let refs = refs();
    let noise = &refs["noise"];
    let mut checked = 0;
    for &sampler in Sampler::ALL {
        let base = sampler.name().trim_end_matches("_gpu");
        for &scheduler in Scheduler::ALL {
            let ms = ModelSampling::for_scheduler(scheduler);
            let sigmas = sampling_sigmas(&ms, scheduler, 9, 1.0, sampler.discards_penultimate_sigma());
            let x = (noise * sigmas[0] as f64).unwrap();
            if sampler == Sampler::Tcd && scheduler == Scheduler::EdmPlaygroundV25 {
                let err = sample(sampler, &mut Analytic, x, &sigmas, &ms, &mut NoiseSource::silent(), &mut |_, _, _, _| Ok(()));
                assert!(err.unwrap_err().to_string().contains("tcd"), "tcd refuses the EDM schedule");
                checked += 1;
                continue;
            }
            let got = run(sampler, &ms, x, &sigmas, &mut NoiseSource::silent());
            let want = &refs[&format!("x/{base}/{scheduler}")];
            let err = common::rel_l2(&common::to_vec(&got), &common::to_vec(want));
            assert!(err < 1e-5, "{sampler} × {scheduler}: relative L2 error {err}");
            checked += 1;
        }
    }
    assert_eq!(checked, Sampler::ALL.len() * Scheduler::ALL.len());
}

/// From 20 steps on, Restart rebuilds the schedule and re-runs an interval (noise off here).
#[test]
fn restart_with_its_restart_plan_matches_the_reference() {
    let refs = refs();
    for &scheduler in Scheduler::ALL {
        let ms = ModelSampling::for_scheduler(scheduler);
        let sigmas = sampling_sigmas(&ms, scheduler, 24, 1.0, false);
        let x = (&refs["noise"] * sigmas[0] as f64).unwrap();
        let mut steps = 0;
        let got = sample(Sampler::Restart, &mut Analytic, x, &sigmas, &ms, &mut NoiseSource::silent(), &mut |_, n, _, _| {
            steps = n;
            Ok(())
        })
        .unwrap();
        assert_eq!(steps, sigmas.len() - 1, "restart keeps the number of steps ({scheduler})");
        let err = common::rel_l2(&common::to_vec(&got), &common::to_vec(&refs[&format!("x/restart24/{scheduler}")]));
        assert!(err < 1e-5, "restart × {scheduler}: relative L2 error {err}");
    }
}

/// Restart's re-noising uses the seeded noise: same seed, same result; another seed differs.
#[test]
fn restart_renoising_is_seeded() {
    let ms = ModelSampling::sdxl();
    let sigmas = Scheduler::Karras.sigmas(&ms, 24);
    let x = (Tensor::from_vec(focal_engine::rng::TorchRng::new(3).randn(4 * 16 * 16), (1, 4, 16, 16), &Device::Cpu).unwrap()
        * sigmas[0] as f64)
        .unwrap();
    let a = common::to_vec(&run(Sampler::Restart, &ms, x.clone(), &sigmas, &mut NoiseSource::new(7)));
    let b = common::to_vec(&run(Sampler::Restart, &ms, x.clone(), &sigmas, &mut NoiseSource::new(7)));
    let c = common::to_vec(&run(Sampler::Restart, &ms, x.clone(), &sigmas, &mut NoiseSource::new(8)));
    let silent = common::to_vec(&run(Sampler::Restart, &ms, x, &sigmas, &mut NoiseSource::silent()));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a, silent);
}

/// The noise a stochastic sampler injects in its first step, divided by the scale its formula
/// gives it, must look like standard normal noise; the same seed must repeat exactly.
#[test]
fn stochastic_samplers_inject_unit_noise_at_their_formula_scale_and_are_deterministic() {
    let ms = ModelSampling::sdxl();
    let sigmas = Scheduler::Karras.sigmas(&ms, 10);
    let (sigma, next) = (sigmas[0] as f64, sigmas[1] as f64);
    let x =
        (Tensor::from_vec(focal_engine::rng::TorchRng::new(1).randn(4 * 64 * 64), (1, 4, 64, 64), &Device::Cpu).unwrap() * sigma).unwrap();
    let up = next.min((next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt());
    let h = (sigma / next).ln();
    let sde = next * (-(-2.0 * h).exp_m1()).sqrt();
    let ddpm = {
        let (ac, acp) = (1.0 / (sigma * sigma + 1.0), 1.0 / (next * next + 1.0));
        let alpha = ac / acp;
        ((1.0 - alpha) * (1.0 - acp) / (1.0 - ac)).sqrt() * (1.0 + next * next).sqrt()
    };
    // TCD on a single step re-noises from timestep 0 (its last timestep is forced to 0).
    let tcd = {
        let a = ms.alphas_cumprod[0] as f64;
        (next * next + 1.0 - 1.0 / a).sqrt()
    };
    let one_step = [sigmas[0], sigmas[1]];
    for (sampler, scale) in [
        (Sampler::EulerAncestral, up),
        (Sampler::Dpm2Ancestral, up),
        (Sampler::DpmPP2SAncestral, up),
        (Sampler::DpmPP2MSde, sde),
        (Sampler::DpmPP3MSde, sde),
        (Sampler::Ddpm, ddpm),
        (Sampler::Lcm, next),
        (Sampler::Tcd, tcd),
    ] {
        let silent = run(sampler, &ms, x.clone(), &one_step, &mut NoiseSource::silent());
        let noisy = run(sampler, &ms, x.clone(), &one_step, &mut NoiseSource::new(7));
        let injected = common::to_vec(&((noisy.clone() - silent).unwrap() / scale).unwrap());
        let n = injected.len() as f64;
        let mean = injected.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = injected.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "{sampler}: injected noise mean {mean}, variance {var}");
        let again = run(sampler, &ms, x.clone(), &one_step, &mut NoiseSource::new(7));
        assert_eq!(common::to_vec(&again), common::to_vec(&noisy), "{sampler} is deterministic for a seed");
        let other = run(sampler, &ms, x.clone(), &one_step, &mut NoiseSource::new(8));
        assert_ne!(common::to_vec(&other), common::to_vec(&noisy), "{sampler} depends on the seed");
    }
}
