//! The refiner swap on two tiny checkpoints: the tiny base, and the same architecture with
//! different weights (the base plus a LoRA) as the refiner. A joint swap at step `k` must equal
//! sampling steps 0..=k with the base and the rest with the refiner, and a separate swap steps
//! 0..k with the base and the rest with the refiner, each composed here from two sampler runs.
mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use focal_engine::lora::LoraSpec;
use focal_engine::pipeline::{initial_noise, refiner_switch_step, CfgDenoiser, Refiner, RefinerSwap};
use focal_engine::sampler::{sample, NoiseSource, Sampler};
use focal_engine::schedule::{sampling_sigmas, ModelSampling, Scheduler};
use focal_engine::sdxl::SizeIds;
use focal_engine::{GenerationParams, LoadOptions, SdxlModel};

fn refiner_model(dir: &std::path::Path) -> SdxlModel {
    let path = common::checkpoint(common::MODEL_A);
    let ckpt = focal_engine::checkpoint::Checkpoint::open(&path).unwrap();
    let name = ckpt.names().into_iter().find(|n| n.starts_with("unet.") && n.ends_with("attn2.to_k.weight")).unwrap().to_string();
    let (out, inp) = ckpt.tensor(&name, DType::F32, &Device::Cpu).unwrap().dims2().unwrap();
    let module = format!("lora_unet_{}", name.strip_prefix("unet.").unwrap().strip_suffix(".weight").unwrap().replace('.', "_"));
    let tensors = HashMap::from([
        (format!("{module}.lora_down.weight"), Tensor::ones((2, inp), DType::F32, &Device::Cpu).unwrap()),
        (format!("{module}.lora_up.weight"), (Tensor::ones((out, 2), DType::F32, &Device::Cpu).unwrap() * 0.5).unwrap()),
    ]);
    let lora = dir.join("refiner-delta.safetensors");
    candle_core::safetensors::save(&tensors, &lora).unwrap();
    SdxlModel::load(&path, &LoadOptions { loras: vec![LoraSpec { path: lora, weight: 1.0 }], ..Default::default() }).unwrap()
}

#[test]
fn the_switch_step_rounds_half_to_even() {
    assert_eq!(refiner_switch_step(30, 0.5), 15);
    assert_eq!(refiner_switch_step(9, 0.5), 4); // 4.5 → 4
    assert_eq!(refiner_switch_step(7, 0.5), 4); // 3.5 → 4
    assert_eq!(refiner_switch_step(60, 0.8), 48);
}

#[test]
fn joint_and_separate_swaps_run_the_base_and_the_refiner_on_the_right_sigmas() {
    let dir = tempfile::tempdir().unwrap();
    let base = SdxlModel::load(&common::checkpoint(common::MODEL_A), &LoadOptions::default()).unwrap();
    let refiner = refiner_model(dir.path());
    let mut params = GenerationParams::txt2img("a lighthouse", 64, 64, 6, 11);
    params.sampler = Sampler::Euler;
    params.scheduler = Scheduler::Karras;
    let cond = base.encode_prompt(&params.prompt, 2).unwrap();
    let uncond = base.encode_prompt("", 2).unwrap();
    let k = refiner_switch_step(6, 0.5);
    let run_with = |refiner_at: Option<usize>, swap: RefinerSwap| {
        let r = refiner_at.map(|switch| Refiner { model: &refiner, switch, swap });
        base.generate_with_refiner(&params, &cond, &uncond, r, false, &mut |_| true).unwrap().latent
    };
    let run = |refiner_at: Option<usize>| run_with(refiner_at, RefinerSwap::Joint);
    let joint = run(Some(k));

    // The same run composed by hand: base for steps 0..=k, refiner on the remaining sigmas.
    let ms = ModelSampling::sdxl();
    let sigmas = sampling_sigmas(&ms, Scheduler::Karras, 6, 1.0, false);
    let s0 = sigmas[0] as f64;
    let x = (initial_noise(11, (1, 4, 8, 8)).unwrap() * (1.0 + s0 * s0).sqrt()).unwrap();
    let size = SizeIds::plain(64, 64);
    let mut d_base = CfgDenoiser::new(&base, &ms, &cond, &uncond, size, params.cfg).unwrap();
    let mut d_ref = CfgDenoiser::new(&refiner, &ms, &cond, &uncond, size, params.cfg).unwrap();
    let mut quiet = |_: usize, _: usize, _: &Tensor, _: &Tensor| Ok(());
    let x_k = sample(Sampler::Euler, &mut d_base, x.clone(), &sigmas[..=k + 1], &ms, &mut NoiseSource::silent(), &mut quiet).unwrap();
    let composed = sample(Sampler::Euler, &mut d_ref, x_k, &sigmas[k + 1..], &ms, &mut NoiseSource::silent(), &mut quiet).unwrap();
    let err = common::rel_l2(&common::to_vec(&joint), &common::to_vec(&composed));
    assert!(err < 1e-5, "joint swap vs composed: {err}");

    // "separate": the base runs steps [0, k), the refiner continues from sigmas[k..].
    let x_k = sample(Sampler::Euler, &mut d_base, x, &sigmas[..=k], &ms, &mut NoiseSource::silent(), &mut quiet).unwrap();
    let composed = sample(Sampler::Euler, &mut d_ref, x_k, &sigmas[k..], &ms, &mut NoiseSource::silent(), &mut quiet).unwrap();
    let separate = run_with(Some(k), RefinerSwap::Separate);
    let err = common::rel_l2(&common::to_vec(&separate), &common::to_vec(&composed));
    assert!(err < 1e-5, "separate swap vs composed: {err}");
    assert!(common::rel_l2(&common::to_vec(&separate), &common::to_vec(&joint)) > 1e-6, "the two methods differ by one base step");

    // The refiner matters, and a switch past the last step never swaps.
    let base_only = run(None);
    assert!(common::rel_l2(&common::to_vec(&joint), &common::to_vec(&base_only)) > 1e-4);
    assert_eq!(common::to_vec(&run(Some(6))), common::to_vec(&base_only));
}
