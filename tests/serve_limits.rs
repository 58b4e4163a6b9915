//! Black-box: no request can take the server down. Each input whose size would decide an
//! allocation (an image header claiming 100000², a 10 MB prompt, a huge generation area, too
//! many images, an oversized body) gets its 4xx naming the field, nothing is queued, and the
//! same process then still answers `/ping` and runs a text-to-image job.
mod common;

use common::{json, multipart, request, request_bytes};

/// The 422's first error location, as a dotted path under `body`.
fn location(body: &[u8]) -> String {
    let v = json(body);
    v["detail"][0]["loc"]
        .as_array()
        .unwrap_or_else(|| panic!("no loc in {v}"))
        .iter()
        .map(|l| l.to_string().trim_matches('"').to_string())
        .collect::<Vec<_>>()
        .join(".")
}

#[test]
fn oversized_inputs_are_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::serve_tiny(dir.path(), &["--max-body-mb", "16"]);
    let addr = server.addr.clone();
    let bomb = common::png_claiming(100_000, 100_000);

    // v1 multipart upload: the header is checked before any pixel buffer exists.
    let (headers, form) = multipart(&[("input_image", &bomb), ("uov_method", b"Vary (Subtle)")]);
    let (status, body) = request_bytes(&addr, "POST", "/v1/generation/image-upscale-vary", &headers, &form);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert_eq!(location(&body), "body.input_image");
    assert!(String::from_utf8_lossy(&body).contains("100000×100000"), "{}", String::from_utf8_lossy(&body));

    // v2 base64 and data URL.
    for image in [common::b64encode(&bomb), format!("data:image/png;base64,{}", common::b64encode(&bomb))] {
        let req = serde_json::json!({"input_image": image, "uov_method": "Vary (Strong)"}).to_string();
        let (status, body) = request(&addr, "POST", "/v2/generation/image-upscale-vary", "", &req);
        assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
        assert_eq!(location(&body), "body.input_image");
    }
    // An inpaint's mask is checked like its image.
    let small = common::b64encode(&common::png_rgb(2, 2, &[9; 12]));
    let req = serde_json::json!({"input_image": small, "input_mask": common::b64encode(&bomb)}).to_string();
    let (status, body) = request(&addr, "POST", "/v2/generation/image-inpaint-outpaint", "", &req);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert_eq!(location(&body), "body.input_mask");
    // An outpaint margin that would make a canvas past the image limit: 422 naming that margin,
    // nothing queued.
    let req = serde_json::json!({"input_image": small, "outpaint_selections": ["Left", "Top"], "outpaint_distance_left": 2_000_000_000u32,
        "outpaint_distance_top": 3, "async_process": true})
    .to_string();
    let (status, body) = request(&addr, "POST", "/v2/generation/image-inpaint-outpaint", "", &req);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert_eq!(location(&body), "body.outpaint_distance_left");
    assert!(String::from_utf8_lossy(&body).contains("limit"), "{}", String::from_utf8_lossy(&body));
    let req =
        serde_json::json!({"prompt": "x", "image_prompts": [{"cn_img": common::b64encode(&bomb), "cn_type": "ImagePrompt"}]}).to_string();
    let (status, body) = request(&addr, "POST", "/v2/generation/text-to-image-with-ip", "", &req);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert_eq!(location(&body), "body.image_prompts.0.cn_img");

    // A 10 MB prompt: refused at the edge, naming the field, without echoing 10 MB back.
    let huge = "a".repeat(10 << 20);
    let (status, body) = request(&addr, "POST", "/v1/generation/text-to-image", "", &serde_json::json!({"prompt": huge}).to_string());
    assert_eq!(status, 422);
    assert!(body.len() < 4096, "{} bytes echoed", body.len());
    assert_eq!(location(&body), "body.prompt");
    assert_eq!(json(&body)["detail"][0]["type"], "string_too_long");
    let (status, body) =
        request(&addr, "POST", "/v1/generation/text-to-image", "", &serde_json::json!({"negative_prompt": "n".repeat(70_000)}).to_string());
    assert_eq!((status, location(&body)), (422, "body.negative_prompt".to_string()));

    // A generation area the engine could not hold, and too many images.
    for (req, loc) in [
        (r#"{"prompt": "x", "aspect_ratios_selection": "8192*8192"}"#, "body.aspect_ratios_selection"),
        (r#"{"prompt": "x", "aspect_ratios_selection": "100000*100000"}"#, "body.aspect_ratios_selection"),
        (r#"{"prompt": "x", "image_number": 100000}"#, "body.image_number"),
    ] {
        let (status, body) = request(&addr, "POST", "/v1/generation/text-to-image", "", req);
        assert_eq!(status, 422, "{req}: {}", String::from_utf8_lossy(&body));
        assert_eq!(location(&body), loc, "{req}");
    }

    // A body over --max-body-mb: 413 with the JSON error shape.
    let (status, body) =
        request_bytes(&addr, "POST", "/v1/generation/text-to-image", "Content-Type: application/json\r\n", &vec![b' '; 17 << 20]);
    assert_eq!(status, 413);
    assert!(json(&body)["detail"].as_str().unwrap().contains("limit"), "{}", String::from_utf8_lossy(&body));
    // A client that declares such a body and waits for `100 Continue` is refused before it sends.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let head = "POST /v1/generation/text-to-image HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                    Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 999999999\r\n\r\n";
        s.write_all(head.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }

    // Nothing was queued, and the same process still serves.
    assert!(common::alive(&mut server), "the server died");
    let queue = json(&request(&addr, "GET", "/v1/generation/job-queue", "", "").1);
    assert_eq!(queue["running_size"], 0, "{queue}");
    assert_eq!(common::get(&addr, "/ping"), (200, "\"pong\"".to_string()));
    let png = common::first_image(
        &addr,
        r#"{"prompt": "a cat", "aspect_ratios_selection": "64*64", "require_base64": true,
            "advanced_params": {"sampler_name": "euler", "overwrite_step": 2}}"#,
    );
    assert!(png.starts_with(b"\x89PNG"));
}

/// `read_wildcards_in_order` is a top-level field of the seed's request: image i takes line i.
#[test]
fn wildcards_are_read_in_order_when_the_top_level_field_asks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/wildcards")).unwrap();
    let words: Vec<String> = (0..10).map(|i| format!("word{i}")).collect();
    std::fs::write(dir.path().join("models/wildcards/w.txt"), words.join("\n")).unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    let body = r#"{"prompt": "__w__", "style_selections": [], "image_number": 3, "image_seed": 5, "read_wildcards_in_order": true,
        "aspect_ratios_selection": "64*64", "require_base64": true, "save_meta": true,
        "advanced_params": {"sampler_name": "euler", "overwrite_step": 1}}"#;
    let (status, raw) = request(&server.addr, "POST", "/v1/generation/text-to-image", "", body);
    assert_eq!(status, 200);
    let prompts: Vec<String> = json(&raw)
        .as_array()
        .unwrap()
        .iter()
        .map(|img| {
            let b64 = img["base64"].as_str().unwrap();
            let png = common::b64decode(b64.split_once(";base64,").map_or(b64, |(_, d)| d));
            let text = String::from_utf8_lossy(&png).to_string();
            let start = text.find("{\"adm_guidance\"").expect("fooocus metadata");
            let meta: serde_json::Value = serde_json::Deserializer::from_str(&text[start..]).into_iter().next().unwrap().unwrap();
            meta["prompt"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(prompts, ["word0", "word1", "word2"]);
}

/// The outputs folder is often a shared mount: a symlink placed there (to a file or a folder
/// elsewhere) is not served.
#[test]
fn files_does_not_follow_symlinks_out_of_the_outputs_folder() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    let secret = dir.path().join("secret.png");
    std::fs::write(&secret, b"\x89PNG secret").unwrap();
    let day = dir.path().join("outputs/files/2024-01-02");
    std::fs::create_dir_all(&day).unwrap();
    std::fs::write(day.join("real.png"), b"\x89PNG real").unwrap();
    std::os::unix::fs::symlink(&secret, day.join("link.png")).unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("outputs/files/2024-01-03")).unwrap();
    assert_eq!(common::get(&server.addr, "/files/2024-01-02/real.png").0, 200);
    assert_eq!(common::get(&server.addr, "/files/2024-01-02/link.png").0, 404);
    assert_eq!(common::get(&server.addr, "/files/2024-01-03/secret.png").0, 404);
}

/// The README's run command works as the first command on a fresh machine: it installs the
/// plugins' target itself; and the release binary carries no DWARF.
#[test]
fn the_run_command_installs_the_wasm_target_and_release_builds_are_lean() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let run = readme.lines().find(|l| l.contains("-- serve --models-dir models")).expect("run command");
    assert!(run.starts_with("rustup target add wasm32-wasip2 && cargo run --release"), "{run}");
    let cargo: toml::Value = toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let release = &cargo["profile"]["release"];
    assert_eq!(release["debug"].as_bool(), Some(false), "{release}");
    assert_eq!(release["strip"].as_str(), Some("debuginfo"), "{release}");
}

/// Requests hyper would reject itself (with an empty body) get the JSON error shape of every
/// other 4xx: a malformed request line, an over-long target, too many or too large headers,
/// conflicting Content-Length.
#[test]
fn malformed_requests_get_json_errors() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve_in(dir.path(), &[]);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(), 400),
        (b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n".to_vec(), 400),
        (b"G(T /ping HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (b"GET /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 400),
        (format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(), 414),
        (format!("GET /ping HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(150)).into_bytes(), 431),
        (format!("GET /ping HTTP/1.1\r\nX-A: {}\r\n\r\n", "b".repeat(100_000)).into_bytes(), 431),
    ];
    for (raw, status) in cases {
        let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        s.write_all(&raw).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{status}: no response: {text:?}"));
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{status}: {head}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        assert!(json(body.as_bytes())["detail"].is_string(), "{body}");
    }
    // A keep-alive connection with a good request before the bad one gets both answers.
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 OK") && text.contains("\"pong\""), "{text}");
    assert!(text.contains("HTTP/1.1 400 Bad Request") && text.contains("Content-Length"), "{text}");
    assert_eq!(common::get(&server.addr, "/ping").0, 200);
}
