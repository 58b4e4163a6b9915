//! BLIP captions against Fooocus's own `extras/interrogate.py:default_interrogator` (torch 2.1,
//! torchvision 0.16, transformers 4.42.4) on a tiny random-weight BLIP in the real format and file
//! name (tests/fixtures/describe/make_blip_refs.py): the model's inside values within float
//! tolerance, and the sampled captions equal for each seed given to `torch.manual_seed`.
use std::path::PathBuf;

use candle_core::Device;
use focal_describe::BlipCaptioner;
use focal_imageops::Pixels;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/describe")
}

/// The images of `wd14.json` and the one `make_blip_refs.py` computes.
fn images() -> Vec<(String, Pixels)> {
    let wd14: Value = serde_json::from_slice(&std::fs::read(fixtures().join("wd14.json")).unwrap()).unwrap();
    let mut out: Vec<(String, Pixels)> = wd14["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let data = c["input"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
            let size = |k: &str| c[k].as_u64().unwrap() as u32;
            (c["name"].as_str().unwrap().to_string(), Pixels::rgb(size("width"), size("height"), data).unwrap())
        })
        .collect();
    let (w, h) = (600u32, 400u32);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            data.extend([((3 * x + y) % 256) as u8, ((x * y / 7) % 256) as u8, (((x / 20 + y / 20) % 2) * 200 + 30) as u8]);
        }
    }
    out.push(("stripes_600x400".into(), Pixels::rgb(w, h, data).unwrap()));
    out
}

fn refs() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("blip.json")).unwrap()).unwrap()
}

fn load() -> BlipCaptioner {
    BlipCaptioner::load(&fixtures().join("model_base_caption_capfilt_large.pth"), &Device::Cpu).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn image_embeddings_and_first_scores_match_fooocus() {
    let model = load();
    let refs = refs();
    let images = images();
    for probe in refs["probes"].as_array().unwrap() {
        let name = probe["name"].as_str().unwrap();
        let image = &images.iter().find(|(n, _)| n == name).unwrap().1;
        let embeds = model.image_embeddings(image).unwrap();
        let dims: Vec<usize> = probe["embeds_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(embeds.dims(), dims.as_slice(), "{name}");
        let rows = embeds.squeeze(0).unwrap();
        let first: Vec<f32> = rows.get(0).unwrap().narrow(0, 0, 8).unwrap().to_vec1().unwrap();
        let last_row = rows.get(dims[1] - 1).unwrap();
        let last: Vec<f32> = last_row.narrow(0, dims[2] - 8, 8).unwrap().to_vec1().unwrap();
        let mean: f32 = embeds.abs().unwrap().mean_all().unwrap().to_scalar().unwrap();
        for (got, want) in first.iter().chain(&last).zip(floats(&probe["embeds_first"]).iter().chain(&floats(&probe["embeds_last"]))) {
            assert!((got - want).abs() < 1e-4, "{name}: embedding {got} vs Fooocus {want}");
        }
        assert!((mean - probe["embeds_abs_mean"].as_f64().unwrap() as f32).abs() < 1e-5, "{name}: mean |embedding| {mean}");
        let scores = model.first_scores(image).unwrap();
        for (id, want) in probe["top_ids"].as_array().unwrap().iter().zip(floats(&probe["top_logits"])) {
            let got = scores[id.as_u64().unwrap() as usize];
            assert!((got - want).abs() < 1e-3 * want.abs().max(1.0), "{name}: score of token {id} {got} vs Fooocus {want}");
        }
    }
}

#[test]
fn captions_match_fooocus_for_each_seed() {
    let model = load();
    let images = images();
    for case in refs()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let seed = case["seed"].as_u64().unwrap();
        let image = &images.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(model.caption(image, seed).unwrap(), case["caption"].as_str().unwrap(), "{name}, seed {seed}");
    }
}

#[test]
fn a_file_that_is_not_blip_is_refused() {
    let not_blip = fixtures().join("wd-v1-4-moat-tagger-v2.onnx");
    assert!(BlipCaptioner::load(&not_blip, &Device::Cpu).is_err());
}
