//! `/openapi.json`, built from the same field tables that validate requests.

use serde_json::{json, Map, Value};

use crate::endpoints::{self, ENDPOINTS};
use crate::fields::schema;

fn json_op(summary: &str, body: Option<Value>, response: Value) -> Value {
    let mut op = json!({
        "summary": summary,
        "responses": {
            "200": {"description": "Successful Response", "content": {"application/json": {"schema": response}}},
            "422": {"description": "Validation Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}
        }
    });
    if let Some(b) = body {
        op["requestBody"] = b;
    }
    op
}

fn query(name: &str, schema: Value, required: bool) -> Value {
    json!({"name": name, "in": "query", "required": required, "schema": schema})
}

pub fn document() -> Value {
    let mut paths = Map::new();
    let gen_result = json!({"anyOf": [
        {"type": "array", "items": {"$ref": "#/components/schemas/GeneratedImageResult"}},
        {"$ref": "#/components/schemas/AsyncJobResponse"}
    ]});
    let accept = json!({"name": "accept", "in": "query", "required": false, "schema": {"type": "string"},
        "description": "Parameter to override 'Accept' header, 'image/png' for output bytes"});
    for e in ENDPOINTS {
        let body_schema = schema(&endpoints::fields_of(e));
        let mut body_schema = body_schema;
        if e.multipart {
            // Form fields that carry JSON text.
            for name in ["loras", "advanced_params"] {
                body_schema["properties"][name] = json!({"type": "string", "description": "JSON text"});
            }
        }
        let media = if e.multipart { "multipart/form-data" } else { "application/json" };
        let body = json!({"required": true, "content": {media: {"schema": body_schema}}});
        let mut op = json_op(e.summary, Some(body), gen_result.clone());
        op["parameters"] = json!([accept]);
        op["responses"]["200"]["content"]["image/png"] = json!({"schema": {"type": "string", "format": "binary"}});
        paths.insert(e.path.into(), json!({"post": op}));
    }
    let any = json!({});
    paths.insert("/".into(), json!({"get": {"summary": "Home", "responses": {"200": {"description": "Link to the docs", "content": {"text/html": {"schema": {"type": "string"}}}}}}}));
    paths.insert("/ping".into(), json!({"get": json_op("Ping", None, json!({"type": "string"}))}));
    let mut q = json_op("Query job", None, json!({"$ref": "#/components/schemas/AsyncJobResponse"}));
    q["parameters"] = json!([
        query("job_id", json!({"type": "string"}), true),
        query("require_step_preview", json!({"type": "boolean", "default": false}), false)
    ]);
    q["responses"]["404"] = json!({"description": "Job not found", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AsyncJobResponse"}}}});
    paths.insert("/v1/generation/query-job".into(), json!({"get": q}));
    paths.insert("/v1/generation/job-queue".into(), json!({"get": json_op("Job queue", None, json!({"type": "object", "properties": {
        "running_size": {"type": "integer"}, "finished_size": {"type": "integer"}, "last_job_id": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}))}));
    let mut h = json_op("Job history", None, any.clone());
    h["parameters"] = json!([
        query("job_id", json!({"type": "string"}), false),
        query("page", json!({"type": "integer", "default": 0}), false),
        query("page_size", json!({"type": "integer", "default": 20}), false),
        query("delete", json!({"type": "boolean", "default": false}), false),
    ]);
    paths.insert("/v1/generation/job-history".into(), json!({"get": h}));
    paths.insert(
        "/v1/generation/stop".into(),
        json!({"post": json_op("Stop the running job", None, json!({"type": "object", "properties": {"msg": {"type": "string"}}}))}),
    );
    let models = json!({"type": "object", "properties": {"model_filenames": {"type": "array", "items": {"type": "string"}}, "lora_filenames": {"type": "array", "items": {"type": "string"}}}});
    paths.insert("/v1/engines/all-models".into(), json!({"get": json_op("All models", None, models.clone())}));
    paths.insert("/v1/engines/refresh-models".into(), json!({"post": json_op("Refresh models (kept for older clients)", None, models)}));
    paths.insert(
        "/v1/engines/styles".into(),
        json!({"get": json_op("Styles", None, json!({"type": "array", "items": {"type": "string"}}))}),
    );
    paths.insert(
        "/v1/engines/clean_vram".into(),
        json!({"get": json_op("Unload models", None, json!({"type": "object", "properties": {"message": {"type": "string"}}}))}),
    );
    let mask_body = json!({"required": true, "content": {"application/json": {"schema": schema(crate::misc::GENERATE_MASK)}}});
    paths.insert("/v1/tools/generate_mask".into(), json!({"post": json_op("Generate a mask", Some(mask_body), json!({"type": "string"}))}));
    let describe_body = json!({"required": true, "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {"image": {"type": "string", "format": "binary"}}}}}});
    let mut d =
        json_op("Describe an image", Some(describe_body), json!({"type": "object", "properties": {"describe": {"type": "string"}}}));
    d["parameters"] = json!([query("image_type", json!({"type": "string", "enum": ["Photo", "Anime"], "default": "Photo"}), false)]);
    paths.insert("/v1/tools/describe-image".into(), json!({"post": d}));
    paths.insert("/files/{date}/{file_name}".into(), json!({"get": {
        "summary": "A generated file",
        "parameters": [
            {"name": "date", "in": "path", "required": true, "schema": {"type": "string"}},
            {"name": "file_name", "in": "path", "required": true, "schema": {"type": "string"}}
        ],
        "responses": {"200": {"description": "The image", "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}, "404": {"description": "No such file"}}
    }}));
    let finish = json!({"type": "string", "enum": ["SUCCESS", "QUEUE_IS_FULL", "USER_CANCEL", "ERROR"]});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Fooocus-API (focal)", "version": crate::host_version(), "description": "Fooocus-API compatible SDXL server; every route is served by the fooocus_api WebAssembly plugin."},
        "paths": paths,
        "components": {"schemas": {
            "GeneratedImageResult": {"type": "object", "required": ["seed", "finish_reason"], "properties": {
                "base64": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "url": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "seed": {"type": "string"},
                "finish_reason": finish
            }},
            "AsyncJobResponse": {"type": "object", "required": ["job_id", "job_type", "job_stage", "job_progress"], "properties": {
                "job_id": {"type": "string"},
                "job_type": {"type": "string", "enum": ["Text to Image", "Image Upscale or Variation", "Image Inpaint or Outpaint", "Image Prompt", "Image Enhancement", "Not Found"]},
                "job_stage": {"type": "string", "enum": ["WAITING", "RUNNING", "SUCCESS", "ERROR"]},
                "job_progress": {"type": "integer"},
                "job_status": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "job_step_preview": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "job_result": {"anyOf": [{"type": "array", "items": {"$ref": "#/components/schemas/GeneratedImageResult"}}, {"type": "null"}]}
            }},
            "HTTPValidationError": {"type": "object", "properties": {"detail": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}}},
            "ValidationError": {"type": "object", "required": ["loc", "msg", "type"], "properties": {
                "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                "msg": {"type": "string"},
                "type": {"type": "string"}
            }}
        }}
    })
}
