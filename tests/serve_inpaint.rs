//! Black-box: inpaint and outpaint through the real binary and the built-in Fooocus-API plugin,
//! against what the real Fooocus-API returned for the same request sequences
//! (tests/fixtures/fooocus-api-inpaint, made by its make_inpaint_refs.py with the tiny upscaler
//! of tests/fixtures/upscale and the tiny inpaint head and patches of tests/fixtures/inpaint, in
//! Fooocus's file formats and names). Slow: 1152×896 samples on the tiny model.
mod common;

/// The test fixtures folder (`common::fixtures` is the tiny SDXL's).
fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn inpaint_and_outpaint_match_fooocus_api() {
    let oracle = fixtures().join("fooocus-api-inpaint");
    let file = |name: &str| common::b64encode(&std::fs::read(oracle.join(name)).unwrap());
    let files = [("<input.png>".to_string(), file("input.png")), ("<mask.png>".to_string(), file("mask.png"))];
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for (folder, source) in [
        ("upscale_models", "upscale/fooocus_upscaler_s409985e5.bin"),
        ("inpaint", "inpaint/fooocus_inpaint_head.pth"),
        ("inpaint", "inpaint/inpaint_v26.fooocus.patch"),
        ("inpaint", "inpaint/inpaint.fooocus.patch"),
    ] {
        std::fs::create_dir_all(models.join(folder)).unwrap();
        let name = std::path::Path::new(source).file_name().unwrap();
        std::fs::copy(fixtures().join(source), models.join(folder).join(name)).unwrap();
    }
    let server = common::serve_tiny(dir.path(), &[]);
    common::oracle::replay(&server.addr, &oracle, &files, 3);
}
