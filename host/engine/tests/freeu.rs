//! FreeU (ComfyUI's `FreeU_V2`, as Fooocus applies it) against `tests/fixtures/freeu/
//! freeu_refs.safetensors`, computed with torch.fft by `make_freeu_refs.py`: the backbone
//! scaling and the Fourier filter of the skip, for a 4×-channel block (b1, s1), a 2× block
//! (b2, s2), an untouched width, odd and single-row spatial sizes. Then the patch inside the
//! tiny SDXL's UNet: neutral factors change nothing, others change the prediction.
mod common;

use candle_core::{Device, Tensor};
use focal_engine::freeu::FreeU;
use focal_engine::{LoadOptions, SdxlModel};

const FREEU: FreeU = FreeU { b1: 1.3, b2: 1.4, s1: 0.9, s2: 0.2 };

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    common::to_vec(a).iter().zip(common::to_vec(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn output_block_patch_matches_torch_fft() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/freeu/freeu_refs.safetensors");
    let refs = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    for case in ["c128", "c64", "c96", "c64_row"] {
        let (h, skip) = FREEU.apply(&refs[&format!("{case}.h")], &refs[&format!("{case}.skip")], 32).unwrap();
        let dh = max_abs(&h, &refs[&format!("{case}.h_out")]);
        let ds = max_abs(&skip, &refs[&format!("{case}.skip_out")]);
        assert!(dh < 1e-5 && ds < 1e-5, "{case}: |Δh| {dh}, |Δskip| {ds}");
    }
}

#[test]
fn unet_applies_freeu_only_when_it_changes_something() {
    let model = SdxlModel::load(&common::checkpoint(common::MODEL_A), &LoadOptions::default()).unwrap();
    let cond = model.encode_prompt("a lighthouse", 2).unwrap();
    let y = model.adm(&cond.pooled, focal_engine::sdxl::SizeIds::plain(64, 64)).unwrap();
    let x = Tensor::randn(0f32, 1f32, (1, 4, 8, 8), &Device::Cpu).unwrap();
    let plain = model.unet.forward(&x, &[500.0], &cond.context, &y).unwrap();
    let neutral = FreeU { b1: 1.0, b2: 1.0, s1: 1.0, s2: 1.0 };
    let same = model.unet.forward_freeu(&x, &[500.0], &cond.context, &y, Some(&neutral)).unwrap();
    assert!(max_abs(&plain, &same) < 1e-5, "neutral FreeU changed the prediction");
    for f in [FREEU, FreeU { s1: 1.0, s2: 1.0, ..FREEU }, FreeU { b1: 1.0, b2: 1.0, ..FREEU }] {
        let patched = model.unet.forward_freeu(&x, &[500.0], &cond.context, &y, Some(&f)).unwrap();
        assert!(max_abs(&plain, &patched) > 1e-3, "{f:?} left the prediction unchanged");
    }
}
