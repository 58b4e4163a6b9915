//! Black-box: inpaint and outpaint through the real binary and the built-in Fooocus-API plugin,
//! against what the real Fooocus-API returned for the same request sequences
//! (tests/fixtures/fooocus-api-inpaint, made by its make_inpaint_refs.py with the tiny upscaler
//! of tests/fixtures/upscale and the tiny inpaint head and patches of tests/fixtures/inpaint, in
//! Fooocus's file formats and names). Slow: 1152×896 samples on the tiny model.
mod common;

#[test]
fn inpaint_and_outpaint_match_fooocus_api() {
    let oracle = common::all_fixtures().join("fooocus-api-inpaint");
    let file = |name: &str| common::b64encode(&std::fs::read(oracle.join(name)).unwrap());
    let files = [("<input.png>".to_string(), file("input.png")), ("<mask.png>".to_string(), file("mask.png"))];
    let dir = tempfile::tempdir().unwrap();
    common::install_models(
        dir.path(),
        &[
            ("upscale_models", "upscale/fooocus_upscaler_s409985e5.bin"),
            ("inpaint", "inpaint/fooocus_inpaint_head.pth"),
            ("inpaint", "inpaint/inpaint_v26.fooocus.patch"),
            ("inpaint", "inpaint/inpaint.fooocus.patch"),
        ],
    );
    let server = common::serve_tiny(dir.path(), &[]);
    common::oracle::replay(&server.addr, &oracle, &files, 3);
}
