//! Black-box: image prompts (IP-Adapter Plus: ImagePrompt and FaceSwap; control-LoRAs: PyraCanny and
//! CPDS) through the real binary and the built-in Fooocus-API plugin, against what the real
//! Fooocus-API returned for the same requests (tests/fixtures/image-prompt, made by its
//! make_ip_refs.py with the tiny CLIP vision tower, adapters and negative tokens of that folder;
//! tests/fixtures/controlnet, made by its make_control_refs.py with its tiny control-LoRAs; all in
//! Fooocus's file names and formats).
mod common;

use common::{json, multipart, pixels, request, request_bytes, wait_job};

fn oracle() -> std::path::PathBuf {
    common::all_fixtures().join("image-prompt")
}

fn install_image_prompt_models(dir: &std::path::Path) {
    common::install_models(
        dir,
        &[
            ("clip_vision", "image-prompt/clip_vision_vit_h.safetensors"),
            ("controlnet", "image-prompt/ip-adapter-plus_sdxl_vit-h.bin"),
            ("controlnet", "image-prompt/ip-adapter-plus-face_sdxl_vit-h.bin"),
            ("controlnet", "image-prompt/fooocus_ip_negative.safetensors"),
        ],
    );
}

fn files() -> Vec<(String, String)> {
    ["prompt_a.png", "prompt_b.png"]
        .iter()
        .map(|name| (format!("<{name}>"), common::b64encode(&std::fs::read(oracle().join(name)).unwrap())))
        .collect()
}

fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    let (a, b) = (pixels(a), pixels(b));
    assert_eq!(a.len(), b.len(), "size");
    a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

#[test]
fn image_prompts_match_fooocus_api() {
    let dir = tempfile::tempdir().unwrap();
    install_image_prompt_models(dir.path());
    let server = common::serve_tiny(dir.path(), &[]);
    common::oracle::replay(&server.addr, &oracle(), &files(), 3);

    // The v1 multipart route with the same image prompt as the `image_prompt` case, sync and async.
    let cases = json(&std::fs::read(oracle().join("cases.json")).unwrap());
    let case = cases["cases"].as_array().unwrap().iter().find(|c| c["name"] == "image_prompt").unwrap();
    let body = &case["sequence"][0]["body"];
    let expected = std::fs::read(oracle().join("image_prompt.png")).unwrap();
    let png = std::fs::read(oracle().join("prompt_a.png")).unwrap();
    let text = |k: &str| match &body[k] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let fields: Vec<(String, Vec<u8>)> = [
        "prompt",
        "negative_prompt",
        "performance_selection",
        "image_number",
        "image_seed",
        "aspect_ratios_selection",
        "sharpness",
        "guidance_scale",
        "base_model_name",
        "refiner_model_name",
        "advanced_params",
    ]
    .iter()
    .map(|k| (k.to_string(), text(k).into_bytes()))
    .chain([
        // The v1 defaults are Fooocus's styles and LoRA; the JSON case sent none.
        ("style_selections".into(), b"".to_vec()),
        ("loras".into(), b"[]".to_vec()),
        ("require_base64".into(), b"true".to_vec()),
        ("cn_img1".into(), png),
        ("cn_stop1".into(), b"0.5".to_vec()),
        ("cn_weight1".into(), b"0.6".to_vec()),
        ("cn_type1".into(), b"ImagePrompt".to_vec()),
    ])
    .collect();
    let parts: Vec<(&str, &[u8])> = fields.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    let (headers, form) = multipart(&parts);
    let (status, raw) = request_bytes(&server.addr, "POST", "/v1/generation/image-prompt", &headers, &form);
    let v = json(&raw);
    assert_eq!(status, 200, "{v}");
    let b64 = v[0]["base64"].as_str().unwrap_or_else(|| panic!("no image in {v}"));
    let got = common::b64decode(b64.split_once(";base64,").map_or(b64, |(_, d)| d));
    assert!(max_diff(&got, &expected) <= 3, "v1 image-prompt: {}", max_diff(&got, &expected));

    let mut async_parts = parts.clone();
    async_parts.push(("async_process", b"true"));
    let (headers, form) = multipart(&async_parts);
    let (status, raw) = request_bytes(&server.addr, "POST", "/v1/generation/image-prompt", &headers, &form);
    let v = json(&raw);
    assert_eq!((status, v["job_type"].as_str()), (200, Some("Image Prompt")), "{v}");
    let done = wait_job(&server.addr, v["job_id"].as_str().unwrap());
    assert_eq!(done["job_stage"], "SUCCESS", "{done}");
    let url = done["job_result"][0]["url"].as_str().unwrap();
    let path = url.split_once("/files/").map(|(_, p)| format!("/files/{p}")).unwrap();
    let (status, file) = request(&server.addr, "GET", &path, "", "");
    assert_eq!(status, 200);
    assert!(max_diff(&file, &expected) <= 3, "async v1 image-prompt");
}

#[test]
fn controlnets_match_fooocus_api() {
    let dir = tempfile::tempdir().unwrap();
    install_image_prompt_models(dir.path());
    common::install_models(
        dir.path(),
        &[
            ("controlnet", "controlnet/control-lora-canny-rank128.safetensors"),
            ("controlnet", "controlnet/fooocus_xl_cpds_128.safetensors"),
        ],
    );
    let server = common::serve_tiny(dir.path(), &[]);
    common::oracle::replay(&server.addr, &common::all_fixtures().join("controlnet"), &files(), 3);
}

/// FaceSwap with Fooocus's face crop (tests/fixtures/face-swap, made by its make_face_swap_refs.py with the
/// tiny RetinaFace of tests/fixtures/faces): a face found and cropped, and an image without one. First
/// without the detector: the job fails naming its file, and the next job finds it once installed.
#[test]
fn face_swap_crop_matches_fooocus_api() {
    let dir = tempfile::tempdir().unwrap();
    install_image_prompt_models(dir.path());
    let server = common::serve_tiny(dir.path(), &[]);
    let faces = common::all_fixtures().join("faces");
    let files: Vec<(String, String)> = ["face_a.png", "face_b.png", "no_face.png"]
        .iter()
        .map(|name| (format!("<{name}>"), common::b64encode(&std::fs::read(faces.join(name)).unwrap())))
        .collect();
    let body = serde_json::json!({"image_prompts": [{"cn_img": files[0].1, "cn_type": "FaceSwap"}], "async_process": true,
                                  "advanced_params": {"overwrite_step": 1}});
    let (status, raw) = request(&server.addr, "POST", "/v2/generation/image-prompt", "", &body.to_string());
    assert_eq!(status, 200);
    let done = wait_job(&server.addr, json(&raw)["job_id"].as_str().unwrap());
    assert_eq!(done["job_stage"], "ERROR", "{done}");
    assert!(done["job_status"].as_str().unwrap().contains("controlnet/detection_Resnet50_Final.pth"), "{done}");
    common::install_models(dir.path(), &[("controlnet", "faces/detection_Resnet50_Final.pth")]);
    common::oracle::replay(&server.addr, &common::all_fixtures().join("face-swap"), &files, 3);
}

/// Image prompts with vary and inpaint (Fooocus-API's mixing flags), and the image-prompt route with
/// an input image and mask (tests/fixtures/image-prompt-mix). Slow: a 1152×896 vary.
#[test]
fn image_prompts_mixed_with_image_tasks_match_fooocus_api() {
    let dir = tempfile::tempdir().unwrap();
    install_image_prompt_models(dir.path());
    common::install_models(
        dir.path(),
        &[
            ("controlnet", "controlnet/control-lora-canny-rank128.safetensors"),
            ("upscale_models", "upscale/fooocus_upscaler_s409985e5.bin"),
            ("inpaint", "inpaint/fooocus_inpaint_head.pth"),
            ("inpaint", "inpaint/inpaint_v26.fooocus.patch"),
        ],
    );
    let mix = common::all_fixtures().join("image-prompt-mix");
    let mut files = files();
    files.push(("<mask.png>".into(), common::b64encode(&std::fs::read(mix.join("mask.png")).unwrap())));
    let server = common::serve_tiny(dir.path(), &[]);
    common::oracle::replay(&server.addr, &mix, &files, 3);
}

#[test]
fn image_prompt_errors_name_the_field_or_the_missing_model() {
    let dir = tempfile::tempdir().unwrap();
    // No image-prompt models, and downloads lead nowhere (the tests' HF_MIRROR).
    let server = common::serve_tiny(dir.path(), &[]);
    let addr = &server.addr;
    let png = common::b64encode(&std::fs::read(oracle().join("prompt_a.png")).unwrap());
    let post = |path: &str, body: serde_json::Value| {
        let (status, raw) = request(addr, "POST", path, "", &body.to_string());
        (status, json(&raw))
    };
    for (prompt, loc) in [
        (serde_json::json!({"cn_img": png, "cn_type": "Depth"}), "cn_type"),
        (serde_json::json!({"cn_img": png, "cn_weight": 2.5}), "cn_weight"),
        (serde_json::json!({"cn_img": png, "cn_stop": -0.1}), "cn_stop"),
        (serde_json::json!({"cn_img": "aGVsbG8="}), "cn_img"),
    ] {
        let (status, v) = post("/v2/generation/image-prompt", serde_json::json!({"image_prompts": [prompt]}));
        assert_eq!(status, 422, "{prompt}: {v}");
        assert_eq!(v["detail"][0]["loc"], serde_json::json!(["body", "image_prompts", 0, loc]), "{v}");
    }
    // A missing model fails the job, naming the file; the server keeps serving.
    let (status, v) = post(
        "/v2/generation/text-to-image-with-ip",
        serde_json::json!({"image_prompts": [{"cn_img": png, "cn_type": "ImagePrompt"}], "async_process": true,
                           "advanced_params": {"overwrite_step": 1}}),
    );
    assert_eq!(status, 200, "{v}");
    let done = wait_job(addr, v["job_id"].as_str().unwrap());
    assert_eq!(done["job_stage"], "ERROR", "{done}");
    assert!(done["job_status"].as_str().unwrap().contains("clip_vision/clip_vision_vit_h.safetensors"), "{done}");
    let (status, _) = request(addr, "GET", "/ping", "", "");
    assert_eq!(status, 200);
}
