//! Black-box: vary and upscale through the real binary and the built-in Fooocus-API plugin,
//! against what the real Fooocus-API returned for the same request sequence
//! (tests/fixtures/fooocus-api-uov, made by its make_uov_refs.py with the tiny upscaler of
//! tests/fixtures/upscale in Fooocus's file format and name). Slow: ~1024² images on the tiny
//! model.
mod common;

use common::{json, pixels, request};
use serde_json::Value;

fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// POST `body` (the input image filled in) and return the first image's bytes.
fn run(addr: &str, step: &Value, input_b64: &str) -> Vec<u8> {
    let body = step["body"].to_string().replace("\"<input.png>\"", &format!("\"{input_b64}\""));
    let (status, raw) = request(addr, "POST", step["path"].as_str().unwrap(), "", &body);
    let v = json(&raw);
    assert_eq!(status, 200, "{v}");
    let b64 = v[0]["base64"].as_str().unwrap_or_else(|| panic!("no image in {v}"));
    common::b64decode(b64.split_once(";base64,").map_or(b64, |(_, data)| data))
}

#[test]
fn vary_and_upscale_match_fooocus_api() {
    let oracle = fixtures().join("fooocus-api-uov");
    let cases = json(&std::fs::read(oracle.join("cases.json")).unwrap());
    let input = common::b64encode(&std::fs::read(oracle.join("input.png")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/upscale_models")).unwrap();
    std::fs::copy(
        fixtures().join("upscale/fooocus_upscaler_s409985e5.bin"),
        dir.path().join("models/upscale_models/fooocus_upscaler_s409985e5.bin"),
    )
    .unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    run(&server.addr, &cases["warmup"], &input);
    let mut report = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let sequence = case["sequence"].as_array().unwrap();
        let mut got = Vec::new();
        for step in sequence {
            got = run(&server.addr, step, &input);
        }
        let (got, expected) = (pixels(&got), pixels(&std::fs::read(oracle.join(case["expected"]["png"].as_str().unwrap())).unwrap()));
        assert_eq!(got.len(), expected.len(), "{name}: size");
        let worst = got.iter().zip(&expected).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        let mean = got.iter().zip(&expected).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>() / got.len() as f64;
        report.push(format!("{name}: max {worst}/255, mean {mean:.3}"));
        eprintln!("{}", report.last().unwrap());
    }
    eprintln!("{}", report.join("\n"));
    for r in &report {
        let worst: u32 = r.split("max ").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
        assert!(worst <= 3, "{report:?}");
    }
}
