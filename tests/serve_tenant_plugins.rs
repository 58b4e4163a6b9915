//! Black-box: a tenant's own endpoint plugins, installed through the admin API, served under
//! `/t/<tenant>/…` to that tenant's key only, running as that tenant, within its plan's limits (a
//! version asking more is refused while the previous one keeps serving).
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{json, request};

const ADMIN: &str = "X-Admin-Key: adm\r\n";

fn built(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(focal_runtime::BUILT_PLUGINS_DIR).join(format!("{name}.wasm"))).unwrap()
}

fn key(k: &str) -> String {
    format!("X-API-KEY: {k}\r\n")
}

fn install(addr: &str, tenant: &str, manifest: &str, wasm: &[u8]) -> u16 {
    let body = serde_json::json!({"manifest": manifest, "component": common::b64encode(wasm)}).to_string();
    request(addr, "PUT", &format!("/admin/tenants/{tenant}/plugins"), ADMIN, &body).0
}

/// Poll until `path` answers `want` (the watcher compiles within a second or so).
fn eventually(addr: &str, path: &str, headers: &str, want: &dyn Fn(u16, &str) -> bool) -> String {
    let t = Instant::now();
    loop {
        let (status, raw) = request(addr, "GET", path, headers, "");
        let body = String::from_utf8_lossy(&raw).into_owned();
        if want(status, &body) {
            return body;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{path}: still {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tenant_plugins_are_theirs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve_tiny(dir.path(), &["--admin-key", "adm"]);
    let addr = &server.addr;
    let new_tenant = |name: &str, quota: serde_json::Value| {
        let (status, raw) = request(addr, "POST", "/admin/tenants", ADMIN, &serde_json::json!({"name": name, "quota": quota}).to_string());
        assert_eq!(status, 201);
        json(&raw)["key"].as_str().unwrap().to_string()
    };
    let a = new_tenant("acme", serde_json::json!({"plugin_memory_mb": 64}));
    let b = new_tenant("bolt", serde_json::json!({}));

    // Acme's studio (a 0.2.0 endpoint using the engine), at /t/acme/studio.
    let studio = "name = \"studio\"\nroutes = [\"/studio\"]\ncapabilities = [\"engine\"]\n[limits]\nmemory_mb = 64\ntimeout_ms = 60000\n";
    assert_eq!(install(addr, "acme", studio, &built("studio")), 202);
    eventually(addr, "/t/acme/studio/catalog", &key(&a), &|s, _| s == 200);
    assert_eq!(request(addr, "GET", "/t/acme/studio/catalog", &key(&b), "").0, 404, "only acme's key reaches acme's plugins");
    assert_eq!(request(addr, "GET", "/t/acme/studio/catalog", "", "").0, 403);
    assert_eq!(request(addr, "GET", "/studio/catalog", &key(&a), "").0, 404, "not served outside the tenant prefix");

    // Its jobs are acme's: the built-in Fooocus-API sees them for acme's key only.
    let job = r#"{"prompt": "a fox", "width": 64, "height": 64, "steps": 1, "seed": 2, "wait": true}"#;
    let (status, raw) = request(addr, "POST", "/t/acme/studio/jobs", &key(&a), job);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw));
    let id = json(&raw)["id"].as_str().unwrap().to_string();
    let query = |k: &str| request(addr, "GET", &format!("/v1/generation/query-job?job_id={id}"), &key(k), "");
    assert_eq!(json(&query(&a).1)["job_stage"], "SUCCESS");
    assert_eq!(query(&b).0, 404);

    // Plan limits: a version asking more memory than acme's plan is refused; the old one serves on.
    let hello = |greeting: &str, memory: u32| {
        format!("name = \"hello\"\nroutes = [\"/hello\"]\n[limits]\nmemory_mb = {memory}\n[config]\ngreeting = \"{greeting}\"\n")
    };
    assert_eq!(install(addr, "acme", &hello("One", 32), &built("hello")), 202);
    eventually(addr, "/t/acme/hello/Ada", &key(&a), &|s, body| s == 200 && body.contains("One"));
    assert_eq!(install(addr, "acme", &hello("Two", 512), &built("hello")), 202);
    std::thread::sleep(Duration::from_millis(1500));
    let (_, raw) = request(addr, "GET", "/t/acme/hello/Ada", &key(&a), "");
    assert!(String::from_utf8_lossy(&raw).contains("One"), "the refused version does not serve");
    assert_eq!(install(addr, "acme", &hello("Three", 64), &built("hello")), 202);
    eventually(addr, "/t/acme/hello/Ada", &key(&a), &|s, body| s == 200 && body.contains("Three"));
    let served = json(&request(addr, "GET", "/admin/tenants/acme/plugins", ADMIN, "").1);
    assert_eq!(served["served"], serde_json::json!(["hello", "studio"]), "{served}");
    assert_eq!(request(addr, "DELETE", "/admin/tenants/acme/plugins/hello", ADMIN, "").0, 200);
    eventually(addr, "/t/acme/hello/Ada", &key(&a), &|s, _| s == 404);
    assert_eq!(install(addr, "nobody", studio, &built("studio")), 404);
}
