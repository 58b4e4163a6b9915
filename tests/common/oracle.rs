//! Replaying request sequences recorded against the real Fooocus-API (a fixture folder's
//! `cases.json`, made by its script) and comparing the images focal returns with the oracle's.

use serde_json::Value;

use super::{json, pixels, request};

/// POST a recorded step with its `"<file>"` placeholders filled (base64 of the fixture files)
/// and return the first image's bytes.
pub fn run_step(addr: &str, step: &Value, files: &[(String, String)]) -> Vec<u8> {
    let mut body = step["body"].to_string();
    for (placeholder, b64) in files {
        body = body.replace(&format!("\"{placeholder}\""), &format!("\"{b64}\""));
    }
    let (status, raw) = request(addr, "POST", step["path"].as_str().unwrap(), "", &body);
    let v = json(&raw);
    assert_eq!(status, 200, "{v}");
    let b64 = v[0]["base64"].as_str().unwrap_or_else(|| panic!("no image in {v}"));
    super::b64decode(b64.split_once(";base64,").map_or(b64, |(_, data)| data))
}

/// Run the warm-up and every case of `folder/cases.json`; each case's last image must be within
/// `tolerance`/255 of the oracle's, pixel by pixel. Prints max and mean per case.
pub fn replay(addr: &str, folder: &std::path::Path, files: &[(String, String)], tolerance: u8) {
    let cases = json(&std::fs::read(folder.join("cases.json")).unwrap());
    run_step(addr, &cases["warmup"], files);
    let mut report = Vec::new();
    let mut worst_of_all = 0;
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut got = Vec::new();
        for step in case["sequence"].as_array().unwrap() {
            got = run_step(addr, step, files);
        }
        let expected = std::fs::read(folder.join(case["expected"]["png"].as_str().unwrap())).unwrap();
        let (got, expected) = (pixels(&got), pixels(&expected));
        assert_eq!(got.len(), expected.len(), "{name}: size");
        let worst = got.iter().zip(&expected).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        let mean = got.iter().zip(&expected).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>() / got.len() as f64;
        worst_of_all = worst_of_all.max(worst);
        report.push(format!("{name}: max {worst}/255, mean {mean:.3}"));
        eprintln!("{}", report.last().unwrap());
    }
    eprintln!("{}", report.join("\n"));
    assert!(worst_of_all <= tolerance, "{report:?}");
}
