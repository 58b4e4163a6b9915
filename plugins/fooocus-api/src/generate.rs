//! The ten generation endpoints: body parsing (JSON or multipart), validation, input images,
//! and the three output modes (sync JSON list, `async_process` job, `Accept: image/png`).

use serde_json::{json, Map, Value};

use crate::endpoints::{self, Endpoint};
use crate::exports::focal::plugin::handler::{Request, Response};
use crate::fields;
use crate::focal::plugin::engine::{self, JobInfo, JobSpec, JobStage, SubmitError};
use crate::focal::plugin::{fetch, files, log};
use crate::{header, json_response, multipart, unprocessable};
use crate::{request, task};

/// Longest a sync request waits in one host call before checking again.
const WAIT_SLICE_MS: u32 = 60_000;

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() & (i64::MAX as u64)
}

fn wants_png(req: &Request) -> bool {
    let query_accept = crate::query_param(&req.query, "accept");
    match query_accept {
        Some(a) => a == "image/png",
        None => header(req, "accept") == Some("image/png"),
    }
}

/// The body as a JSON object plus uploaded files. JSON is accepted without a Content-Type,
/// as FastAPI does and the seed's examples rely on.
fn read_body(e: &Endpoint, req: &Request) -> Result<(Map<String, Value>, multipart::Uploads), Response> {
    if e.multipart {
        let ct = header(req, "content-type").unwrap_or("");
        let parts = multipart::parse(ct, &req.body).map_err(|msg| {
            unprocessable(vec![fields::error_item("value_error", &[json!("body")], &msg, &Value::Null, None)], Value::Null)
        })?;
        return Ok(multipart::to_fields(parts, &endpoints::fields_of(e)));
    }
    if req.body.is_empty() {
        return Err(unprocessable(
            vec![fields::error_item("missing", &[json!("body")], "Field required", &Value::Null, None)],
            Value::Null,
        ));
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(o)) => Ok((o, vec![])),
        Ok(other) => Err(unprocessable(
            vec![fields::error_item(
                "model_attributes_type",
                &[json!("body")],
                "Input should be a valid dictionary or object to extract fields from",
                &other,
                None,
            )],
            other,
        )),
        Err(err) => {
            let text = String::from_utf8_lossy(&req.body).into_owned();
            let ctx = json!({"error": err.to_string()});
            Err(unprocessable(
                vec![fields::error_item("json_invalid", &[json!("body"), json!(err.column())], "JSON decode error", &json!({}), Some(ctx))],
                json!(text),
            ))
        }
    }
}

/// An image given as a string (v2): raw base64, a `data:` URL or an http(s) URL fetched through
/// the host. `None` for the seed's "absent" spellings.
fn image_from_string(field: &str, s: &str) -> Result<Option<Vec<u8>>, String> {
    let s = s.trim();
    if matches!(s, "" | "None" | "none" | "null" | "string") {
        return Ok(None);
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        return fetch::get(s).map(Some).map_err(|e| format!("{field}: {e}"));
    }
    let data = match s.split_once(";base64,") {
        Some((prefix, data)) if prefix.starts_with("data:") => data,
        _ => s,
    };
    crate::base64::decode(data).map(Some).map_err(|e| format!("{field}: not an image URL or base64 data ({e})"))
}

/// An input image: the role that names it (its field) and its encoded bytes.
type Input = (String, Vec<u8>);

/// Collect the endpoint's input images, in a fixed role order.
fn input_images(body: &Map<String, Value>, uploads: Vec<Input>) -> Result<Vec<Input>, (Vec<Value>, String)> {
    let mut inputs: Vec<Input> = uploads.into_iter().filter(|(_, d)| !d.is_empty()).collect();
    for key in ["input_image", "input_mask", "enhance_input_image"] {
        if let Some(Value::String(s)) = body.get(key) {
            if inputs.iter().any(|(role, _)| role == key) {
                continue;
            }
            match image_from_string(key, s) {
                Ok(Some(data)) => inputs.push((key.into(), data)),
                Ok(None) => {}
                Err(msg) => return Err((vec![json!("body"), json!(key)], msg)),
            }
        }
    }
    if let Some(Value::Array(prompts)) = body.get("image_prompts") {
        for (i, p) in prompts.iter().enumerate() {
            if let Some(s) = p.get("cn_img").and_then(Value::as_str) {
                match image_from_string("cn_img", s) {
                    Ok(Some(data)) => inputs.push((format!("image_prompts.{i}.cn_img"), data)),
                    Ok(None) => {}
                    Err(msg) => return Err((vec![json!("body"), json!("image_prompts"), json!(i), json!("cn_img")], msg)),
                }
            }
        }
    }
    Ok(inputs)
}

/// Fill fields the request leaves out from the host's preset (`host.request-defaults`, set by
/// `focal serve --preset`), one level into `advanced_params`.
fn with_preset_defaults(raw: &Map<String, Value>) -> Map<String, Value> {
    let mut raw = raw.clone();
    let Some(Ok(Value::Object(defaults))) = crate::host_config("host.request-defaults").map(|t| serde_json::from_str::<Value>(&t)) else {
        return raw;
    };
    for (key, value) in defaults {
        match (raw.get_mut(&key), value) {
            (Some(Value::Object(given)), Value::Object(nested)) => {
                for (k, v) in nested {
                    given.entry(k).or_insert(v);
                }
            }
            (Some(_), _) => {}
            (None, value) => {
                raw.insert(key, value);
            }
        }
    }
    raw
}

pub fn handle(e: &Endpoint, req: &Request) -> Response {
    let (raw, uploads) = match read_body(e, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut errors = Vec::new();
    let body = fields::parse(&endpoints::fields_of(e), &with_preset_defaults(&raw), &[json!("body")], &mut errors);
    if !errors.is_empty() {
        return unprocessable(errors, Value::Object(raw));
    }
    // Checked after the fields, so a malformed request still gets its 422.
    if e.job_type == focal_fooocus_tasks::ENHANCE {
        // Enhance needs the mask models (SAM, GroundingDINO) this engine does not run yet.
        return json_response(
            501,
            &json!({"detail": "image-enhance is not run by this focal engine yet (it needs Fooocus's mask models)"}),
        );
    }
    let inputs = match input_images(&body, uploads) {
        Ok(i) => i,
        Err((loc, msg)) => {
            return unprocessable(vec![fields::error_item("value_error", &loc, &msg, &Value::Null, None)], Value::Object(raw))
        }
    };
    let png_stream = wants_png(req);
    let request = Value::Object(body);
    let generation = match request::generation(&request, random_seed(), png_stream) {
        Ok(g) => g,
        Err((loc, msg, input)) => {
            let loc: Vec<Value> = std::iter::once(json!("body")).chain(loc.into_iter().map(|l| json!(l))).collect();
            return unprocessable(vec![fields::error_item("value_error", &loc, &msg, &input, None)], Value::Object(raw));
        }
    };
    let role_error = |(role, msg): task::RoleError| {
        let loc: Vec<Value> = std::iter::once(json!("body"))
            .chain(role.split('.').map(|p| p.parse::<u64>().map(|n| json!(n)).unwrap_or_else(|_| json!(p))))
            .collect();
        unprocessable(vec![fields::error_item("value_error", &loc, &msg, &Value::Null, None)], Value::Object(raw.clone()))
    };
    let images = match task::decode(inputs) {
        Ok(images) => images,
        Err(problem) => return role_error(problem),
    };
    let mut params = generation.params;
    let (task, controls) = match task::task_and_controls(e.job_type, &images, &request, &mut params) {
        Ok(t) => t,
        Err(problem) => return role_error(problem),
    };
    let spec = JobSpec {
        label: e.job_type.into(),
        task,
        controls,
        params,
        fooocus: Some(generation.fooocus),
        output: generation.output,
        post_steps: vec![],
        webhook_url: generation.webhook_url,
        request: generation.record,
    };
    let id = match engine::submit(&spec) {
        Ok(id) => id,
        Err(SubmitError::QueueFull) => {
            let full = json!({"base64": null, "url": null, "seed": "", "finish_reason": "QUEUE_IS_FULL"});
            return if png_stream {
                Response { status: 409, headers: vec![("content-type".into(), "text/plain".into())], body: b"QUEUE_IS_FULL".to_vec() }
            } else if generation.async_process {
                json_response(
                    200,
                    &json!({"job_id": "", "job_type": e.job_type, "job_stage": "ERROR", "job_progress": 0, "job_status": null, "job_step_preview": null, "job_result": [full]}),
                )
            } else {
                json_response(200, &json!([full]))
            };
        }
        Err(SubmitError::Invalid(msg)) => {
            // The engine names the parameter; point at the request field that set it.
            let field = msg.split(':').next().unwrap_or("");
            let outpaint_side = field.strip_prefix("extend.").map(|side| format!("outpaint_distance_{side}"));
            let outpaint_side = outpaint_side.as_deref();
            let loc: &[&str] = if matches!(field, "prompt" | "negative_prompt" | "image_number") {
                std::slice::from_ref(&field)
            } else if let Some(side) = &outpaint_side {
                std::slice::from_ref(side)
            } else if msg.contains("width") || msg.contains("height") {
                &["aspect_ratios_selection"]
            } else if msg.contains("sampler") {
                &["advanced_params", "sampler_name"]
            } else if msg.contains("scheduler") {
                &["advanced_params", "scheduler_name"]
            } else {
                &[]
            };
            let loc: Vec<Value> = std::iter::once("body").chain(loc.iter().copied()).map(|l| json!(l)).collect();
            return unprocessable(vec![fields::error_item("value_error", &loc, &msg, &Value::Null, None)], Value::Object(raw));
        }
    };
    if generation.async_process {
        return match engine::get(&id) {
            Some(info) => json_response(200, &crate::jobs::async_job_response(&info, false)),
            // Already finished and dropped by a tiny --queue-history: still a valid job id.
            None => json_response(
                200,
                &json!({"job_id": id, "job_type": e.job_type, "job_stage": "SUCCESS", "job_progress": 100,
                "job_status": "Finished", "job_step_preview": null, "job_result": null}),
            ),
        };
    }
    let Some(info) = wait_until_done(&id) else {
        // Finished and already dropped from the history (--queue-history): its files are gone too.
        log::log(log::Level::Warn, &format!("job {id} left the history before its results were read"));
        return if png_stream { Response { status: 500, headers: vec![], body: vec![] } } else { json_response(200, &json!([])) };
    };
    if png_stream {
        return png_response(&info);
    }
    json_response(200, &Value::Array(results(&info, generation.require_base64, &generation.extension)))
}

/// The finished job, or `None` when the host no longer has it.
pub fn wait_until_done(id: &str) -> Option<JobInfo> {
    loop {
        let info = engine::wait(id, WAIT_SLICE_MS)?;
        if matches!(info.stage, JobStage::Success | JobStage::Error) {
            return Some(info);
        }
    }
}

/// The seed's `GeneratedImageResult` list; a failed job answers `[]` (its error is logged
/// here and shown by query-job).
pub fn results(info: &JobInfo, require_base64: bool, extension: &str) -> Vec<Value> {
    if info.stage == JobStage::Error {
        log::log(log::Level::Error, &format!("job {} failed: {}", info.id, info.error.as_deref().unwrap_or("unknown error")));
        return vec![];
    }
    let mime = if extension == "jpg" { "jpeg" } else { extension };
    info.images
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let b64 = if require_base64 {
                engine::image_file(&info.id, i as u32)
                    .map(|bytes| json!(format!("data:image/{mime};base64,{}", crate::base64::encode(&bytes))))
                    .unwrap_or(Value::Null)
            } else {
                Value::Null
            };
            json!({"base64": b64, "url": crate::file_url(&img.path), "seed": img.seed.to_string(), "finish_reason": "SUCCESS"})
        })
        .collect()
}

/// `Accept: image/png`: the first image as PNG (converted if saved in another format);
/// 500 `ERROR` for a failed job, 400 `USER_CANCEL` when stopped before any image, as the seed.
fn png_response(info: &JobInfo) -> Response {
    let plain = |status: u16, text: &str| Response {
        status,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: text.as_bytes().to_vec(),
    };
    if info.stage == JobStage::Error {
        log::log(log::Level::Error, &format!("job {} failed: {}", info.id, info.error.as_deref().unwrap_or("unknown error")));
        return plain(500, "ERROR");
    }
    let Some(img) = info.images.first() else {
        return if info.stopped { plain(400, "USER_CANCEL") } else { plain(500, "") };
    };
    let png = if img.path.ends_with(".png") {
        engine::image_file(&info.id, 0)
    } else {
        files::read(img.path.trim_start_matches("/files/"), Some("png")).map(|f| f.body)
    };
    match png {
        Some(bytes) => Response { status: 200, headers: vec![("content-type".into(), "image/png".into())], body: bytes },
        None => plain(500, "ERROR"),
    }
}
