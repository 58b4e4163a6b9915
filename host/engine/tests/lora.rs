//! LoRA merging on the tiny fixture: a LoRA made here for it (random up/down, kohya keys with
//! LDM and diffusers paths and PEFT-style diffusers keys,
//! linear and conv modules in the UNet and both text encoders, one bogus module) is merged at
//! load; each patched weight must equal `W + weight·(alpha/rank)·up·down`, computed here with
//! plain loops, and the bogus module must be reported.
mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use focal_engine::checkpoint::Checkpoint;
use focal_engine::lora::LoraSpec;
use focal_engine::rng::TorchRng;
use focal_engine::{LoadOptions, SdxlModel};

fn random(seed: u64, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(TorchRng::new(seed).randn(n), shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn lora_weights_merge_as_w_plus_scaled_up_down_and_unknown_keys_are_reported() {
    let path = common::checkpoint(common::MODEL_A);
    let base = Checkpoint::open(&path).unwrap();
    let names = base.names();
    let pick = |f: &dyn Fn(&str) -> bool| names.iter().find(|n| f(n)).unwrap().to_string();
    let ldm: Vec<&str> = names.iter().filter_map(|n| n.strip_prefix("unet.")).collect();
    let diffusers = |n: &str| focal_engine::checkpoint::unet_ldm_to_diffusers(n.strip_prefix("unet.").unwrap(), &ldm).unwrap();
    // (weight, module key, down suffix, up suffix, with alpha): every layout focal reads.
    let kohya = |prefix: &str, n: &str| format!("{prefix}{}", n.split_once('.').unwrap().1.strip_suffix(".weight").unwrap().replace('.', "_"));
    let to_q = pick(&|n| n.starts_with("unet.") && n.ends_with("attn1.to_q.weight"));
    let conv = pick(&|n| n.starts_with("unet.input_blocks.1.0.in_layers.2.weight"));
    let clip_l = pick(&|n| n.starts_with("clip_l.") && n.ends_with("self_attn.q_proj.weight"));
    let clip_g = pick(&|n| n.starts_with("clip_g.") && n.ends_with("mlp.fc1.weight"));
    let to_v = pick(&|n| n.starts_with("unet.") && n.ends_with("attn2.to_v.weight"));
    let conv2 = pick(&|n| n.starts_with("unet.output_blocks.0.0.out_layers.3.weight"));
    let targets = [
        (to_q.clone(), kohya("lora_unet_", &to_q), ".lora_down.weight", ".lora_up.weight", true),
        (conv.clone(), kohya("lora_unet_", &conv), ".lora_down.weight", ".lora_up.weight", true),
        (clip_l.clone(), kohya("lora_te1_", &clip_l), ".lora_down.weight", ".lora_up.weight", true),
        (clip_g.clone(), kohya("lora_te2_", &clip_g), ".lora_down.weight", ".lora_up.weight", true),
        // kohya keys with diffusers paths (LCM-LoRA style) and PEFT-style dotted diffusers keys.
        (conv2.clone(), format!("lora_unet_{}", diffusers(&conv2).trim_end_matches(".weight").replace('.', "_")), ".lora_down.weight", ".lora_up.weight", true),
        (to_v.clone(), format!("unet.{}", diffusers(&to_v).trim_end_matches(".weight")), ".lora_A.weight", ".lora_B.weight", false),
    ];
    let (rank, alpha, weight) = (2usize, 3.0f32, 0.7f32);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut expected_updates = Vec::new();
    for (i, (name, module, down_suffix, up_suffix, with_alpha)) in targets.iter().enumerate() {
        let w = base.tensor(name, DType::F32, &Device::Cpu).unwrap();
        let dims = w.dims().to_vec();
        let (out, inner): (usize, Vec<usize>) = (dims[0], dims[1..].to_vec());
        let down_shape: Vec<usize> = [rank].iter().chain(inner.iter()).copied().collect();
        let up_shape: Vec<usize> = if dims.len() == 4 { vec![out, rank, 1, 1] } else { vec![out, rank] };
        let (down, up) = (random(10 + i as u64, &down_shape), random(20 + i as u64, &up_shape));
        tensors.insert(format!("{module}{down_suffix}"), down.clone());
        tensors.insert(format!("{module}{up_suffix}"), up.clone());
        if *with_alpha {
            tensors.insert(format!("{module}.alpha"), Tensor::new(alpha, &Device::Cpu).unwrap());
        }
        // Without an alpha the scale is weight·rank/rank.
        let this_alpha = if *with_alpha { alpha } else { rank as f32 };
        expected_updates.push((name.clone(), values(&w), values(&up), values(&down), out, down.elem_count() / rank, this_alpha));
    }
    tensors.insert("lora_unet_not_a_layer.lora_down.weight".into(), random(1, &[2, 4]));
    tensors.insert("lora_unet_not_a_layer.lora_up.weight".into(), random(2, &[4, 2]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny-lora.safetensors");
    candle_core::safetensors::save(&tensors, &file).unwrap();

    let spec = LoraSpec { path: file.clone(), weight };
    let (merged, report) = Checkpoint::open(&path).unwrap().with_loras(std::slice::from_ref(&spec)).unwrap();
    assert_eq!(report.patched, 6);
    assert_eq!(report.unknown, vec!["tiny-lora.safetensors: lora_unet_not_a_layer (matches no weight of this checkpoint)".to_string()]);
    for (name, w, up, down, out, cols, alpha) in expected_updates {
        let scale = weight * alpha / rank as f32;
        let got = values(&merged.tensor(&name, DType::F32, &Device::Cpu).unwrap());
        for o in 0..out {
            for c in 0..cols {
                let update: f32 = (0..rank).map(|r| up[o * rank + r] * down[r * cols + c]).sum();
                let want = w[o * cols + c] + scale * update;
                assert!((got[o * cols + c] - want).abs() <= 1e-5 * (1.0 + want.abs()), "{name}[{o},{c}]: {} vs {want}", got[o * cols + c]);
            }
        }
    }
    // Untouched weights stay as they were.
    let other = pick(&|n| n.starts_with("unet.out.") && n.ends_with(".weight"));
    assert_eq!(values(&merged.tensor(&other, DType::F32, &Device::Cpu).unwrap()), values(&base.tensor(&other, DType::F32, &Device::Cpu).unwrap()));

    // Through the model loader: the report travels with the model.
    let model = SdxlModel::load(&path, &LoadOptions { loras: vec![spec], ..Default::default() }).unwrap();
    assert_eq!(model.lora_report, report);
}
