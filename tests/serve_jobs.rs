//! Black-box: the Fooocus-API job routes of `focal serve` driven over HTTP as a client would —
//! async jobs and query-job, queue and history (across a restart), files and formats, stop,
//! queue full, webhooks, image routes, docs and the engine/tool routes.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{b64decode, get, json, multipart, request, request_bytes, serve_tiny, wait_job};
use serde_json::Value;

const T2I: &str = "/v1/generation/text-to-image";

/// A small, quick txt2img body; `extra` is spliced into the JSON object.
fn body(extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { ", " };
    format!(
        r#"{{"prompt": "a red fox", "image_seed": 7, "aspect_ratios_selection": "64*64",
            "advanced_params": {{"sampler_name": "euler", "scheduler_name": "karras", "overwrite_step": 3}}{sep}{extra}}}"#
    )
}

fn post(addr: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, raw) = request(addr, "POST", path, "", body);
    (status, json(&raw))
}

/// The path part of a result URL (`http://host:port/files/...`).
fn url_path(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    rest[rest.find('/').unwrap()..].to_string()
}

#[test]
fn async_jobs_queue_history_files_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_tiny(dir.path(), &[]);
    let addr = server.addr.clone();

    // async_process: answered at once with a WAITING job, then polled to SUCCESS.
    let (status, job) = post(&addr, T2I, &body(r#""async_process": true, "image_number": 2, "save_name": "fox""#));
    assert_eq!(status, 200, "{job}");
    assert_eq!((job["job_type"].as_str(), job["job_result"].is_null()), (Some("Text to Image"), true));
    assert!(matches!(job["job_stage"].as_str(), Some("WAITING" | "RUNNING")), "{job}");
    let id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID4 job id");
    let done = wait_job(&addr, &id);
    assert_eq!(done["job_stage"], "SUCCESS", "{done}");
    assert_eq!(done["job_progress"], 100);
    let results = done["job_result"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!((results[0]["seed"].as_str(), results[1]["seed"].as_str()), (Some("7"), Some("8")), "seed + i per image");
    let first = url_path(results[0]["url"].as_str().unwrap());
    assert!(first.starts_with("/files/") && first.ends_with("/fox-0.png"), "{first}");

    // The file is served as saved (PNG with the Fooocus metadata chunks) …
    let (status, png) = request_bytes(&addr, "GET", &first, "", b"");
    assert_eq!(status, 200);
    assert!(png.starts_with(b"\x89PNG"));
    let text = String::from_utf8_lossy(&png);
    assert!(
        text.contains("fooocus_scheme") && text.contains("\"prompt\": \"a red fox\"") && text.contains("\"seed\": \"7\""),
        "metadata in the PNG"
    );
    // The default styles as the prompt pipeline applied them ("Fooocus V2" needs the expansion
    // model, which this host lacks: dropped like an unknown style).
    assert!(text.contains(r#""styles": "['Fooocus Enhance', 'Fooocus Sharp']""#), "applied styles, as Python's str(list)");
    assert!(text.contains(r#""full_prompt": ["cinematic still a red fox . emotional, harmonious"#), "styled workload");
    // … and converted when Accept names another format exactly.
    let (status, jpeg) = request_bytes(&addr, "GET", &first, "Accept: image/jpeg\r\n", b"");
    assert_eq!((status, &jpeg[..2]), (200, &[0xFF, 0xD8][..]));
    assert_eq!(get(&addr, "/files/2020-01-01/nothing.png").0, 404);
    assert_eq!(get(&addr, "/files/..%2F..%2Fetc/passwd.png").0, 404);

    // query-job details: unknown id, missing id.
    let (status, raw) = request(&addr, "GET", "/v1/generation/query-job?job_id=nope", "", "");
    assert_eq!(status, 404);
    assert_eq!(json(&raw)["job_type"], "Not Found");
    let (status, raw) = request(&addr, "GET", "/v1/generation/query-job", "", "");
    assert_eq!(status, 422);
    assert_eq!(json(&raw)["detail"][0]["loc"], serde_json::json!(["query", "job_id"]));

    // jpg and webp outputs, a1111 metadata, base64 with the matching data: prefix.
    let (_, list) = post(&addr, T2I, &body(r#""save_extension": "jpg", "meta_scheme": "a1111", "require_base64": true"#));
    let b64 = list[0]["base64"].as_str().unwrap();
    let jpg = b64decode(b64.strip_prefix("data:image/jpeg;base64,").expect("jpeg data URL"));
    assert_eq!(&jpg[..2], &[0xFF, 0xD8]);
    let text = String::from_utf8_lossy(&jpg);
    assert!(text.contains("Exif") && text.contains("cinematic still a red fox . emotional"), "a1111 parameters in EXIF: {text}");
    assert!(text.contains("\nSteps: 3, Sampler: Euler Karras, Seed: 7") && text.contains("Raw prompt: a red fox"), "a1111 fields");
    assert!(list[0]["url"].as_str().unwrap().ends_with(".jpg"));
    let (_, list) = post(&addr, T2I, &body(r#""save_extension": "webp", "save_meta": false"#));
    let (status, webp) = request_bytes(&addr, "GET", &url_path(list[0]["url"].as_str().unwrap()), "", b"");
    assert_eq!((status, &webp[..4], &webp[8..12]), (200, &b"RIFF"[..], &b"WEBP"[..]));
    assert!(!String::from_utf8_lossy(&webp).contains("fooocus"), "save_meta false writes no metadata");

    // Queue and history.
    let (_, raw) = request(&addr, "GET", "/v1/generation/job-queue", "", "");
    let queue = json(&raw);
    assert_eq!((queue["running_size"].as_u64(), queue["finished_size"].as_u64()), (Some(0), Some(3)));
    let (_, raw) = request(&addr, "GET", "/v1/generation/job-history", "", "");
    let history = json(&raw);
    assert_eq!(history["history"].as_array().unwrap().len(), 3);
    assert_eq!(history["history"][2]["job_id"], id.as_str(), "newest first");
    assert_eq!(history["history"][2]["is_finished"], true);
    let (_, raw) = request(&addr, "GET", "/v1/generation/job-history?page=1&page_size=2", "", "");
    assert_eq!(json(&raw)["history"].as_array().unwrap().len(), 1);

    // Killed (not shut down): the finished jobs, their files and the history survive.
    drop(server);
    let server = serve_tiny(dir.path(), &["--persistent"]);
    let addr = server.addr.clone();
    let again = wait_job(&addr, &id);
    let results_of = |v: &Value| -> Vec<(Value, String)> {
        v["job_result"].as_array().unwrap().iter().map(|r| (r["seed"].clone(), url_path(r["url"].as_str().unwrap()))).collect()
    };
    assert_eq!(results_of(&again), results_of(&done));
    assert_eq!(request_bytes(&addr, "GET", &first, "", b"").1, png);
    let (_, raw) = request(&addr, "GET", &format!("/v1/generation/job-history?job_id={id}"), "", "");
    let h = json(&raw);
    let record = &h["history"][0];
    assert_eq!(record["task_info"]["task_id"], id.as_str(), "{h}");
    assert_eq!(record["task_info"]["finish_reason"], "SUCCESS");
    assert_eq!(record["params"]["save_name"], "fox");
    assert!(record["task_info"]["result_url"].as_str().unwrap().contains("fox-1.png"));

    // Delete removes the record and its files.
    let (_, raw) = request(&addr, "GET", &format!("/v1/generation/job-history?job_id={id}&delete=true"), "", "");
    assert_eq!(json(&raw)["message"], "Deleted");
    assert_eq!(get(&addr, &first).0, 404);
    assert_eq!(
        request(&addr, "GET", &format!("/v1/generation/job-history?job_id={id}&delete=true"), "", "").1,
        br#"{"message":"Not found"}"#
    );
}

#[test]
fn stop_queue_full_and_history_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_tiny(dir.path(), &["--queue-size", "2", "--queue-history", "1"]);
    let addr = server.addr.clone();
    // A long job: 4 images × 200 steps.
    let long = r#"{"prompt": "x", "image_seed": 1, "image_number": 4, "aspect_ratios_selection": "64*64", "async_process": true,
        "advanced_params": {"sampler_name": "euler", "scheduler_name": "karras", "overwrite_step": 200}}"#;
    let (_, first) = post(&addr, T2I, long);
    let (_, second) = post(&addr, T2I, long);
    assert_eq!(second["job_stage"], "WAITING");
    // Two jobs waiting or running: the third is refused as the seed does (HTTP 200).
    let (status, full) = post(&addr, T2I, &body(""));
    assert_eq!((status, full[0]["finish_reason"].as_str()), (200, Some("QUEUE_IS_FULL")));
    let (status, full) = post(&addr, T2I, &body(r#""async_process": true"#));
    assert_eq!(
        (status, full["job_stage"].as_str(), full["job_result"][0]["finish_reason"].as_str()),
        (200, Some("ERROR"), Some("QUEUE_IS_FULL"))
    );
    let (status, raw) = request(&addr, "POST", T2I, "Accept: image/png\r\n", &body(""));
    assert_eq!((status, raw.as_slice()), (409, &b"QUEUE_IS_FULL"[..]));

    // The first job runs (reported as RUNNING, with a step preview) until stopped.
    let id = first["job_id"].as_str().unwrap();
    let start = Instant::now();
    let running = loop {
        let (_, raw) = request(&addr, "GET", &format!("/v1/generation/query-job?job_id={id}&require_step_preview=true"), "", "");
        let v = json(&raw);
        if v["job_stage"] == "RUNNING" && v["job_step_preview"].is_string() {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "{v}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let preview = b64decode(running["job_step_preview"].as_str().unwrap());
    assert!(preview.starts_with(b"\x89PNG"), "raw base64 PNG preview");
    assert!(running["job_status"].as_str().unwrap().contains("Sampling"));
    let (status, raw) = request(&addr, "POST", "/v1/generation/stop", "", "");
    assert_eq!((status, json(&raw)), (200, serde_json::json!({"msg": "success"})));
    let stopped = wait_job(&addr, id);
    assert_eq!(stopped["job_stage"], "SUCCESS", "stopped jobs end with the images made so far, as the seed");
    assert!(stopped["job_result"].as_array().unwrap().len() < 4, "{stopped}");
    // Only the running job was stopped; the next one runs. Stop it too.
    let second_id = second["job_id"].as_str().unwrap();
    while json(&request(&addr, "GET", &format!("/v1/generation/query-job?job_id={second_id}"), "", "").1)["job_stage"] != "RUNNING" {
        std::thread::sleep(Duration::from_millis(20));
    }
    request(&addr, "POST", "/v1/generation/stop", "", "");
    wait_job(&addr, second_id);
    // --queue-history 1: the first job has been forgotten.
    assert_eq!(request(&addr, "GET", &format!("/v1/generation/query-job?job_id={id}"), "", "").0, 404);
    let (_, raw) = request(&addr, "GET", "/v1/generation/job-queue", "", "");
    assert_eq!(json(&raw)["finished_size"], 1);
}

/// A webhook receiver that answers 500 to its first `failures` requests, then 200.
fn webhook_listener(failures: usize) -> (String, mpsc::Receiver<(usize, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let status = if n < failures { "500 Internal Server Error" } else { "200 OK" };
            write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
            let _ = tx.send((n, serde_json::from_slice(&body).unwrap_or(Value::Null)));
        }
    });
    (url, rx)
}

#[test]
fn webhooks_are_retried_until_delivered() {
    let (global, global_rx) = webhook_listener(0);
    let (flaky, flaky_rx) = webhook_listener(2);
    let dir = tempfile::tempdir().unwrap();
    let server = serve_tiny(dir.path(), &["--webhook-url", &global]);
    let addr = server.addr.clone();

    // The global webhook, for a sync job.
    let (_, list) = post(&addr, T2I, &body(""));
    let (_, payload) = global_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(payload["job_result"][0]["url"], list[0]["url"]);
    assert_eq!(payload["job_result"][0]["seed"], "7");
    assert_eq!(payload["job_stage"], "SUCCESS");

    // A per-request webhook that fails twice is retried with backoff and delivered the third time.
    let (_, job) = post(&addr, T2I, &body(&format!(r#""async_process": true, "webhook_url": "{flaky}""#)));
    let id = job["job_id"].as_str().unwrap();
    let got: Vec<(usize, Value)> = (0..3).map(|_| flaky_rx.recv_timeout(Duration::from_secs(60)).unwrap()).collect();
    assert!(got.iter().all(|(_, p)| p["job_id"] == id), "{got:?}");
    assert_eq!(got.last().unwrap().0, 2);
    assert!(flaky_rx.recv_timeout(Duration::from_secs(3)).is_err(), "no more deliveries after a success");
    assert!(global_rx.try_recv().is_err(), "the request's own webhook replaces the global one");
}

#[test]
fn image_routes_parse_validate_and_fail_honestly() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_tiny(dir.path(), &["--allow-private-fetch"]);
    let addr = server.addr.clone();
    let png = std::fs::read(common::fixtures().join("reference/t2i_euler_karras.png")).unwrap();

    // v1 multipart: parsed and queued; without the upscaler file (downloads are off here) the
    // job fails naming the file.
    let (headers, form) =
        multipart(&[("input_image", &png), ("uov_method", b"Upscale (2x)"), ("async_process", b"true"), ("advanced_params", b"{not json")]);
    let (status, raw) = request_bytes(&addr, "POST", "/v1/generation/image-upscale-vary", &headers, &form);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw));
    let job = json(&raw);
    assert_eq!(job["job_type"], "Image Upscale or Variation");
    let done = wait_job(&addr, job["job_id"].as_str().unwrap());
    assert_eq!(done["job_stage"], "ERROR");
    assert!(done["job_status"].as_str().unwrap().contains("upscale_models/fooocus_upscaler_s409985e5.bin"), "{done}");
    // Sync: the seed's empty list for a failed job.
    let (headers, form) = multipart(&[("input_image", &png), ("uov_method", b"Upscale (Fast 2x)")]);
    let (status, raw) = request_bytes(&addr, "POST", "/v1/generation/image-upscale-vary", &headers, &form);
    assert_eq!((status, raw.as_slice()), (200, &b"[]"[..]));
    // v1 form validation: 422 naming the field (the seed answered 500).
    for (parts, loc) in [
        (vec![("uov_method", &b"Upscale (2x)"[..])], "input_image"),
        (vec![("input_image", &png[..]), ("uov_method", b"Vary")], "uov_method"),
        (vec![("input_image", &png[..]), ("uov_method", b"Disabled"), ("image_number", b"many")], "image_number"),
        (vec![("input_image", &png[..]), ("uov_method", b"Disabled"), ("loras", b"[oops")], "loras"),
    ] {
        let (headers, form) = multipart(&parts);
        let (status, raw) = request_bytes(&addr, "POST", "/v1/generation/image-upscale-vary", &headers, &form);
        assert_eq!(status, 422, "{loc}: {}", String::from_utf8_lossy(&raw));
        assert_eq!(json(&raw)["detail"][0]["loc"].as_array().unwrap().last().unwrap(), loc);
    }
    let (headers, form) = multipart(&[("input_image", &png), ("outpaint_selections", b"Left,Top"), ("async_process", b"1")]);
    let (status, raw) = request_bytes(&addr, "POST", "/v1/generation/image-inpaint-outpaint", &headers, &form);
    assert_eq!((status, json(&raw)["job_type"].as_str()), (200, Some("Image Inpaint or Outpaint")));
    let (headers, form) = multipart(&[("input_image", &png), ("outpaint_selections", b"Left, Middle")]);
    assert_eq!(request_bytes(&addr, "POST", "/v1/generation/image-inpaint-outpaint", &headers, &form).0, 422);

    // v2 JSON: base64, data: URL and http URL inputs (fetched by the host).
    let b64: String = {
        let mut s = String::new();
        // Encode with the test's own helper round trip: reuse the server's files route.
        let (_, list) = post(&addr, T2I, &body(r#""require_base64": true"#));
        s.push_str(list[0]["base64"].as_str().unwrap());
        s
    };
    let (status, job) = post(&addr, "/v2/generation/image-upscale-vary", &format!(r#"{{"input_image": "{b64}", "async_process": true}}"#));
    assert_eq!((status, job["job_type"].as_str()), (200, Some("Image Upscale or Variation")), "{job}");
    let (_, list) = post(&addr, T2I, &body(""));
    let url = list[0]["url"].as_str().unwrap();
    let (status, job) = post(
        &addr,
        "/v2/generation/image-prompt",
        &format!(r#"{{"image_prompts": [{{"cn_img": "{url}", "cn_type": "FaceSwap"}}], "async_process": true}}"#),
    );
    assert_eq!((status, job["job_type"].as_str()), (200, Some("Image Prompt")), "{job}");
    for (body, loc) in [
        (r#"{"uov_method": "Upscale (2x)"}"#.to_string(), "input_image"),
        (r#"{"input_image": "%%%"}"#.to_string(), "input_image"),
        (r#"{"input_image": "aGVsbG8="}"#.to_string(), "input_image"),
        (format!(r#"{{"input_image": "{url}x"}}"#), "input_image"),
    ] {
        let (status, v) = post(&addr, "/v2/generation/image-upscale-vary", &body);
        assert_eq!(status, 422, "{body}: {v}");
        assert_eq!(v["detail"][0]["loc"], serde_json::json!(["body", loc]), "{body}: {v}");
    }
    // The remaining image routes, each with a minimal valid request: queued under its job type,
    // and (image prompts included) never answered with an unconditioned image.
    let (headers, form) = multipart(&[("cn_img1", &png), ("cn_type1", b"PyraCanny"), ("async_process", b"true")]);
    let (_, raw) = request_bytes(&addr, "POST", "/v1/generation/image-prompt", &headers, &form);
    let v = json(&raw);
    assert_eq!(v["job_type"], "Image Prompt", "{v}");
    assert_eq!(wait_job(&addr, v["job_id"].as_str().unwrap())["job_stage"], "ERROR");
    // Enhance needs mask models this engine does not run: a clear 501, nothing queued.
    let last_job = || serde_json::from_str::<Value>(&get(&addr, "/v1/generation/job-queue").1).unwrap()["last_job_id"].clone();
    let last_before = last_job();
    let (headers, form) = multipart(&[("enhance_input_image", &png), ("async_process", b"true")]);
    let (status, raw) = request_bytes(&addr, "POST", "/v1/generation/image-enhance", &headers, &form);
    assert_eq!(status, 501, "{}", String::from_utf8_lossy(&raw));
    assert!(json(&raw)["detail"].as_str().unwrap().contains("image-enhance"), "{}", String::from_utf8_lossy(&raw));
    let (status, v) = post(
        &addr,
        "/v2/generation/image-enhance",
        &format!(r#"{{"enhance_input_image": "{b64}", "enhance_ctrlnets": [{{"enhance_enabled": true}}], "async_process": true}}"#),
    );
    assert_eq!(status, 501, "{v}");
    assert_eq!(last_job(), last_before, "nothing queued");
    // A malformed enhance request is still a 422 naming the field.
    let (status, v) = post(&addr, "/v2/generation/image-enhance", r#"{"enhance_input_image": ""}"#);
    assert_eq!((status, v["detail"][0]["loc"].clone()), (422, serde_json::json!(["body", "enhance_ctrlnets"])), "{v}");
    for (path, body, job_type) in [
        (
            "/v2/generation/text-to-image-with-ip",
            format!(r#"{{"image_prompts": [{{"cn_img": "{b64}"}}], "async_process": true}}"#),
            "Text to Image",
        ),
        (
            "/v2/generation/image-inpaint-outpaint",
            format!(r#"{{"input_image": "{b64}", "outpaint_selections": ["Left"], "async_process": true}}"#),
            "Image Inpaint or Outpaint",
        ),
    ] {
        let (status, v) = post(&addr, path, &body);
        assert_eq!((status, v["job_type"].as_str()), (200, Some(job_type)), "{path}: {v}");
        let done = wait_job(&addr, v["job_id"].as_str().unwrap());
        assert_eq!(done["job_stage"], "ERROR", "{path}: {done}");
    }
    let (headers, form) = multipart(&[("image", &png)]);
    // Describe: neither Photo's captioner nor Anime's tagger is installed, and they cannot be fetched.
    for query in ["", "?image_type=Anime"] {
        let (status, raw) = request_bytes(&addr, "POST", &format!("/v1/tools/describe-image{query}"), &headers, &form);
        assert_eq!(status, 500, "{query}");
        assert!(json(&raw)["detail"].as_str().unwrap().contains("clip_vision/"), "{query}: {}", String::from_utf8_lossy(&raw));
    }
    assert_eq!(request_bytes(&addr, "POST", "/v1/tools/describe-image?image_type=Sketch", &headers, &form).0, 422);

    let (status, v) = post(&addr, "/v2/generation/image-prompt", "{}");
    assert_eq!((status, v["detail"][0]["loc"].clone()), (422, serde_json::json!(["body", "image_prompts"])));
}

#[test]
fn url_inputs_to_private_addresses_are_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_tiny(dir.path(), &[]);
    let addr = server.addr.clone();
    let (status, v) = post(&addr, "/v2/generation/image-upscale-vary", &format!(r#"{{"input_image": "http://{addr}/files/x.png"}}"#));
    assert_eq!(status, 422, "{v}");
    assert!(v["detail"][0]["msg"].as_str().unwrap().contains("private or loopback"), "{v}");
}

#[test]
fn documentation_engine_and_tool_routes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/loras/sub")).unwrap();
    std::fs::write(dir.path().join("models/loras/sub/style.safetensors"), b"x").unwrap();
    let server = serve_tiny(dir.path(), &["--apikey", "k"]);
    let addr = server.addr.clone();
    let key = "X-API-KEY: k\r\n";

    let (status, html) = request(&addr, "GET", "/", key, "");
    assert_eq!((status, String::from_utf8_lossy(&html).as_ref()), (200, "Swagger-UI to: <a href=\"/docs\">/docs</a>"));
    // Docs are readable without the key, as in the seed.
    let (status, docs) = get(&addr, "/docs");
    assert!(status == 200 && docs.contains("/openapi.json"));
    let (status, raw) = request(&addr, "GET", "/openapi.json", "", "");
    assert_eq!(status, 200);
    let spec = json(&raw);
    assert_eq!(spec["openapi"], "3.1.0");
    for path in [
        "/v1/generation/text-to-image",
        "/v1/generation/image-upscale-vary",
        "/v1/generation/image-inpaint-outpaint",
        "/v1/generation/image-prompt",
        "/v1/generation/image-enhance",
        "/v2/generation/text-to-image-with-ip",
        "/v2/generation/image-upscale-vary",
        "/v2/generation/image-inpaint-outpaint",
        "/v2/generation/image-prompt",
        "/v2/generation/image-enhance",
        "/v1/generation/query-job",
        "/v1/generation/job-queue",
        "/v1/generation/job-history",
        "/v1/generation/stop",
        "/v1/engines/all-models",
        "/v1/engines/styles",
        "/v1/tools/generate_mask",
        "/files/{date}/{file_name}",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} documented");
    }
    let common = &spec["paths"]["/v1/generation/text-to-image"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(common["properties"]["performance_selection"]["enum"][4], "Hyper-SD");
    assert_eq!(common["properties"]["guidance_scale"]["default"], 4.0);
    check_refs(&spec, &spec);

    let (status, raw) = request(&addr, "GET", "/v1/engines/all-models", key, "");
    assert_eq!(status, 200);
    assert_eq!(json(&raw), serde_json::json!({"model_filenames": ["tiny.safetensors"], "lora_filenames": ["sub/style.safetensors"]}));
    assert_eq!(request(&addr, "POST", "/v1/engines/refresh-models", key, "").1, raw);
    assert_eq!(request(&addr, "GET", "/v1/engines/styles", key, "").0, 200);
    assert_eq!(json(&request(&addr, "GET", "/v1/engines/clean_vram", key, "").1), serde_json::json!({"message": "ok"}));
    let (status, raw) = request(&addr, "POST", "/v1/tools/generate_mask", key, "{}");
    assert_eq!((status, json(&raw)["detail"][0]["loc"].clone()), (422, serde_json::json!(["body", "image"])));
    let (status, raw) = request(&addr, "POST", "/v1/tools/generate_mask", key, r#"{"image": "aGk=", "mask_model": "u2net"}"#);
    assert_eq!(status, 501, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(request(&addr, "GET", "/v1/generation/text-to-image", key, "").0, 405);
    // Wrong or missing key: 403 on the API routes.
    assert_eq!(request(&addr, "GET", "/v1/engines/all-models", "", "").0, 403);
    assert_eq!(request(&addr, "POST", "/v1/generation/stop", "X-API-KEY: nope\r\n", "").0, 403);
}

/// Every `$ref` in the document resolves.
fn check_refs(root: &Value, v: &Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let target = r.trim_start_matches("#/").split('/').fold(root, |node, key| &node[key]);
                assert!(target.is_object(), "dangling {r}");
            }
            map.values().for_each(|x| check_refs(root, x));
        }
        Value::Array(items) => items.iter().for_each(|x| check_refs(root, x)),
        _ => {}
    }
}
