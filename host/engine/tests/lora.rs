//! LoRA merging on the tiny fixture: a kohya-layout LoRA made here for it (random up/down,
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
fn kohya_lora_weights_merge_as_w_plus_scaled_up_down_and_unknown_keys_are_reported() {
    let path = common::checkpoint(common::MODEL_A);
    let base = Checkpoint::open(&path).unwrap();
    let names = base.names();
    let pick = |f: &dyn Fn(&str) -> bool| names.iter().find(|n| f(n)).unwrap().to_string();
    let targets = [
        (pick(&|n| n.starts_with("unet.") && n.ends_with("attn1.to_q.weight")), "lora_unet_"),
        (pick(&|n| n.starts_with("unet.input_blocks.1.0.in_layers.2.weight")), "lora_unet_"),
        (pick(&|n| n.starts_with("clip_l.") && n.ends_with("self_attn.q_proj.weight")), "lora_te1_"),
        (pick(&|n| n.starts_with("clip_g.") && n.ends_with("mlp.fc1.weight")), "lora_te2_"),
    ];
    let (rank, alpha, weight) = (2usize, 3.0f32, 0.7f32);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut expected_updates = Vec::new();
    for (i, (name, prefix)) in targets.iter().enumerate() {
        let w = base.tensor(name, DType::F32, &Device::Cpu).unwrap();
        let dims = w.dims().to_vec();
        let (out, inner): (usize, Vec<usize>) = (dims[0], dims[1..].to_vec());
        let down_shape: Vec<usize> = [rank].iter().chain(inner.iter()).copied().collect();
        let up_shape: Vec<usize> = if dims.len() == 4 { vec![out, rank, 1, 1] } else { vec![out, rank] };
        let (down, up) = (random(10 + i as u64, &down_shape), random(20 + i as u64, &up_shape));
        let module = format!("{prefix}{}", name.split_once('.').unwrap().1.strip_suffix(".weight").unwrap().replace('.', "_"));
        tensors.insert(format!("{module}.lora_down.weight"), down.clone());
        tensors.insert(format!("{module}.lora_up.weight"), up.clone());
        tensors.insert(format!("{module}.alpha"), Tensor::new(alpha, &Device::Cpu).unwrap());
        expected_updates.push((name.clone(), values(&w), values(&up), values(&down), out, down.elem_count() / rank));
    }
    tensors.insert("lora_unet_not_a_layer.lora_down.weight".into(), random(1, &[2, 4]));
    tensors.insert("lora_unet_not_a_layer.lora_up.weight".into(), random(2, &[4, 2]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny-lora.safetensors");
    candle_core::safetensors::save(&tensors, &file).unwrap();

    let spec = LoraSpec { path: file.clone(), weight };
    let (merged, report) = Checkpoint::open(&path).unwrap().with_loras(std::slice::from_ref(&spec)).unwrap();
    assert_eq!(report.patched, 4);
    assert_eq!(report.unknown, vec!["tiny-lora.safetensors: lora_unet_not_a_layer (matches no weight of this checkpoint)".to_string()]);
    let scale = weight * alpha / rank as f32;
    for (name, w, up, down, out, cols) in expected_updates {
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
