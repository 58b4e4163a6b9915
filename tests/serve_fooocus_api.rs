//! Black-box: `focal serve` with the tiny checkpoint answers the Fooocus-API through its
//! built-in plugin, and a text-to-image request reproduces the engine's reference image.
mod common;

use std::path::Path;

use common::{b64decode, fixtures, request, Server};

fn start(dir: &Path) -> Server {
    common::serve_tiny(dir, &[])
}

fn start_with(dir: &Path, extra: &[&str]) -> Server {
    common::serve_tiny(dir, extra)
}

const REFERENCE_REQUEST: &str = r#"{"prompt": "a photograph of an astronaut riding a horse",
    "negative_prompt": "blurry, low quality, watermark", "image_seed": 42, "guidance_scale": 7.0,
    "aspect_ratios_selection": "128*128", "require_base64": true, "sharpness": 0, "style_selections": [],
    "advanced_params": {"sampler_name": "euler", "scheduler_name": "karras", "overwrite_step": 8,
                        "adm_scaler_positive": 1.0, "adm_scaler_negative": 1.0}}"#;

#[test]
fn text_to_image_through_the_builtin_plugin_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (status, body) = request(&server.addr, "GET", "/ping", "", "");
    assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (200, "\"pong\""));

    let (status, body) = request(&server.addr, "POST", "/v1/generation/text-to-image", "", REFERENCE_REQUEST);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let results: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let item = &results[0];
    assert_eq!(item["seed"], "42");
    assert_eq!(item["finish_reason"], "SUCCESS");
    let b64 = item["base64"].as_str().unwrap().strip_prefix("data:image/png;base64,").unwrap();
    let ours = focal_engine::image::RgbImage::decode_png(&b64decode(b64)).unwrap();
    let reference =
        focal_engine::image::RgbImage::decode_png(&std::fs::read(fixtures().join("reference/t2i_euler_karras.png")).unwrap()).unwrap();
    assert!(ours.data.iter().zip(&reference.data).all(|(a, b)| a.abs_diff(*b) <= 3));

    // Accept: image/png streams the PNG itself.
    let (status, png) = request(&server.addr, "POST", "/v1/generation/text-to-image", "Accept: image/png\r\n", REFERENCE_REQUEST);
    assert_eq!(status, 200);
    assert_eq!(focal_engine::image::RgbImage::decode_png(&png).unwrap(), ours);
}

#[test]
fn invalid_fields_get_fastapi_style_422() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    for (body, loc) in [
        (r#"{"aspect_ratios_selection": "abc"}"#, "aspect_ratios_selection"),
        (r#"{"guidance_scale": "high"}"#, "guidance_scale"),
        (r#"{"performance_selection": "Turbo"}"#, "performance_selection"),
        (r#"{"image_number": 0}"#, "image_number"),
        (r#"{"advanced_params": {"sampler_name": "bogus"}}"#, "sampler_name"),
        (r#"{"advanced_params": {"sampler_name": "tcd", "scheduler_name": "edm_playground_v2.5"}}"#, "sampler_name"),
    ] {
        let (status, resp) = request(&server.addr, "POST", "/v1/generation/text-to-image", "", body);
        assert_eq!(status, 422, "{body}: {}", String::from_utf8_lossy(&resp));
        let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
        let locs = v["detail"][0]["loc"].as_array().unwrap();
        assert_eq!(locs[0], "body");
        assert_eq!(locs.last().unwrap(), loc, "{body}: {v}");
    }
    let (status, _) = request(&server.addr, "POST", "/v1/generation/text-to-image", "", "{not json");
    assert_eq!(status, 422);
    let (status, _) = request(&server.addr, "GET", "/v1/nope", "", "");
    assert_eq!(status, 404);
}

#[test]
fn the_api_key_is_required_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), &["--apikey", "s3cret"]);
    let (status, body) = request(&server.addr, "GET", "/ping", "", "");
    assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (403, r#"{"detail":"Forbidden"}"#));
    assert_eq!(request(&server.addr, "GET", "/ping", "X-API-KEY: wrong\r\n", "").0, 403);
    assert_eq!(request(&server.addr, "GET", "/ping", "X-API-KEY: s3cret\r\n", "").0, 200);
}
