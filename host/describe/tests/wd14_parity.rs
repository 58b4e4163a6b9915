//! The WD14 tagger against Fooocus's own `default_interrogator` run with onnxruntime on a tiny
//! random-weight tagger in the real format and file names (tests/fixtures/describe/make_wd14_refs.py).
use std::path::PathBuf;

use focal_describe::Wd14Tagger;
use focal_imageops::Pixels;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/describe")
}

#[test]
fn tags_match_fooocus() {
    let dir = fixtures();
    let tagger = Wd14Tagger::load(&dir.join("wd-v1-4-moat-tagger-v2.onnx"), &dir.join("wd-v1-4-moat-tagger-v2.csv")).unwrap();
    let refs: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("wd14.json")).unwrap()).unwrap();
    for case in refs["cases"].as_array().unwrap() {
        let data: Vec<u8> = case["input"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
        let image = Pixels::rgb(case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32, data).unwrap();
        let probs = tagger.probabilities(&image).unwrap();
        let want: Vec<f32> = case["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let worst = probs.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        eprintln!("{}: largest probability difference from onnxruntime {worst:e}", case["name"]);
        assert!(worst < 1e-5, "{}: probabilities differ from onnxruntime's by {worst}", case["name"]);
        assert_eq!(tagger.describe(&image).unwrap(), case["tags"].as_str().unwrap(), "{}", case["name"]);
    }
}

#[test]
fn a_file_that_is_not_a_tagger_is_refused() {
    let dir = fixtures();
    let csv = dir.join("wd-v1-4-moat-tagger-v2.csv");
    assert!(Wd14Tagger::load(&csv, &csv).is_err());
}
