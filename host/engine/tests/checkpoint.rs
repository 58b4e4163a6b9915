//! The two on-disk layouts of the same model map to identical canonical tensors.
mod common;
use candle_core::{DType, Device};
use focal_engine::checkpoint::Checkpoint;

#[test]
fn single_file_and_diffusers_layouts_give_the_same_tensors() {
    let single = Checkpoint::open(&common::fixtures().join("tiny-sdxl-a.safetensors")).unwrap();
    let diffusers = Checkpoint::open(&common::fixtures().join("diffusers")).unwrap();
    let ignored = |n: &str| n.ends_with("position_ids") || n.ends_with("logit_scale");
    let a: Vec<&str> = single.names().into_iter().filter(|n| !ignored(n)).collect();
    let b: Vec<&str> = diffusers.names().into_iter().filter(|n| !ignored(n)).collect();
    let only_a: Vec<_> = a.iter().filter(|n| !b.contains(n)).collect();
    let only_b: Vec<_> = b.iter().filter(|n| !a.contains(n)).collect();
    assert!(only_a.is_empty() && only_b.is_empty(), "only single-file: {only_a:?}\nonly diffusers: {only_b:?}");
    for name in a {
        let x = single.tensor(name, DType::F32, &Device::Cpu).unwrap();
        let y = diffusers.tensor(name, DType::F32, &Device::Cpu).unwrap();
        let (x, y) = (x.flatten_all().unwrap(), y.flatten_all().unwrap());
        assert_eq!(x.to_vec1::<f32>().unwrap(), y.to_vec1::<f32>().unwrap(), "{name}");
    }
}

fn write_checkpoint(dir: &std::path::Path, name: &str, keys: &[&str]) -> std::path::PathBuf {
    let t = candle_core::Tensor::zeros((2, 2), DType::F16, &Device::Cpu).unwrap();
    let map: std::collections::HashMap<String, candle_core::Tensor> = keys.iter().map(|k| (k.to_string(), t.clone())).collect();
    let path = dir.join(name);
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

#[test]
fn other_model_kinds_are_refused_with_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("lora.safetensors", vec!["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "LoRA"),
        (
            "sd15.safetensors",
            vec![
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                "model.diffusion_model.input_blocks.0.0.weight",
            ],
            "1.x/2.x",
        ),
        ("sd3.safetensors", vec!["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"], "Stable Diffusion 3"),
        (
            "refiner.safetensors",
            vec!["conditioner.embedders.0.model.token_embedding.weight", "model.diffusion_model.input_blocks.0.0.weight"],
            "refiner",
        ),
        ("unet_only.safetensors", vec!["model.diffusion_model.input_blocks.0.0.weight"], "missing"),
    ];
    for (file, keys, needle) in cases {
        let path = write_checkpoint(dir.path(), file, &keys);
        let err = Checkpoint::open(&path).err().unwrap_or_else(|| panic!("{file} was accepted")).to_string();
        assert!(err.contains(needle) && err.contains(file), "{file}: {err}");
    }
    let err = Checkpoint::open(&dir.path().join("model.ckpt")).err().unwrap().to_string();
    assert!(err.contains("no such file"), "{err}");
    std::fs::write(dir.path().join("model.ckpt"), b"pickle").unwrap();
    let err = Checkpoint::open(&dir.path().join("model.ckpt")).err().unwrap().to_string();
    assert!(err.contains("pickle"), "{err}");
}

/// The LDM → diffusers UNet naming (used for LoRA keys) lands on the names the diffusers
/// export of the same model really has.
#[test]
fn ldm_unet_names_map_to_the_diffusers_names_of_the_same_model() {
    let single = Checkpoint::open(&common::checkpoint(common::MODEL_A)).unwrap();
    let ldm: Vec<&str> = single.names().into_iter().filter_map(|n| n.strip_prefix("unet.")).collect();
    let diffusers_file = common::fixtures().join("diffusers/unet/diffusion_pytorch_model.safetensors");
    let diffusers = candle_core::safetensors::load(&diffusers_file, &candle_core::Device::Cpu).unwrap();
    let mut mapped = 0;
    for n in &ldm {
        let d = focal_engine::checkpoint::unet_ldm_to_diffusers(n, &ldm).unwrap_or_else(|| panic!("no diffusers name for {n}"));
        assert!(diffusers.contains_key(&d), "{n} → {d}, which the diffusers export does not have");
        mapped += 1;
    }
    assert_eq!(mapped, diffusers.len(), "every diffusers tensor is reached");
}

/// Fooocus's `vae_name`: a standalone VAE file replaces the checkpoint's. The fixture's diffusers
/// VAE and an LDM-named file cut out of the single-file checkpoint both give exactly the
/// single-file's VAE tensors; a file that is no autoencoder is refused.
#[test]
fn a_standalone_vae_file_replaces_the_checkpoints() {
    let single = common::checkpoint(common::MODEL_A);
    let base = Checkpoint::open(&single).unwrap();
    let vae_names: Vec<String> = base.names().into_iter().filter(|n| n.starts_with("vae.")).map(str::to_string).collect();
    assert!(!vae_names.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let ldm: std::collections::HashMap<String, candle_core::Tensor> = vae_names
        .iter()
        .map(|n| (n.strip_prefix("vae.").unwrap().to_string(), base.tensor(n, DType::F32, &Device::Cpu).unwrap()))
        .collect();
    let ldm_file = dir.path().join("ldm_vae.safetensors");
    candle_core::safetensors::save(&ldm, &ldm_file).unwrap();
    let diffusers_file = common::fixtures().join("diffusers/vae/diffusion_pytorch_model.safetensors");
    for file in [&ldm_file, &diffusers_file] {
        let swapped = Checkpoint::open(&single).unwrap().with_vae(file).unwrap();
        let swapped_vae: Vec<&str> = swapped.names().into_iter().filter(|n| n.starts_with("vae.")).collect();
        assert_eq!(swapped_vae, vae_names.iter().map(String::as_str).collect::<Vec<_>>(), "{}", file.display());
        for n in &vae_names {
            // Diffusers stores the attention projections as linear weights, LDM as 1×1 convs: same values.
            let values = |c: &Checkpoint| c.tensor(n, DType::F32, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(values(&swapped), values(&base), "{n} from {}", file.display());
        }
    }
    let not_vae = dir.path().join("not_vae.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("x".to_string(), candle_core::Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap())]),
        &not_vae,
    )
    .unwrap();
    let err = Checkpoint::open(&single).unwrap().with_vae(&not_vae).err().unwrap().to_string();
    assert!(err.contains("not an autoencoder"), "{err}");
}
