//! Black-box: what an operator runs a multi-tenant focal with — the admin API (tenants made,
//! rotated, revoked over HTTP), `/health`, `/ready` and `/metrics`, whose counters add up after a
//! bounded mixed load from several tenants (loopback only): no lost, duplicated or cross-tenant job.
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{json, request};

const ADMIN: &str = "X-Admin-Key: adm-secret\r\n";

fn key_header(key: &str) -> String {
    format!("X-API-KEY: {key}\r\n")
}

fn new_tenant(addr: &str, name: &str, quota: serde_json::Value) -> String {
    let (status, raw) = request(addr, "POST", "/admin/tenants", ADMIN, &serde_json::json!({"name": name, "quota": quota}).to_string());
    let v = json(&raw);
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

fn metrics(addr: &str) -> prometheus_parse::Scrape {
    let (status, raw) = request(addr, "GET", "/metrics", ADMIN, "");
    assert_eq!(status, 200);
    let text = String::from_utf8(raw).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// Sum of a counter or gauge's samples whose labels include `labels`.
fn total(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn admin_api_health_and_metrics_under_a_mixed_load() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve_tiny(dir.path(), &["--admin-key", "adm-secret"]);
    let addr = server.addr.clone();
    assert_eq!(request(&addr, "GET", "/health", "", "").0, 200);
    assert_eq!(request(&addr, "GET", "/ready", "", "").0, 200, "the tiny checkpoint is there");
    assert_eq!(request(&addr, "GET", "/metrics", "", "").0, 403, "guarded by the admin key");
    assert_eq!(request(&addr, "GET", "/admin/tenants", "X-Admin-Key: nope\r\n", "").0, 403);
    let doc = json(&request(&addr, "GET", "/admin/openapi.json", "", "").1);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/admin/tenants"]["post"].is_object() && doc["paths"]["/metrics"]["get"].is_object(), "{doc}");

    let names = ["t1", "t2", "t3"];
    let keys: BTreeMap<&str, String> = names.iter().map(|n| (*n, new_tenant(&addr, n, serde_json::json!({"max_steps": 2})))).collect();
    let (status, raw) = request(&addr, "POST", "/admin/tenants", ADMIN, r#"{"name": "t1"}"#);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&raw));
    let listed = json(&request(&addr, "GET", "/admin/tenants", ADMIN, "").1);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert!(!listed.to_string().contains(&keys["t1"]), "keys are never listed");

    // The load: each tenant 4 jobs from its own thread, plus requests that fail in known ways.
    let body = |seed: u32| {
        format!(
            r#"{{"prompt": "p", "aspect_ratios_selection": "64*64", "image_seed": {seed}, "async_process": true, "advanced_params": {{"overwrite_step": 1}}}}"#
        )
    };
    let submitted: Vec<(String, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let (addr, key) = (addr.clone(), keys[name].clone());
                s.spawn(move || {
                    let mut ids = Vec::new();
                    for seed in 0..4 {
                        let (status, raw) = request(&addr, "POST", "/v1/generation/text-to-image", &key_header(&key), &body(seed));
                        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw));
                        ids.push(json(&raw)["job_id"].as_str().unwrap().to_string());
                        let _ = request(&addr, "GET", "/v1/generation/job-queue", &key_header(&key), "");
                    }
                    // Over its step limit: 429, not queued.
                    let over = body(9).replace(r#""overwrite_step": 1"#, r#""overwrite_step": 5"#);
                    assert_eq!(request(&addr, "POST", "/v1/generation/text-to-image", &key_header(&key), &over).0, 429);
                    // A bad request: 422.
                    assert_eq!(request(&addr, "POST", "/v1/generation/text-to-image", &key_header(&key), "{").0, 422);
                    (key, ids)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(request(&addr, "GET", "/v1/generation/job-queue", &key_header("focal_nobody"), "").0, 403);
    for (key, ids) in &submitted {
        for id in ids {
            let start = std::time::Instant::now();
            loop {
                let v = json(&request(&addr, "GET", &format!("/v1/generation/query-job?job_id={id}"), &key_header(key), "").1);
                if v["job_stage"] == "SUCCESS" {
                    break;
                }
                assert!(v["job_stage"] != "ERROR" && start.elapsed().as_secs() < 300, "{v}");
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
        }
        // Each tenant's history holds exactly its own jobs.
        let history = json(&request(&addr, "GET", "/v1/generation/job-history", &key_header(key), "").1);
        let seen: BTreeSet<String> =
            history["history"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap().to_string()).collect();
        assert_eq!(seen, ids.iter().cloned().collect::<BTreeSet<_>>(), "{history}");
    }

    let m = metrics(&addr);
    for name in names {
        let t = [("tenant", name)];
        assert_eq!(total(&m, "focal_jobs_submitted_total", &t), 4.0, "{name}");
        assert_eq!(total(&m, "focal_jobs_finished_total", &[("tenant", name), ("outcome", "success")]), 4.0, "{name}");
        assert_eq!(total(&m, "focal_jobs_finished_total", &t), 4.0, "{name}: none failed or was stopped");
        assert_eq!(total(&m, "focal_jobs_queued", &t), 0.0, "{name}");
    }
    assert_eq!(total(&m, "focal_requests_refused_total", &[("reason", "quota")]), 3.0);
    assert!(total(&m, "focal_requests_refused_total", &[("reason", "key")]) >= 1.0);
    assert_eq!(total(&m, "focal_http_requests_total", &[("plugin", "fooocus_api"), ("status", "422")]), 3.0);
    let steps = m.samples.iter().find(|s| s.metric == "focal_engine_step_seconds").expect("engine steps recorded");
    match &steps.value {
        prometheus_parse::Value::Histogram(buckets) => assert!(buckets.last().unwrap().count >= 12.0, "{buckets:?}"),
        other => panic!("{other:?}"),
    }

    // Rotate and revoke over the admin API.
    let (status, raw) = request(&addr, "POST", "/admin/tenants/t1/rotate", ADMIN, "");
    assert_eq!(status, 200);
    let new = json(&raw)["key"].as_str().unwrap().to_string();
    assert_eq!(request(&addr, "GET", "/v1/generation/job-queue", &key_header(&keys["t1"]), "").0, 403);
    assert_eq!(request(&addr, "GET", "/v1/generation/job-queue", &key_header(&new), "").0, 200);
    assert_eq!(request(&addr, "DELETE", "/admin/tenants/t1", ADMIN, "").0, 200);
    assert_eq!(request(&addr, "GET", "/v1/generation/job-queue", &key_header(&new), "").0, 403);
}

/// `--log-format json`: one JSON object a line; a request's lines carry its id and tenant, a job's
/// lines its id and tenant.
#[test]
fn json_logs_carry_request_tenant_and_job() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let server = common::serve_tiny_logged(dir.path(), &["--admin-key", "adm-secret", "--log-format", "json"], &log);
    let addr = &server.addr;
    let key = new_tenant(addr, "logged", serde_json::json!({}));
    let body = r#"{"prompt": "p", "aspect_ratios_selection": "64*64", "advanced_params": {"overwrite_step": 1}}"#;
    let (status, raw) = request(addr, "POST", "/v1/generation/text-to-image", &key_header(&key), body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let in_span =
        |name: &'static str| lines.iter().filter(move |l| l["spans"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == name)));
    let request_line = in_span("request").find(|l| l["span"]["tenant"] == "logged").expect("a request line with its tenant");
    assert!(request_line["span"]["id"].as_str().is_some_and(|id| id.len() == 32), "{request_line}");
    let job_line = in_span("job").find(|l| l["spans"][0]["tenant"] == "logged").expect("a job line with its tenant");
    assert!(job_line["spans"][0]["id"].as_str().is_some_and(|id| id.len() == 36), "{job_line}");
}
