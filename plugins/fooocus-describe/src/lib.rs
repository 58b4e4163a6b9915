//! The Fooocus-API's `POST /v1/tools/describe-image` (multipart `image`, query `image_type` =
//! `Photo` (default) or `Anime`) → `{"describe": "…"}`, answered in the request as the seed does.
//! The words come from the host's `describe` interface (contract 0.2.0): BLIP's caption for Photo,
//! WD14 tags for Anime; a model the host cannot load (missing offline, say) is a 500 naming it.

wit_bindgen::generate!({ world: "endpoint", path: "../../wit/focal-plugin@0.2.0" });

use exports::focal::plugin::handler::{Guest, Request, Response};
use focal::plugin::describe::{describe, Style};
use focal::plugin::images::Image;
use http_kit::fastapi::{error_item, unprocessable_body};
use serde_json::{json, Value};

fn json_response(status: u16, value: &Value) -> Response {
    Response { status, headers: vec![("content-type".into(), "application/json".into())], body: value.to_string().into_bytes() }
}

fn unprocessable(kind: &str, loc: [&str; 2], msg: &str, input: Value) -> Response {
    let item = error_item(kind, &[json!(loc[0]), json!(loc[1])], msg, &input, None);
    json_response(422, &unprocessable_body(vec![item], Value::Null))
}

fn describe_image(req: &Request) -> Response {
    let image_type = http_kit::query_param(&req.query, "image_type").unwrap_or_else(|| "Photo".into());
    let style = match image_type.as_str() {
        "Photo" => Style::Photo,
        "Anime" => Style::Anime,
        _ => return unprocessable("enum", ["query", "image_type"], "Input should be 'Photo' or 'Anime'", json!(image_type)),
    };
    let parts = http_kit::parse(http_kit::header(&req.headers, "content-type").unwrap_or(""), &req.body).unwrap_or_default();
    let Some(upload) = parts.into_iter().find(|p| p.name == "image" && !p.data.is_empty()) else {
        return unprocessable("missing", ["body", "image"], "Field required", Value::Null);
    };
    // The host decodes under its image limits (size, pixels, format) before anything runs.
    let image = match Image::decode(&upload.data) {
        Ok(image) => image,
        Err(why) => return unprocessable("value_error", ["body", "image"], &format!("Value error, {why}"), Value::Null),
    };
    match describe(&image, style) {
        Ok(text) => json_response(200, &json!({ "describe": text })),
        Err(why) => json_response(500, &json!({ "detail": why })),
    }
}

struct FooocusDescribe;

impl Guest for FooocusDescribe {
    fn handle(req: Request) -> Response {
        if req.method != "POST" {
            return json_response(405, &json!({"detail": "Method Not Allowed"}));
        }
        describe_image(&req)
    }
}

export!(FooocusDescribe);
