//! Black-box: every scheduler, and each deterministic sampler, through the real binary and the
//! built-in Fooocus-API plugin, against the images Fooocus 2.5.5's own code made for the same
//! request and seed (tests/fixtures/fooocus-oracle, made by its make_refs.py).
mod common;

use common::{json, pixels};

#[test]
fn every_scheduler_and_deterministic_sampler_matches_fooocus() {
    let oracle = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fooocus-oracle");
    let cases = json(&std::fs::read(oracle.join("cases.json")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    let mut report = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut request = case["request"].clone();
        request["require_base64"] = true.into();
        let got = pixels(&common::first_image(&server.addr, &request.to_string()));
        let expected = pixels(&std::fs::read(oracle.join(case["expected"]["png"].as_str().unwrap())).unwrap());
        assert_eq!(got.len(), expected.len(), "{name}: size");
        let worst = got.iter().zip(&expected).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        report.push(format!("{name}: {worst}/255"));
        assert!(worst <= 3, "{name}: a pixel differs from Fooocus by {worst}/255 (all so far: {report:?})");
    }
    assert!(report.len() >= 20, "{report:?}");
    eprintln!("{}", report.join("\n"));
}
