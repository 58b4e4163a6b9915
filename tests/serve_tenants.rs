//! Black-box: tenants through the real binary (`focal tenants add`, then `focal serve` on the same
//! data folder) and the built-in Fooocus-API plugin: each tenant sees only its own jobs and files
//! (another tenant's ids answer as unknown ones), quotas answer 429 naming the limit and queue
//! nothing, and the worker takes tenants in turns.
mod common;

use std::process::Command;

use common::{json, request};

/// `focal tenants add NAME ARGS…` in `dir/data`; returns the key it prints.
fn add_tenant(dir: &std::path::Path, name: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(["tenants", "add", name, "--data-dir"])
        .arg(dir.join("data"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("focal_") && key.len() > 40, "{key}");
    key
}

fn header(key: &str) -> String {
    format!("X-API-KEY: {key}\r\n")
}

fn t2i(extra: &str) -> String {
    format!(
        r#"{{"prompt": "a cat", "aspect_ratios_selection": "64*64", "image_seed": 3, "async_process": true,
            "advanced_params": {{"overwrite_step": 1}}{extra}}}"#
    )
}

fn submit(addr: &str, key: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, raw) = request(addr, "POST", "/v1/generation/text-to-image", &header(key), body);
    (status, json(&raw))
}

fn wait(addr: &str, key: &str, id: &str) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let (_, raw) = request(addr, "GET", &format!("/v1/generation/query-job?job_id={id}"), &header(key), "");
        let v = json(&raw);
        if matches!(v["job_stage"].as_str(), Some("SUCCESS" | "ERROR")) {
            return v;
        }
        assert!(start.elapsed().as_secs() < 300, "job {id} never finished: {v}");
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
}

#[test]
fn tenants_see_only_their_own_jobs_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = add_tenant(dir.path(), "alice", &[]);
    let b = add_tenant(dir.path(), "bob", &[]);
    // A third-party plugin (the 0.2.0 studio example) beside the built-in Fooocus-API: its engine
    // calls are scoped to the request's tenant too.
    let plugins = dir.path().join("data/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(
        plugins.join("studio.wasm"),
        std::fs::read(std::path::Path::new(focal_runtime::BUILT_PLUGINS_DIR).join("studio.wasm")).unwrap(),
    )
    .unwrap();
    std::fs::write(plugins.join("studio.toml"), std::fs::read("plugins/studio/plugin.toml").unwrap()).unwrap();
    // And a hostile one that reaches for other owners' jobs and files with every call it has.
    std::fs::write(
        plugins.join("hostile.wasm"),
        std::fs::read(std::path::Path::new(focal_runtime::BUILT_PLUGINS_DIR).join("hostile.wasm")).unwrap(),
    )
    .unwrap();
    std::fs::write(plugins.join("hostile.toml"), "name = \"hostile\"\nroutes = [\"/hostile\"]\ncapabilities = [\"engine\", \"files\"]\n")
        .unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    let addr = &server.addr;

    // With tenants, a key is required (the docs and files stay open, as in the seed).
    assert_eq!(request(addr, "GET", "/v1/generation/job-queue", "", "").0, 403);
    assert_eq!(request(addr, "GET", "/v1/generation/job-queue", &header("focal_wrong"), "").0, 403);
    assert_eq!(request(addr, "GET", "/openapi.json", "", "").0, 200);

    let (status, job) = submit(addr, &a, &t2i(r#", "require_base64": false"#));
    assert_eq!(status, 200, "{job}");
    let id = job["job_id"].as_str().unwrap().to_string();
    let done = wait(addr, &a, &id);
    assert_eq!(done["job_stage"], "SUCCESS", "{done}");
    let url = done["job_result"][0]["url"].as_str().unwrap();
    let file = format!("/files/{}", url.split_once("/files/").unwrap().1);
    assert_eq!(request(addr, "GET", &file, &header(&a), "").0, 200, "alice reads her file");

    // Bob gets for alice's ids exactly what he gets for ids that do not exist.
    let unknown = "00000000-0000-4000-8000-000000000000";
    let same = |path_of: &dyn Fn(&str) -> String, method: &str| {
        let theirs = request(addr, method, &path_of(&id), &header(&b), "");
        let none = request(addr, method, &path_of(unknown), &header(&b), "");
        let text = |r: &(u16, Vec<u8>)| String::from_utf8_lossy(&r.1).replace(&id, "ID").replace(unknown, "ID");
        assert_eq!((theirs.0, text(&theirs)), (none.0, text(&none)), "{}", path_of(&id));
    };
    same(&|id| format!("/v1/generation/query-job?job_id={id}&require_step_preview=true"), "GET");
    same(&|id| format!("/v1/generation/job-history?job_id={id}"), "GET");
    same(&|id| format!("/v1/generation/job-history?job_id={id}&delete=true"), "GET");
    same(&|id| format!("/studio/jobs/{id}"), "GET");
    same(&|id| format!("/studio/jobs/{id}/images/0"), "GET");
    assert_eq!(request(addr, "GET", &format!("/studio/jobs/{id}/images/0"), &header(&a), "").0, 200, "alice's own through studio");
    let rel = file.trim_start_matches("/files/");
    let peek =
        |key: &str| String::from_utf8(request(addr, "GET", &format!("/hostile/peek?job={id}&file={rel}"), &header(key), "").1).unwrap();
    assert_eq!(peek(&a), "get=true history=1 listed=true image_file=true preview=false file=true", "alice's own");
    assert_eq!(peek(&b), "get=false history=0 listed=false image_file=false preview=false file=false", "bob reaches nothing of alice's");
    let unknown_file = file.rsplit_once('/').map(|(d, _)| format!("{d}/{unknown}-0.png")).unwrap();
    let theirs = request(addr, "GET", &file, &header(&b), "");
    let none = request(addr, "GET", &unknown_file, &header(&b), "");
    assert_eq!((theirs.0, none.0), (404, 404), "bob cannot read alice's file");
    assert_eq!(request(addr, "GET", &file, "", "").0, 404, "nor can a request without a key");

    // Queue and history count only one's own jobs.
    let queue = |key: &str| json(&request(addr, "GET", "/v1/generation/job-queue", &header(key), "").1);
    assert_eq!(queue(&b)["finished_size"], 0);
    assert!(queue(&b)["last_job_id"].is_null());
    assert_eq!(queue(&a)["finished_size"], 1);
    let history = |key: &str| json(&request(addr, "GET", "/v1/generation/job-history", &header(key), "").1);
    assert!(!history(&b).to_string().contains(&id));
    assert!(history(&a).to_string().contains(&id));
    // Alice's job survived bob's delete attempt.
    assert_eq!(wait(addr, &a, &id)["job_stage"], "SUCCESS");
}

#[test]
fn quotas_answer_429_naming_the_limit_and_queue_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = add_tenant(dir.path(), "sizes", &["--max-pixels", "4096", "--max-steps", "2", "--images-per-day", "3"]);
    let queued = add_tenant(dir.path(), "queued", &["--max-queued", "1"]);
    let rate = add_tenant(dir.path(), "rate", &["--requests-per-minute", "2"]);
    let server = common::serve_tiny(dir.path(), &[]);
    let addr = &server.addr;
    let over = |key: &str, body: &str, limit: &str| {
        let (status, raw) = request(addr, "POST", "/v1/generation/text-to-image", &header(key), body);
        let v = json(&raw);
        assert_eq!((status, v["limit"].as_str()), (429, Some(limit)), "{v}");
        assert!(v["detail"].as_str().is_some_and(|d| d.contains("tenant")), "{v}");
        v
    };
    over(&sizes, &t2i("").replace("64*64", "128*128"), "max_pixels");
    over(&sizes, &t2i("").replace(r#""overwrite_step": 1"#, r#""overwrite_step": 3"#), "max_steps");
    over(&sizes, &t2i(r#", "image_number": 4"#), "images_per_day");
    let v = over(&sizes, &t2i(r#", "image_number": 4"#), "images_per_day");
    assert!(v["retry_after_s"].as_u64().unwrap() > 0);
    let q = json(&request(addr, "GET", "/v1/generation/job-queue", &header(&sizes), "").1);
    assert_eq!((q["running_size"].as_u64(), q["finished_size"].as_u64()), (Some(0), Some(0)), "nothing was queued: {q}");
    let (status, ok) = submit(addr, &sizes, &t2i(r#", "image_number": 3"#));
    assert_eq!(status, 200, "within every limit: {ok}");

    // One unfinished job at a time: a slow first job (512², 4 steps), then a second at once.
    let slow = t2i("").replace("64*64", "512*512").replace(r#""overwrite_step": 1"#, r#""overwrite_step": 4"#);
    let (status, first) = submit(addr, &queued, &slow);
    assert_eq!(status, 200, "{first}");
    over(&queued, &t2i(""), "max_queued");
    wait(addr, &queued, first["job_id"].as_str().unwrap());
    assert_eq!(submit(addr, &queued, &t2i("")).0, 200, "the queue drained");

    // Two requests a minute, whatever they are.
    assert_eq!(request(addr, "GET", "/v1/generation/job-queue", &header(&rate), "").0, 200);
    assert_eq!(request(addr, "GET", "/v1/generation/job-queue", &header(&rate), "").0, 200);
    let (status, raw) = request(addr, "GET", "/v1/generation/job-queue", &header(&rate), "");
    assert_eq!((status, json(&raw)["limit"].as_str()), (429, Some("requests_per_minute")));
}

#[test]
fn tenants_take_turns_on_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let a = add_tenant(dir.path(), "a", &[]);
    let b = add_tenant(dir.path(), "b", &[]);
    let server = common::serve_tiny(dir.path(), &[]);
    let addr = &server.addr;
    // A slow first job keeps the worker busy while the rest queue up.
    let slow = t2i("").replace("64*64", "512*512").replace(r#""overwrite_step": 1"#, r#""overwrite_step": 4"#);
    let mut a_ids = vec![submit(addr, &a, &slow).1["job_id"].as_str().unwrap().to_string()];
    for _ in 0..9 {
        a_ids.push(submit(addr, &a, &t2i("")).1["job_id"].as_str().unwrap().to_string());
    }
    let b_id = submit(addr, &b, &t2i("")).1["job_id"].as_str().unwrap().to_string();
    // Bob's stop reaches only bob's running job: alice's slow one runs to its end.
    assert_eq!(request(addr, "POST", "/v1/generation/stop", &header(&b), "").0, 200);
    let started = |key: &str, id: &str| -> u64 {
        wait(addr, key, id);
        let (_, raw) = request(addr, "GET", &format!("/v1/generation/job-history?job_id={id}"), &header(key), "");
        let v = json(&raw);
        v["history"][0]["start_mills"].as_u64().unwrap_or_else(|| panic!("{v}"))
    };
    let b_start = started(&b, &b_id);
    let a_third = started(&a, &a_ids[2]);
    assert!(b_start < a_third, "b's job started at {b_start}, a's third at {a_third}");
    for id in &a_ids {
        let done = wait(addr, &a, id);
        assert_eq!((done["job_stage"].as_str(), done["job_status"].as_str()), (Some("SUCCESS"), Some("Finished")), "{done}");
    }
}
