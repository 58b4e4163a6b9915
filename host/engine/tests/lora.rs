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
    let kohya =
        |prefix: &str, n: &str| format!("{prefix}{}", n.split_once('.').unwrap().1.strip_suffix(".weight").unwrap().replace('.', "_"));
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
        (
            conv2.clone(),
            format!("lora_unet_{}", diffusers(&conv2).trim_end_matches(".weight").replace('.', "_")),
            ".lora_down.weight",
            ".lora_up.weight",
            true,
        ),
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
    assert_eq!(
        values(&merged.tensor(&other, DType::F32, &Device::Cpu).unwrap()),
        values(&base.tensor(&other, DType::F32, &Device::Cpu).unwrap())
    );

    // Through the model loader: the report travels with the model.
    let model = SdxlModel::load(&path, &LoadOptions { loras: vec![spec], ..Default::default() }).unwrap();
    assert_eq!(model.lora_report, report);
}

/// LyCORIS modules on the tiny fixture, each merged weight against ComfyUI's formula written out
/// with plain loops: LoHa `(w1a·w1b) ⊙ (w2a·w2b)·alpha/rank`, LoKr `kron(w1a·w1b, w2)·alpha/dim`,
/// LoCon with a Tucker mid core on a 3×3 conv; a LoHa with a Tucker core is reported, not merged.
#[test]
fn loha_lokr_and_locon_mid_merge_as_comfyui_computes_them() {
    let path = common::checkpoint(common::MODEL_A);
    let base = Checkpoint::open(&path).unwrap();
    let names = base.names();
    let pick = |f: &dyn Fn(&str) -> bool| names.iter().find(|n| f(n)).unwrap().to_string();
    let kohya = |n: &str| format!("lora_unet_{}", n.strip_prefix("unet.").unwrap().strip_suffix(".weight").unwrap().replace('.', "_"));
    let loha_target = pick(&|n| n.starts_with("unet.") && n.ends_with("attn1.to_q.weight"));
    let lokr_target = pick(&|n| n.starts_with("unet.") && n.ends_with("attn2.to_out.0.weight"));
    let mid_target = pick(&|n| n.starts_with("unet.input_blocks.1.0.in_layers.2.weight"));
    let tucker_target = pick(&|n| n.starts_with("unet.") && n.ends_with("attn1.to_k.weight"));
    let w = |n: &str| base.tensor(n, DType::F32, &Device::Cpu).unwrap();
    let (rank, alpha, weight) = (2usize, 3.0f32, 0.6f32);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let a = Tensor::new(alpha, &Device::Cpu).unwrap();

    let (out, cols) = w(&loha_target).dims2().unwrap();
    let m = kohya(&loha_target);
    let (w1a, w1b, w2a, w2b) = (random(31, &[out, rank]), random(32, &[rank, cols]), random(33, &[out, rank]), random(34, &[rank, cols]));
    for (s, v) in [("hada_w1_a", &w1a), ("hada_w1_b", &w1b), ("hada_w2_a", &w2a), ("hada_w2_b", &w2b)] {
        t.insert(format!("{m}.{s}"), v.clone());
    }
    t.insert(format!("{m}.alpha"), a.clone());

    let (lo, lc) = w(&lokr_target).dims2().unwrap();
    let m = kohya(&lokr_target);
    let (k1a, k1b, k2) = (random(41, &[2, rank]), random(42, &[rank, 2]), random(43, &[lo / 2, lc / 2]));
    t.insert(format!("{m}.lokr_w1_a"), k1a.clone());
    t.insert(format!("{m}.lokr_w1_b"), k1b.clone());
    t.insert(format!("{m}.lokr_w2"), k2.clone());
    t.insert(format!("{m}.alpha"), a.clone());

    let cw = w(&mid_target);
    let (co, ci, kh, kw) = cw.dims4().unwrap();
    let m = kohya(&mid_target);
    let (down, mid, up) = (random(51, &[rank, ci, 1, 1]), random(52, &[rank, rank, kh, kw]), random(53, &[co, rank, 1, 1]));
    t.insert(format!("{m}.lora_down.weight"), down.clone());
    t.insert(format!("{m}.lora_mid.weight"), mid.clone());
    t.insert(format!("{m}.lora_up.weight"), up.clone());
    t.insert(format!("{m}.alpha"), a.clone());

    let m = kohya(&tucker_target);
    for (i, s) in ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1"].iter().enumerate() {
        t.insert(format!("{m}.{s}"), random(60 + i as u64, &[2, 2]));
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lycoris.safetensors");
    candle_core::safetensors::save(&t, &file).unwrap();
    let (merged, report) = Checkpoint::open(&path).unwrap().with_loras(&[LoraSpec { path: file, weight }]).unwrap();
    assert_eq!(report.patched, 3);
    assert_eq!(report.unknown, vec![format!("lycoris.safetensors: {m} (LoHa/LoKr Tucker cores are not merged)")]);
    let scale = weight * alpha / rank as f32;
    let close = |name: &str, got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{name}[{i}]: {g} vs {w}");
        }
    };
    let get = |n: &str| values(&merged.tensor(n, DType::F32, &Device::Cpu).unwrap());

    let (base_w, v1a, v1b, v2a, v2b) = (values(&w(&loha_target)), values(&w1a), values(&w1b), values(&w2a), values(&w2b));
    let want: Vec<f32> = (0..out * cols)
        .map(|i| {
            let (o, c) = (i / cols, i % cols);
            let p1: f32 = (0..rank).map(|r| v1a[o * rank + r] * v1b[r * cols + c]).sum();
            let p2: f32 = (0..rank).map(|r| v2a[o * rank + r] * v2b[r * cols + c]).sum();
            base_w[i] + scale * p1 * p2
        })
        .collect();
    close("LoHa", &get(&loha_target), &want);

    let (base_w, a1, b1, v2) = (values(&w(&lokr_target)), values(&k1a), values(&k1b), values(&k2));
    let (p, q) = (lo / 2, lc / 2);
    let w1 = |i: usize, l: usize| (0..rank).map(|r| a1[i * rank + r] * b1[r * 2 + l]).sum::<f32>();
    let want: Vec<f32> = (0..lo * lc)
        .map(|idx| {
            let (row, col) = (idx / lc, idx % lc);
            base_w[idx] + scale * w1(row / p, col / q) * v2[(row % p) * q + col % q]
        })
        .collect();
    close("LoKr", &get(&lokr_target), &want);

    let (base_w, vd, vm, vu) = (values(&cw), values(&down), values(&mid), values(&up));
    let want: Vec<f32> = (0..co * ci * kh * kw)
        .map(|idx| {
            let (o, i, y, x) = (idx / (ci * kh * kw), idx / (kh * kw) % ci, idx / kw % kh, idx % kw);
            let d: f32 = (0..rank)
                .flat_map(|r| (0..rank).map(move |s| (r, s)))
                .map(|(r, s)| vu[o * rank + r] * vm[((r * rank + s) * kh + y) * kw + x] * vd[s * ci + i])
                .sum();
            base_w[idx] + scale * d
        })
        .collect();
    close("LoCon mid", &get(&mid_target), &want);
}
