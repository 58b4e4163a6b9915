//! The Fooocus-API as a focal plugin (first slice: `/ping` and synchronous v1 text-to-image).
//! Request parsing, defaults and validation live here; the host only runs the engine.

wit_bindgen::generate!({ world: "endpoint", path: "../../wit" });

mod base64;
mod text_to_image;

use exports::focal::plugin::handler::{Guest, Request, Response};

struct FooocusApi;

pub(crate) fn json(status: u16, value: &serde_json::Value) -> Response {
    Response {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: value.to_string().into_bytes(),
    }
}

impl Guest for FooocusApi {
    fn handle(req: Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/ping") => json(200, &serde_json::json!("pong")),
            ("POST", "/v1/generation/text-to-image") => text_to_image::handle(&req),
            (_, "/ping" | "/v1/generation/text-to-image") => json(405, &serde_json::json!({"detail": "Method Not Allowed"})),
            _ => json(404, &serde_json::json!({"detail": "Not Found"})),
        }
    }
}

export!(FooocusApi);
