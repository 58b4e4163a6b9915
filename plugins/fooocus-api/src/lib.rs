//! The Fooocus-API (mrhan1993/Fooocus-API 0.5) as a focal plugin: every route, its request
//! parsing, defaults, validation and response shapes. The host runs the jobs, stores them and
//! their files, and fetches URL inputs under its policy.

wit_bindgen::generate!({ world: "endpoint", path: "../../wit/focal-plugin@0.1.0" });

mod base64;
mod endpoints;
mod fields;
mod generate;
mod jobs;
mod misc;
mod multipart;
mod openapi;
mod request;

use exports::focal::plugin::handler::{Guest, Request, Response};
use serde_json::{json, Value};

struct FooocusApi;

pub(crate) fn json_response(status: u16, value: &Value) -> Response {
    Response { status, headers: vec![("content-type".into(), "application/json".into())], body: value.to_string().into_bytes() }
}

/// Bodies larger than this (as JSON text) are not echoed back in a 422.
const MAX_ECHOED_BODY: usize = 64 << 10;

/// FastAPI's validation error: 422 `{"detail": [...], "body": ...}`; a body over
/// [`MAX_ECHOED_BODY`] is echoed as `null` (sending megabytes back helps nobody).
pub(crate) fn unprocessable(detail: Vec<Value>, body: Value) -> Response {
    let body = if body.to_string().len() > MAX_ECHOED_BODY { Value::Null } else { body };
    json_response(422, &json!({"detail": detail, "body": body}))
}

pub(crate) fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| percent_decode(k) == key)
        .map(|(_, v)| percent_decode(v))
}

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
        "/v1/tools/describe-image" => ("POST", misc::describe_image),
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
