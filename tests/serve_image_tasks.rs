//! Black-box: vary and upscale through the real binary and the built-in Fooocus-API plugin,
//! against what the real Fooocus-API returned for the same request sequence
//! (tests/fixtures/fooocus-api-uov, made by its make_uov_refs.py with the tiny upscaler of
//! tests/fixtures/upscale in Fooocus's file format and name). Slow: ~1024² images on the tiny
//! model.
mod common;

#[test]
fn vary_and_upscale_match_fooocus_api() {
    let oracle = common::all_fixtures().join("fooocus-api-uov");
    let input = common::b64encode(&std::fs::read(oracle.join("input.png")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    common::install_models(dir.path(), &[("upscale_models", "upscale/fooocus_upscaler_s409985e5.bin")]);
    let server = common::serve_tiny(dir.path(), &[]);
    common::oracle::replay(&server.addr, &oracle, &[("<input.png>".into(), input)], 3);
}
