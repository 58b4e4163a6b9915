//! Engines, files, tools and documentation routes.

use serde_json::{json, Value};

use crate::exports::focal::plugin::handler::{Request, Response};
use crate::fields::{self, field, required, Field, Kind};
use crate::focal::plugin::{catalog, engine, files};
use crate::{header, json_response, unprocessable};

pub fn all_models() -> Response {
    json_response(200, &json!({"model_filenames": catalog::checkpoints(), "lora_filenames": catalog::loras()}))
}

/// The styles the loaded prompt steps offer (the built-in `fooocus_styles` step gives
/// "Random Style" and Fooocus's 277; operators add or swap style plugins).
pub fn styles() -> Response {
    json_response(200, &json!(crate::focal::plugin::prompts::styles()))
}

pub fn clean_vram() -> Response {
    engine::release_memory();
    json_response(200, &json!({"message": "ok"}))
}

/// `GET /files/<date>/<name>`: the saved file, converted when `Accept` names exactly another
/// image format (as the seed). Missing files are 404 (the seed answered 500).
pub fn file(req: &Request) -> Response {
    let rel = req.path.trim_start_matches("/files/");
    let format = match header(req, "accept").map(str::trim) {
        Some("image/png") => Some("png"),
        Some("image/jpg" | "image/jpeg") => Some("jpeg"),
        Some("image/webp") => Some("webp"),
        _ => None,
    };
    match files::read(rel, format) {
        Some(f) => Response { status: 200, headers: vec![("content-type".into(), f.content_type)], body: f.body },
        None => json_response(404, &json!({"detail": "Not Found"})),
    }
}

pub const MASK_MODELS: &[&str] =
    &["u2net", "u2netp", "u2net_human_seg", "u2net_cloth_seg", "silueta", "isnet-general-use", "isnet-anime", "sam"];

pub const GENERATE_MASK: &[Field] = &[
    required("image", Kind::Str),
    field("mask_model", Kind::Enum(MASK_MODELS), "\"isnet-general-use\""),
    field("cloth_category", Kind::Enum(&["full", "upper", "lower"]), "\"full\""),
    field("dino_prompt_text", Kind::Str, "\"\""),
    field("sam_model", Kind::Enum(&["vit_b", "vit_l", "vit_h"]), "\"vit_b\""),
    field("box_threshold", Kind::Float(0.0, 1.0), "0.3"),
    field("text_threshold", Kind::Float(0.0, 1.0), "0.25"),
    field("sam_max_detections", Kind::Int(0, 10), "0"),
    field("dino_erode_or_dilate", Kind::Int(-64, 64), "0"),
    field("dino_debug", Kind::Bool, "false"),
];

fn not_available(what: &str) -> Response {
    json_response(501, &json!({"detail": format!("{what} needs auxiliary models that this focal version cannot run yet")}))
}

/// The request is validated as the seed does; the segmentation itself is not available.
pub fn generate_mask(req: &Request) -> Response {
    let raw = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(o)) => o,
        _ => {
            return unprocessable(
                vec![fields::error_item(
                    "model_attributes_type",
                    &[json!("body")],
                    "Input should be a valid dictionary",
                    &Value::Null,
                    None,
                )],
                Value::Null,
            )
        }
    };
    let mut errors = vec![];
    let body = fields::parse(GENERATE_MASK, &raw, &[json!("body")], &mut errors);
    if !errors.is_empty() {
        return unprocessable(errors, Value::Object(raw));
    }
    not_available(&format!("generate_mask with mask_model '{}'", body["mask_model"].as_str().unwrap_or("")))
}

pub fn root() -> Response {
    Response {
        status: 200,
        headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
        body: b"Swagger-UI to: <a href=\"/docs\">/docs</a>".to_vec(),
    }
}

/// Swagger UI for `/openapi.json`, loaded from the CDN as FastAPI's `/docs` does.
pub fn docs() -> Response {
    let html = r#"<!DOCTYPE html>
<html><head><title>focal — Fooocus-API - Swagger UI</title>
<link type="text/css" rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui', layout: 'BaseLayout', deepLinking: true});</script>
</body></html>"#;
    Response { status: 200, headers: vec![("content-type".into(), "text/html; charset=utf-8".into())], body: html.as_bytes().to_vec() }
}
