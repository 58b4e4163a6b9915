//! The refiner swap on tiny checkpoints.
//! * An SDXL-architecture refiner (the tiny base plus a LoRA): a joint swap at step `k` must equal
//!   sampling steps 0..=k with the base and the rest with the refiner, and a separate swap steps
//!   0..k with the base and the rest with the refiner, each composed here from two sampler runs.
//! * An SDXL-Refiner-architecture checkpoint (`tests/fixtures/tiny-sdxl-refiner`): its UNet, its
//!   ADM vector and every swap method against Fooocus 2.5.5's own pipeline
//!   (`make_refiner_refs.py` there).
mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use focal_engine::checkpoint::Architecture;
use focal_engine::image::RgbImage;
use focal_engine::interposer::Interposer;
use focal_engine::lora::LoraSpec;
use focal_engine::patches::FooocusPatches;
use focal_engine::pipeline::{initial_noise, refiner_switch_step, CfgDenoiser, Refiner, RefinerSwap};
use focal_engine::refiner::{refiner_adm, RefinerModel};
use focal_engine::sampler::{sample, NoiseSource, Sampler};
use focal_engine::schedule::{sampling_sigmas, ModelSampling, Scheduler};
use focal_engine::sdxl::SizeIds;
use focal_engine::{GenerationParams, LoadOptions, SdxlModel};

fn refiner_model(dir: &std::path::Path) -> RefinerModel {
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
    let refiner =
        RefinerModel::load(&path, &LoadOptions { loras: vec![LoraSpec { path: lora, weight: 1.0 }], ..Default::default() }).unwrap();
    assert_eq!((refiner.architecture, refiner.lora_report.patched), (Architecture::Sdxl, 1));
    refiner
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
    let mut d_ref = CfgDenoiser::for_refiner(&base, &refiner, &ms, &cond, &uncond, size, params.cfg, None).unwrap();
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

fn refiner_fixture() -> std::path::PathBuf {
    common::fixture_dir("tiny-sdxl-refiner")
}

/// A reference case's generation: its sampler, schedule, size, seed and CFG, Fooocus's default patches.
fn case_params(case: &serde_json::Value) -> GenerationParams {
    let num = |k: &str| case[k].as_f64().unwrap();
    let mut params = GenerationParams::txt2img("", num("width") as u32, num("height") as u32, num("steps") as usize, num("seed") as u64);
    params.sampler = case["sampler"].as_str().unwrap().parse().unwrap();
    params.scheduler = case["scheduler"].as_str().unwrap().parse().unwrap();
    params.cfg = num("cfg") as f32;
    params.patches = Some(FooocusPatches::default());
    params
}

fn refiner_refs() -> (HashMap<String, Tensor>, serde_json::Value) {
    let dir = refiner_fixture();
    let tensors = candle_core::safetensors::load(dir.join("refs.safetensors"), &Device::Cpu).unwrap();
    let doc = serde_json::from_str(&std::fs::read_to_string(dir.join("refs.json")).unwrap()).unwrap();
    (tensors, doc)
}

#[test]
fn the_sdxl_refiner_unet_and_its_adm_vector_match_fooocus() {
    let refiner = RefinerModel::load(&refiner_fixture().join("tiny-sdxl-refiner.safetensors"), &LoadOptions::default()).unwrap();
    assert_eq!(refiner.architecture, Architecture::SdxlRefiner);
    let (refs, _) = refiner_refs();
    let check = |what: &str, got: &Tensor, want: &Tensor, tol: f64| {
        assert_eq!(got.dims(), want.dims(), "{what}");
        let err = common::rel_l2(&common::to_vec(got), &common::to_vec(want));
        assert!(err < tol, "{what}: rel L2 {err}");
        eprintln!("{what}: rel L2 {err:.2e}");
    };
    let pooled = &refs["unet.pooled"];
    // [pooled, e(h=96), e(w=128), e(0), e(0), e(6.0 or 2.5)]
    check("positive ADM", &refiner_adm(&refiner, pooled, 128, 96, false).unwrap(), &refs["unet.y_pos"], 1e-6);
    check("negative ADM", &refiner_adm(&refiner, pooled, 128, 96, true).unwrap(), &refs["unet.y_neg"], 1e-6);
    let eps = refiner.unet.forward(&refs["unet.x"], &[500.0], &refs["unet.context"], &refs["unet.y_pos"]).unwrap();
    check("refiner UNet", &eps, &refs["unet.eps"], 1e-5);
}

#[test]
fn a_refiner_is_not_a_base_model() {
    let err = SdxlModel::load(&refiner_fixture().join("tiny-sdxl-refiner.safetensors"), &LoadOptions::default()).err().unwrap();
    assert!(err.to_string().contains("refiner"), "{err}");
}

#[test]
fn every_swap_method_with_an_sdxl_refiner_matches_fooocus() {
    let base = SdxlModel::load(&common::checkpoint(common::MODEL_A), &LoadOptions::default()).unwrap();
    let refiner = RefinerModel::load(&refiner_fixture().join("tiny-sdxl-refiner.safetensors"), &LoadOptions::default()).unwrap();
    let (refs, doc) = refiner_refs();
    let cond = base.encode_prompt(doc["prompt"].as_str().unwrap(), 2).unwrap();
    let uncond = base.encode_prompt(doc["negative_prompt"].as_str().unwrap(), 2).unwrap();
    let patches = FooocusPatches::default();
    assert_eq!(doc["patches"]["sharpness"].as_f64(), Some(patches.sharpness as f64));
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let num = |k: &str| case[k].as_f64().unwrap();
        let params = case_params(case);
        let swap = match case["swap"].as_str().unwrap() {
            "joint" => RefinerSwap::Joint,
            "separate" => RefinerSwap::Separate,
            _ => RefinerSwap::Vae,
        };
        let switch = num("switch") as usize;
        // Fooocus's trace of which UNet ran each model call agrees with where focal swaps.
        let calls: Vec<&str> = case["unet_calls"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        let base_calls = calls.iter().take_while(|c| **c == "base").count();
        assert_eq!(base_calls, if swap == RefinerSwap::Joint { switch + 1 } else { switch }, "{name}: {calls:?}");
        let run = |r: Option<Refiner>| base.generate_with_refiner(&params, &cond, &uncond, r, false, &mut |_| true).unwrap().latent;
        let got = run(Some(Refiner { model: &refiner, switch, swap }));
        let want = common::to_vec(&refs[name]);
        let err = common::rel_l2(&common::to_vec(&got), &want);
        assert!(err < 1e-4, "{name}: rel L2 {err} against Fooocus");
        // The reference tells the refiner's part apart: the base alone is far from it.
        let base_only = common::rel_l2(&common::to_vec(&run(None)), &want);
        assert!(base_only > 100.0 * err.max(1e-6), "{name}: base alone {base_only} vs refined {err}");
        eprintln!("{name}: rel L2 {err:.2e} against Fooocus (base alone {base_only:.2e})");
    }
}

fn sd15_refiner(with_interposer: bool) -> RefinerModel {
    let dir = refiner_fixture();
    let refiner = RefinerModel::load(&dir.join("tiny-sd15-refiner.safetensors"), &LoadOptions::default()).unwrap();
    assert_eq!(refiner.architecture, Architecture::Sd15);
    assert!(refiner.has_own_vae());
    if with_interposer {
        refiner.with_interposer(Interposer::load(&dir.join(focal_engine::interposer::FILE_NAME), &Device::Cpu).unwrap())
    } else {
        refiner
    }
}

#[test]
fn an_sd15_refiner_takes_over_through_the_interposer_as_in_fooocus() {
    let base = SdxlModel::load(&common::checkpoint(common::MODEL_A), &LoadOptions::default()).unwrap();
    let refiner = sd15_refiner(true);
    let (refs, doc) = refiner_refs();
    let cond = base.encode_prompt(doc["prompt"].as_str().unwrap(), 2).unwrap();
    let uncond = base.encode_prompt(doc["negative_prompt"].as_str().unwrap(), 2).unwrap();
    let cases = doc["sd15_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let num = |k: &str| case[k].as_f64().unwrap();
        let params = case_params(case);
        let switch = num("switch") as usize;
        // Whatever was asked, Fooocus runs the vae swap: the base up to the switch, then the refiner.
        let asked = if case["swap"] == "separate" { RefinerSwap::Separate } else { RefinerSwap::Joint };
        let calls: Vec<&str> = case["unet_calls"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(calls.iter().take_while(|c| **c == "base").count(), switch, "{name}: {calls:?}");
        let out = base
            .generate_with_refiner(&params, &cond, &uncond, Some(Refiner { model: &refiner, switch, swap: asked }), false, &mut |_| true)
            .unwrap();
        let err = common::rel_l2(&common::to_vec(&out.latent), &common::to_vec(&refs[name]));
        assert!(err < 1e-4, "{name}: SD1.5 latent rel L2 {err} against Fooocus");
        // Decoded by the refiner's own VAE: Fooocus's pixels within 3/255.
        let want: Vec<f32> = common::to_vec(&refs[&format!("{name}.png")]);
        let got: Vec<f32> = out.image.data.iter().map(|&v| v as f32).collect();
        let worst = common::max_abs_diff(&got, &want);
        assert!(worst <= 3.0, "{name}: pixels differ by up to {worst}/255");
        let plain = base.generate_with(&params, &cond, &uncond, false, &mut |_| true).unwrap();
        let plain_px: Vec<f32> = plain.image.data.iter().map(|&v| v as f32).collect();
        assert!(common::max_abs_diff(&plain_px, &want) > 30.0, "{name}: the base alone is not the reference");
        eprintln!("{name}: latent rel L2 {err:.2e}, max pixel difference {worst}/255 against Fooocus");
    }
    // Without the interposer it says which file is missing.
    let bare = sd15_refiner(false);
    let params = GenerationParams::txt2img("", 64, 64, 4, 1);
    let err = base.generate_with_refiner(
        &params,
        &cond,
        &uncond,
        Some(Refiner { model: &bare, switch: 2, swap: RefinerSwap::Joint }),
        false,
        &mut |_| true,
    );
    let msg = err.err().unwrap().to_string();
    assert!(msg.contains("vae_approx/xl-to-v1_interposer-v4.0.safetensors"), "{msg}");
}

#[test]
fn with_an_sd15_refiner_a_partial_denoise_runs_one_model_as_fooocus_decides() {
    let base = SdxlModel::load(&common::checkpoint(common::MODEL_A), &LoadOptions::default()).unwrap();
    let refiner = sd15_refiner(true);
    let cond = base.encode_prompt("a lighthouse", 2).unwrap();
    let uncond = base.encode_prompt("", 2).unwrap();
    let image = RgbImage { width: 64, height: 64, data: (0..64 * 64 * 3).map(|i| ((i * 37) % 251) as u8).collect() };
    let mut params = GenerationParams::txt2img("a lighthouse", 64, 64, 8, 3);
    params.init_image = Some(image.clone());
    let run = |params: &GenerationParams, r: Option<Refiner>| {
        base.generate_with_refiner(params, &cond, &uncond, r, false, &mut |_| true).unwrap().latent
    };
    let at_half = Refiner { model: &refiner, switch: 4, swap: RefinerSwap::Joint };
    // ((8 − 4) / 8)^0.834 = 0.561: a denoise above it is the base's alone …
    params.denoise = 0.7;
    assert_eq!(common::to_vec(&run(&params, Some(at_half))), common::to_vec(&run(&params, None)));
    // … at or below it the refiner's alone, from an image its own VAE encoded.
    params.denoise = 0.5;
    let alone = run(&params, Some(at_half));
    let ms = ModelSampling::sdxl();
    let sigmas = sampling_sigmas(&ms, params.scheduler, 8, 0.5, false);
    let vae = refiner.vae.as_ref().unwrap();
    let pixels = ((image.to_tensor(&Device::Cpu).unwrap() * 2.0).unwrap() - 1.0).unwrap();
    let latent = vae.encode(&pixels).unwrap();
    let x = (latent + (initial_noise(3, (1, 4, 8, 8)).unwrap() * sigmas[0] as f64).unwrap()).unwrap();
    let mut d = CfgDenoiser::for_refiner(&base, &refiner, &ms, &cond, &uncond, SizeIds::plain(64, 64), params.cfg, None).unwrap();
    let composed = sample(params.sampler, &mut d, x, &sigmas, &ms, &mut NoiseSource::silent(), &mut |_, _, _, _| Ok(())).unwrap();
    let err = common::rel_l2(&common::to_vec(&alone), &common::to_vec(&composed));
    assert!(err < 1e-5, "refiner alone vs composed: {err}");
}
