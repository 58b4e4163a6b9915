//! The Fooocus-API (mrhan1993/Fooocus-API 0.5) as a focal plugin: every route, its request
//! parsing, defaults, validation and response shapes. The host runs the jobs, stores them and
//! their files, and fetches URL inputs under its policy.

wit_bindgen::generate!({ world: "endpoint", path: "../../wit/focal-plugin@0.2.0" });

mod base64;
mod endpoints;
mod fields;
mod generate;
mod jobs;
mod misc;
mod multipart;
mod openapi;
mod request;
mod task;

use exports::focal::plugin::handler::{Guest, Request, Response};
use serde_json::{json, Value};

struct FooocusApi;

pub(crate) fn json_response(status: u16, value: &Value) -> Response {
    Response { status, headers: vec![("content-type".into(), "application/json".into())], body: value.to_string().into_bytes() }
}

/// FastAPI's validation error (422).
pub(crate) fn unprocessable(detail: Vec<Value>, body: Value) -> Response {
    json_response(422, &http_kit::fastapi::unprocessable_body(detail, body))
}

pub(crate) fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    http_kit::header(&req.headers, name)
}

pub(crate) use http_kit::query_param;

pub(crate) fn host_config(key: &str) -> Option<String> {
    focal::plugin::config::get(key)
}

pub(crate) fn host_version() -> String {
    host_config("host.version").unwrap_or_default()
}

/// Absolute URL of a saved file (`--base-url`, or the address the server listens on).
pub(crate) fn file_url(path: &str) -> String {
    format!("{}{path}", host_config("host.base-url").unwrap_or_default())
}

/// A float as Python's `str()` writes it (`2.0`, not `2`).
pub(crate) fn python_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn route(req: &Request) -> Response {
    let method = req.method.as_str();
    let path = req.path.as_str();
    if let Some(e) = endpoints::ENDPOINTS.iter().find(|e| e.path == path) {
        return if method == "POST" { generate::handle(e, req) } else { method_not_allowed() };
    }
    if path.starts_with("/files/") {
        return if method == "GET" { misc::file(req) } else { method_not_allowed() };
    }
    let (expected, response): (&str, fn(&Request) -> Response) = match path {
        "/" => ("GET", |_| misc::root()),
        "/ping" => ("GET", |_| json_response(200, &json!("pong"))),
        "/docs" | "/redoc" => ("GET", |_| misc::docs()),
        "/openapi.json" => ("GET", |_| json_response(200, &openapi::document())),
        "/v1/generation/query-job" => ("GET", jobs::query_job),
        "/v1/generation/job-queue" => ("GET", |_| jobs::job_queue()),
        "/v1/generation/job-history" => ("GET", jobs::job_history),
        "/v1/generation/stop" => ("POST", |_| jobs::stop()),
        "/v1/engines/all-models" => ("GET", |_| misc::all_models()),
        // Gone from the seed at 0.3.33 but still called by older clients (python client, RunPod).
        "/v1/engines/refresh-models" => ("POST", |_| misc::all_models()),
        "/v1/engines/styles" => ("GET", |_| misc::styles()),
        "/v1/engines/clean_vram" => ("GET", |_| misc::clean_vram()),
        "/v1/tools/generate_mask" => ("POST", misc::generate_mask),
        _ => return json_response(404, &json!({"detail": "Not Found"})),
    };
    if method == expected || (method == "HEAD" && expected == "GET") {
        response(req)
    } else {
        method_not_allowed()
    }
}

fn method_not_allowed() -> Response {
    json_response(405, &json!({"detail": "Method Not Allowed"}))
}

impl Guest for FooocusApi {
    fn handle(req: Request) -> Response {
        route(&req)
    }
}

export!(FooocusApi);
