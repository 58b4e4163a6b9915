//! Black-box: the Fooocus-API's describe-image through the real binary (the built-in
//! `fooocus_describe` plugin on contract 0.2.0's `describe` interface). Anime runs the WD14 tagger:
//! a tiny random-weight tagger in the real format and file names answers exactly the tags Fooocus's
//! own `default_interrogator` gave with onnxruntime (tests/fixtures/describe/make_wd14_refs.py).
//! Photo runs BLIP: a tiny random-weight captioner in the real format and file name answers exactly
//! the caption Fooocus's `extras/interrogate.py` wrote after `torch.manual_seed(0)`
//! (tests/fixtures/describe/make_blip_refs.py).
mod common;

use common::{json, multipart, request_bytes};

fn describe(addr: &str, query: &str, parts: &[(&str, &[u8])]) -> (u16, serde_json::Value) {
    let (headers, form) = multipart(parts);
    let (status, body) = request_bytes(addr, "POST", &format!("/v1/tools/describe-image{query}"), &headers, &form);
    (status, json(&body))
}

#[test]
fn captions_and_tags_match_fooocus_and_bad_requests_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    // Downloads lead nowhere here (the tests' HF_MIRROR): first without the tagger.
    let server = common::serve_tiny(dir.path(), &[]);
    let addr = &server.addr;
    let refs = json(&std::fs::read(common::all_fixtures().join("describe/wd14.json")).unwrap());
    let case = &refs["cases"][0];
    let rgb: Vec<u8> = case["input"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
    let png = common::png_rgb(case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32, &rgb);

    let (status, v) = describe(addr, "?image_type=Anime", &[("image", &png)]);
    assert_eq!(status, 500, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("clip_vision/wd-v1-4-moat-tagger-v2.onnx"), "{v}");
    // Photo (the default) without the captioner: a 500 naming the file and its folder.
    let (status, v) = describe(addr, "", &[("image", &png)]);
    assert_eq!(status, 500, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("clip_vision/model_base_caption_capfilt_large.pth"), "{v}");
    // Bad requests: 422 naming the field, as FastAPI does.
    let huge = common::png_claiming(20000, 20000);
    for (query, parts, loc) in [
        ("?image_type=Sketch", vec![("image", png.as_slice())], serde_json::json!(["query", "image_type"])),
        ("?image_type=Anime", vec![("prompt", b"x".as_slice())], serde_json::json!(["body", "image"])),
        ("?image_type=Anime", vec![("image", b"not an image".as_slice())], serde_json::json!(["body", "image"])),
        // A header claiming 20000×20000: refused before any pixel buffer is made.
        ("?image_type=Anime", vec![("image", huge.as_slice())], serde_json::json!(["body", "image"])),
    ] {
        let (status, v) = describe(addr, query, &parts);
        assert_eq!((status, &v["detail"][0]["loc"]), (422, &loc), "{query}: {v}");
    }

    // With the tagger installed (files the server picks up without a restart): Fooocus's tags.
    common::install_models(
        dir.path(),
        &[("clip_vision", "describe/wd-v1-4-moat-tagger-v2.onnx"), ("clip_vision", "describe/wd-v1-4-moat-tagger-v2.csv")],
    );
    for case in refs["cases"].as_array().unwrap() {
        let rgb: Vec<u8> = case["input"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
        let png = common::png_rgb(case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32, &rgb);
        let (status, v) = describe(addr, "?image_type=Anime", &[("image", &png)]);
        assert_eq!(status, 200, "{}: {v}", case["name"]);
        assert_eq!(v, serde_json::json!({"describe": case["tags"]}), "{}", case["name"]);
    }

    // With the captioner installed: Photo answers Fooocus's caption (seed 0), v1 default and explicit.
    common::install_models(dir.path(), &[("clip_vision", "describe/model_base_caption_capfilt_large.pth")]);
    let captions = json(&std::fs::read(common::all_fixtures().join("describe/blip.json")).unwrap());
    for case in refs["cases"].as_array().unwrap() {
        let want = captions["cases"].as_array().unwrap().iter().find(|c| c["name"] == case["name"] && c["seed"] == 0).unwrap();
        let rgb: Vec<u8> = case["input"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
        let png = common::png_rgb(case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32, &rgb);
        for query in ["", "?image_type=Photo"] {
            let (status, v) = describe(addr, query, &[("image", &png)]);
            assert_eq!(status, 200, "{}{query}: {v}", case["name"]);
            assert_eq!(v, serde_json::json!({"describe": want["caption"]}), "{}{query}", case["name"]);
        }
    }
    assert_eq!(common::get(addr, "/ping"), (200, "\"pong\"".to_string()));
}
