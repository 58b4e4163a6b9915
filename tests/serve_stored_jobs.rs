//! Black-box: a job database written by an older focal (tests/fixtures/stored-jobs, contract
//! 0.1.0 rows) is listed and served after an upgrade: history, query-job, the persistent
//! history shape and the result file.
mod common;

use common::{get, json};

const DONE: &str = "376056dd-a6d4-49c4-b022-5e890931855c";
const FAILED: &str = "5c5d9ff6-05a1-40ed-af11-435e181d586b";

fn start(dir: &std::path::Path, extra: &[&str]) -> common::Server {
    let fixture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stored-jobs");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(fixture.join("focal.db"), dir.join("data/focal.db")).unwrap();
    let day = dir.join("outputs/files/2026-12-05");
    std::fs::create_dir_all(&day).unwrap();
    let png = format!("{DONE}-0.png");
    std::fs::copy(fixture.join("files/2026-12-05").join(&png), day.join(&png)).unwrap();
    common::serve_tiny(dir, extra)
}

#[test]
fn jobs_stored_by_an_older_focal_are_listed_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let addr = &server.addr;

    let history = json(get(addr, "/v1/generation/job-history").1.as_bytes());
    let ids: Vec<&str> = history["history"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&DONE) && ids.contains(&FAILED), "{history}");
    assert!(history["queue"].as_array().unwrap().is_empty(), "finished jobs are not requeued: {history}");

    let done = json(get(addr, &format!("/v1/generation/query-job?job_id={DONE}")).1.as_bytes());
    assert_eq!(done["job_stage"], "SUCCESS", "{done}");
    assert_eq!(done["job_result"][0]["seed"], "7", "{done}");
    let url = done["job_result"][0]["url"].as_str().unwrap();
    let path = &url[url.find("/files/").unwrap()..];
    let (status, body) = common::request(addr, "GET", path, "", "");
    assert_eq!(status, 200);
    let stored = std::fs::read(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/stored-jobs/files/2026-12-05/{DONE}-0.png")),
    )
    .unwrap();
    assert_eq!(body, stored, "the stored file, byte for byte");

    let failed = json(get(addr, &format!("/v1/generation/query-job?job_id={FAILED}")).1.as_bytes());
    assert_eq!(failed["job_stage"], "ERROR", "{failed}");

    // The seed's persistent shape reads the stored request back.
    drop(server);
    let server = common::serve_tiny(dir.path(), &["--persistent"]);
    let history = json(get(&server.addr, &format!("/v1/generation/job-history?job_id={DONE}")).1.as_bytes());
    let text = history.to_string();
    assert!(text.contains("a stored job"), "{history}");
}
