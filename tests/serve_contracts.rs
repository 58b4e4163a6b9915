//! Black-box: one server serves plugins of both contract versions side by side: a component
//! built against the frozen `focal:plugin@0.1.0` (a prebuilt fixture, never rebuilt) next to
//! 0.2.0 components: an endpoint with typed tasks, image handles, structured progress and the
//! catalog, and an image step the host runs on each saved image. The Fooocus-API (0.1.0,
//! built in) keeps serving in the same process.
mod common;

use std::path::{Path, PathBuf};

use common::{get, json, request};

fn built(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(focal_runtime::BUILT_PLUGINS_DIR).join(format!("{name}.wasm"))).unwrap()
}

fn fixture_plugin(file: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugins").join(file)).unwrap()
}

fn install(plugins: &Path, file: &str, wasm: &[u8], manifest: &str) {
    std::fs::create_dir_all(plugins).unwrap();
    std::fs::write(plugins.join(format!("{file}.wasm")), wasm).unwrap();
    std::fs::write(plugins.join(format!("{file}.toml")), manifest).unwrap();
}

#[test]
fn plugins_of_both_contract_versions_are_served_by_one_server() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("data/plugins");
    install(&plugins, "hello01", &fixture_plugin("hello-0.1.0.wasm"), "name = \"hello01\"\nroutes = [\"/hello01\"]\n");
    install(&plugins, "hello", &built("hello"), "name = \"hello\"\nroutes = [\"/hello\"]\n[config]\ngreeting = \"Hi\"\n");
    install(&plugins, "studio", &built("studio"), &std::fs::read_to_string("plugins/studio/plugin.toml").unwrap());
    install(&plugins, "grayscale", &built("grayscale"), "name = \"grayscale\"\n");
    let server = common::serve_tiny(dir.path(), &[]);
    let addr = &server.addr;

    // The same example, built against 0.1.0 and against 0.2.0.
    assert_eq!(get(addr, "/hello01/Ada"), (200, r#"{"greeting": "Hello, Ada!"}"#.to_string()));
    assert_eq!(get(addr, "/hello/Ada"), (200, r#"{"greeting": "Hi, Ada!"}"#.to_string()));
    assert_eq!(get(addr, "/ping").0, 200, "the built-in Fooocus-API (0.1.0) serves beside them");

    // The catalog lists what the engine accepts, the loaded image step included.
    let catalog = json(get(addr, "/studio/catalog").1.as_bytes());
    let list = |k: &str| {
        catalog[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k}: {catalog}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(list("samplers").contains(&"dpmpp_2m_sde_gpu".to_string()), "{catalog}");
    assert!(list("schedulers").contains(&"karras".to_string()), "{catalog}");
    assert_eq!(list("checkpoints"), ["tiny.safetensors"]);
    // The built-in step that prepares control images is an image step too.
    assert_eq!(list("image_steps"), ["fooocus-controls", "grayscale"]);
    assert_eq!(list("controls"), ["image-prompt", "face", "canny", "cpds"]);

    // A name outside the catalog is a 422 naming the field, before anything is queued.
    let (status, body) = request(addr, "POST", "/studio/jobs", "", r#"{"prompt": "x", "sampler": "nope"}"#);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["detail"][0]["loc"][1], "sampler");

    // A text-to-image job whose images pass through the image step: every saved pixel is grey.
    let job = r#"{"prompt": "a red apple", "width": 64, "height": 64, "steps": 2, "seed": 5, "images": 2,
                  "post_steps": [{"plugin": "grayscale", "options": {"amount": "1"}}], "wait": true}"#;
    let (status, body) = request(addr, "POST", "/studio/jobs", "", job);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let done = json(&body);
    assert_eq!(done["stage"], "success", "{done}");
    assert_eq!(done["progress"]["phase"], "finished", "{done}");
    assert_eq!(
        (done["progress"]["percent"].as_u64(), done["progress"]["images"].as_u64(), done["progress"]["steps"].as_u64()),
        (Some(100), Some(2), Some(2))
    );
    assert_eq!(done["images"].as_array().unwrap().len(), 2, "{done}");
    let id = done["id"].as_str().unwrap();
    for n in 0..2 {
        let (status, png) = request(addr, "GET", &format!("/studio/jobs/{id}/images/{n}"), "", "");
        assert_eq!(status, 200);
        let rgb = common::pixels(&png);
        assert!(rgb.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]), "image {n} is not grey");
        assert!(rgb.chunks_exact(3).any(|p| p[0] != rgb[0]), "image {n} is not a flat fill");
    }
    // Without the step, the same job is in colour (the step did the work).
    let colour = job.replace(r#""post_steps": [{"plugin": "grayscale", "options": {"amount": "1"}}],"#, "");
    let done = json(&request(addr, "POST", "/studio/jobs", "", &colour).1);
    let png = request(addr, "GET", &format!("/studio/jobs/{}/images/0", done["id"].as_str().unwrap()), "", "").1;
    assert!(common::pixels(&png).chunks_exact(3).any(|p| p[0] != p[1] || p[1] != p[2]), "the unstepped image is in colour");

    // A step's refusal fails its own job with the step's message.
    let bad = job.replace(r#""amount": "1""#, r#""amount": "lots""#);
    let failed = json(&request(addr, "POST", "/studio/jobs", "", &bad).1);
    assert_eq!(failed["stage"], "error", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("image step 'grayscale': amount 'lots' is not a number"), "{failed}");

    // A typed image task reaches the host with its image (one handle) and ends with an error
    // saying what this engine lacks, never with an unrelated result.
    let init = common::b64encode(
        &std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/stored-jobs/files/2026-12-05/376056dd-a6d4-49c4-b022-5e890931855c-0.png"),
        )
        .unwrap(),
    );
    let img2img =
        format!(r#"{{"prompt": "x", "width": 64, "height": 64, "steps": 2, "init_image": "{init}", "denoise": 0.5, "wait": true}}"#);
    // A typed image-to-image task runs (the input is brought to the requested 64×64).
    let varied = json(&request(addr, "POST", "/studio/jobs", "", &img2img).1);
    assert_eq!((varied["stage"].as_str(), varied["label"].as_str()), (Some("success"), Some("Image to Image")), "{varied}");
    assert_eq!(varied["images"].as_array().map(Vec::len), Some(1), "{varied}");
    let varied_id = varied["id"].as_str().unwrap().to_string();
    let (status, body) = request(addr, "POST", "/studio/jobs", "", r#"{"prompt": "x", "init_image": "aGVsbG8="}"#);
    assert_eq!(status, 422);
    assert_eq!(json(&body)["detail"][0]["loc"][1], "init_image", "{}", String::from_utf8_lossy(&body));

    // stop(id) answers for the owner's jobs only; delete forgets a finished one.
    assert_eq!(json(&request(addr, "POST", "/studio/jobs/no-such-job/stop", "", "").1)["stopped"], false);
    assert_eq!(json(&request(addr, "DELETE", &format!("/studio/jobs/{id}"), "", "").1)["deleted"], true);
    assert_eq!(get(addr, &format!("/studio/jobs/{id}")).0, 404);

    // Jobs of both contract versions share one queue and history.
    let history = json(get(addr, "/v1/generation/job-history").1.as_bytes());
    let ids: Vec<&str> = history["history"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&varied_id.as_str()), "{history}");
}
