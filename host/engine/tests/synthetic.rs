//! The random-checkpoint writer reproduces a real checkpoint's layout exactly, so benchmarks on
//! synthetic full-size weights exercise the same loader and model code as real files.
mod common;
use focal_engine::synthetic::{SdxlArchitecture, TextEncoderShape};
use focal_engine::{GenerationParams, LoadOptions, SdxlModel};

fn model_a() -> SdxlArchitecture {
    SdxlArchitecture {
        model_channels: 32,
        channel_mult: vec![1, 2, 2],
        num_res_blocks: 2,
        transformer_depth: vec![0, 1, 2],
        time_embed_dim: 128,
        adm_size_dim: 256,
        clip_l: TextEncoderShape { width: 64, layers: 3, mlp: 256 },
        clip_g: TextEncoderShape { width: 64, layers: 4, mlp: 256 },
        vae_channels: 32,
        vae_mult: vec![1, 1, 2, 2],
        vae_res_blocks: 2,
        latent_channels: 4,
    }
}

#[test]
fn names_and_shapes_equal_the_fixture_checkpoint() {
    let file = std::fs::read(common::checkpoint(common::MODEL_A)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&file).unwrap();
    let mut real: Vec<(String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("position_ids") && !n.ends_with("logit_scale"))
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    let mut ours = model_a().tensors();
    real.sort();
    ours.sort();
    assert_eq!(ours, real);
}

#[test]
fn full_size_sdxl_has_the_known_parameter_count() {
    let arch = SdxlArchitecture::sdxl_base();
    let unet: usize = arch.tensors().iter().filter(|(n, _)| n.starts_with("model.")).map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(unet, 2_567_463_684);
}

#[test]
fn a_written_random_checkpoint_loads_and_generates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.safetensors");
    model_a().write_random_checkpoint(&path, 7).unwrap();
    let model = SdxlModel::load(&path, &LoadOptions::default()).unwrap();
    let out = model.generate(&GenerationParams::txt2img("a cat", 64, 64, 2, 3), false, &mut |_| true).unwrap();
    assert_eq!((out.image.width, out.image.height), (64, 64));
}
