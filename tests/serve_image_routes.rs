//! Black-box: the Fooocus-API examples' request shapes for the image routes (v1 multipart as
//! `examples_v1.py` sends them, v2 JSON as `examples_v2.py`), sync and async, answer 200 with
//! the output sizes Fooocus produces (small inputs here; the tiny model), and an image step the
//! operator adds (`--output-step`, the `grayscale` test component) is applied to every result.
mod common;

use common::{json, multipart, request, request_bytes, wait_job};

/// The path part of a result URL (`http://host:port/files/...`).
fn url_path(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    rest[rest.find('/').unwrap()..].to_string()
}

/// (width, height) of a PNG whose pixels are all grey (the operator's step ran; its float
/// rounding may leave a channel 1 apart).
fn grey_png_size(png: &[u8]) -> (u32, u32) {
    let img = focal_engine::image::RgbImage::decode_png(png).unwrap();
    let spread = img.data.chunks(3).map(|p| p.iter().max().unwrap() - p.iter().min().unwrap()).max().unwrap();
    assert!(spread <= 1, "the output step did not run: channels up to {spread} apart");
    (img.width, img.height)
}

#[test]
fn example_requests_of_the_image_routes_run_with_the_operators_step() {
    let dir = tempfile::tempdir().unwrap();
    common::install_models(
        dir.path(),
        &[
            ("upscale_models", "upscale/fooocus_upscaler_s409985e5.bin"),
            ("inpaint", "inpaint/fooocus_inpaint_head.pth"),
            ("inpaint", "inpaint/inpaint_v26.fooocus.patch"),
        ],
    );
    let plugins = dir.path().join("data/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let built = std::path::Path::new(focal_runtime::BUILT_PLUGINS_DIR).join("grayscale.wasm");
    std::fs::copy(built, plugins.join("grayscale.wasm")).unwrap();
    std::fs::write(plugins.join("grayscale.toml"), "name = \"grayscale\"\n").unwrap();
    let server = common::serve_tiny(dir.path(), &["--output-step", "grayscale:amount=1"]);
    let addr = &server.addr;

    let image = std::fs::read(common::all_fixtures().join("fooocus-api-inpaint/input.png")).unwrap(); // 64×48
    let mask = std::fs::read(common::all_fixtures().join("fooocus-api-inpaint/mask.png")).unwrap();
    let quick = br#"{"sampler_name": "euler", "scheduler_name": "karras", "overwrite_step": 2}"#;

    // v1 multipart, async (examples_v1.py): upscale 2x; inpaint + outpaint "Left,Top" with a mask.
    let v1 = [
        ("/v1/generation/image-upscale-vary", vec![("input_image", &image[..]), ("uov_method", b"Upscale (2x)")], (1152, 896)),
        (
            "/v1/generation/image-inpaint-outpaint",
            vec![("input_image", &image[..]), ("input_mask", &mask[..]), ("prompt", b"a cat"), ("outpaint_selections", b"Left,Top")],
            // apply_outpaint: int(48·0.3) = 14 rows on top, int(64·0.3) = 19 columns on the left.
            (83, 62),
        ),
    ];
    for (path, mut parts, size) in v1 {
        parts.extend([("async_process", &b"true"[..]), ("advanced_params", quick)]);
        let (headers, form) = multipart(&parts);
        let (status, raw) = request_bytes(addr, "POST", path, &headers, &form);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&raw));
        let done = wait_job(addr, json(&raw)["job_id"].as_str().unwrap());
        assert_eq!(done["job_stage"], "SUCCESS", "{path}: {done}");
        let (status, png) = request_bytes(addr, "GET", &url_path(done["job_result"][0]["url"].as_str().unwrap()), "", b"");
        assert_eq!(status, 200);
        assert_eq!(grey_png_size(&png), size, "{path}");
    }

    // v2 JSON, sync (examples_v2.py): vary (strong); inpaint + outpaint ["Left", "Right"].
    let b64 = |bytes: &[u8]| common::b64encode(bytes);
    let quick: serde_json::Value = serde_json::from_slice(quick).unwrap();
    let v2 = [
        ("/v2/generation/image-upscale-vary", serde_json::json!({"input_image": b64(&image), "uov_method": "Vary (Strong)"}), (1152, 896)),
        (
            "/v2/generation/image-inpaint-outpaint",
            serde_json::json!({"prompt": "a cat", "input_image": b64(&image), "input_mask": b64(&mask), "outpaint_selections": ["Left", "Right"]}),
            (64 + 19 + 19, 48),
        ),
    ];
    for (path, mut body, size) in v2 {
        body["advanced_params"] = quick.clone();
        body["require_base64"] = true.into();
        let (status, raw) = request(addr, "POST", path, "", &body.to_string());
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&raw));
        let v = json(&raw);
        assert_eq!(v[0]["finish_reason"], "SUCCESS", "{path}: {v}");
        let b64 = v[0]["base64"].as_str().unwrap();
        assert_eq!(grey_png_size(&common::b64decode(b64.split_once(";base64,").map_or(b64, |(_, d)| d))), size, "{path}");
    }
}
