//! Image-prompt encoding against Fooocus's own: the tiny CLIP vision tower and IP-Adapter Plus of
//! tests/fixtures/image-prompt, `ip_tensors.safetensors` made by its `make_ip_tensors.py` (transformers'
//! CLIPVisionModelWithProjection and Fooocus's `extras/resampler.py`).
mod common;

use candle_core::{Device, Tensor};
use focal_engine::clip_vision::ClipVision;
use focal_engine::image::RgbImage;
use focal_engine::ip_adapter::{load_negative, IpAdapter};
use focal_imageops::{resize_lanczos, Pixels};

fn dir() -> std::path::PathBuf {
    common::fixture_dir("image-prompt")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    common::to_vec(a).iter().zip(common::to_vec(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn vision_tower_resampler_and_projections_match_fooocus() {
    let reference = candle_core::safetensors::load(dir().join("ip_tensors.safetensors"), &Device::Cpu).unwrap();
    let r = |name: &str| reference.get(name).unwrap_or_else(|| panic!("reference {name}"));
    let dev = Device::Cpu;
    let vision = ClipVision::load(&dir().join("clip_vision_vit_h.safetensors"), &dev).unwrap();
    let adapter = IpAdapter::load(&dir().join("ip-adapter-plus_sdxl_vit-h.bin"), &dev).unwrap();
    let negative = load_negative(&dir().join("fooocus_ip_negative.safetensors")).unwrap();

    let png = RgbImage::decode_png(&std::fs::read(dir().join("prompt_a.png")).unwrap()).unwrap();
    let resized = resize_lanczos(&Pixels::rgb(png.width, png.height, png.data).unwrap(), 224, 224);
    let pixels = vision.pixels(&resized.data).unwrap();
    assert!(max_diff(&pixels, r("pixels")) < 1e-5, "pixels {}", max_diff(&pixels, r("pixels")));

    let hidden = vision.penultimate(&pixels).unwrap();
    assert!(max_diff(&hidden, r("hidden")) < 1e-3, "hidden {}", max_diff(&hidden, r("hidden")));

    let tokens = adapter.image_tokens(&vision, &resized.data).unwrap();
    assert!(max_diff(&tokens, r("tokens")) < 1e-3, "tokens {}", max_diff(&tokens, r("tokens")));

    let embeds = adapter.embeds(&tokens, &negative).unwrap();
    assert_eq!(embeds.cond.len(), 140);
    let last = embeds.cond.len() - 2;
    for (got, want) in [
        (&embeds.cond[0], "k0"),
        (&embeds.cond[1], "v0"),
        (&embeds.cond[last], "k_last"),
        (&embeds.cond[last + 1], "v_last"),
        (&embeds.uncond[0], "uk0"),
    ] {
        assert!(max_diff(got, r(want)) < 1e-3, "{want} {}", max_diff(got, r(want)));
    }
}

#[test]
fn a_mismatched_vision_tower_is_refused_by_name() {
    let dev = Device::Cpu;
    let adapter = IpAdapter::load(&dir().join("ip-adapter-plus_sdxl_vit-h.bin"), &dev).unwrap();
    // A checkpoint is not a CLIP vision model.
    let err = ClipVision::load(&common::checkpoint(common::MODEL_A), &dev).err().expect("refused").to_string();
    assert!(err.contains("CLIP vision"), "{err}");
    let err = IpAdapter::load(&dir().join("clip_vision_vit_h.safetensors"), &dev).err().expect("refused").to_string();
    assert!(err.contains("IP-Adapter") || err.contains("Resampler"), "{err}");
    assert_eq!(adapter.vision_width().unwrap(), 128);
}
