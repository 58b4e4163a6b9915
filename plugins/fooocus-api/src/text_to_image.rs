//! `POST /v1/generation/text-to-image` (JSON `CommonRequest`), synchronous JSON and
//! `Accept: image/png` responses.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::exports::focal::plugin::handler::{Request, Response};
use crate::focal::plugin::engine::{self, GenerationParams, TaskState};
use crate::json;

const MAX_SEED: u64 = (1 << 63) - 1;

#[derive(Deserialize)]
#[serde(default)]
struct CommonRequest {
    prompt: String,
    negative_prompt: String,
    performance_selection: String,
    aspect_ratios_selection: String,
    image_number: i64,
    image_seed: i64,
    guidance_scale: f64,
    advanced_params: AdvancedParams,
    require_base64: bool,
    async_process: bool,
}

impl Default for CommonRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            performance_selection: "Speed".into(),
            aspect_ratios_selection: "1152*896".into(),
            image_number: 1,
            image_seed: -1,
            guidance_scale: 4.0,
            advanced_params: AdvancedParams::default(),
            require_base64: false,
            async_process: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct AdvancedParams {
    sampler_name: String,
    scheduler_name: String,
    overwrite_step: i64,
    overwrite_width: i64,
    overwrite_height: i64,
}

impl Default for AdvancedParams {
    fn default() -> Self {
        Self { sampler_name: "dpmpp_2m_sde_gpu".into(), scheduler_name: "karras".into(), overwrite_step: -1, overwrite_width: -1, overwrite_height: -1 }
    }
}

/// FastAPI's 422 body: `{"detail": [{"type", "loc", "msg", "input"}], "body": …}`.
fn unprocessable(kind: &str, loc: &[&str], msg: &str, input: Value, body: &Value) -> Response {
    let mut full_loc = vec!["body"];
    full_loc.extend_from_slice(loc);
    json(422, &json!({"detail": [{"type": kind, "loc": full_loc, "msg": msg, "input": input}], "body": body}))
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() & MAX_SEED
}

pub fn handle(req: &Request) -> Response {
    let raw: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return unprocessable("json_invalid", &[], &format!("JSON decode error: {e}"), Value::Null, &Value::Null),
    };
    let r: CommonRequest = match serde_json::from_value(raw.clone()) {
        Ok(r) => r,
        Err(e) => {
            // serde names the field in its message ("invalid type: … for field `x`" is not
            // guaranteed), so find the offending top-level key by re-checking each one.
            let field = raw.as_object().and_then(|o| o.keys().find(|k| serde_json::from_value::<CommonRequest>(json!({ k.as_str(): o[k.as_str()] })).is_err())).cloned().unwrap_or_default();
            let input = raw.get(&field).cloned().unwrap_or(Value::Null);
            return unprocessable("type_error", &[&field], &e.to_string(), input, &raw);
        }
    };
    if r.async_process {
        return json(501, &json!({"detail": "async_process is not supported by this focal build yet; send it synchronously"}));
    }
    let steps = match (r.advanced_params.overwrite_step, r.performance_selection.as_str()) {
        (s, _) if s > 0 => s as u32,
        (_, "Speed") => 30,
        (_, "Quality") => 60,
        (_, other) => {
            return unprocessable("enum", &["performance_selection"], "Input should be 'Speed' or 'Quality' (the LoRA-based presets are not available yet)", json!(other), &raw)
        }
    };
    let size = r.aspect_ratios_selection.split(['*', '×']).map(|s| s.trim().parse::<u32>()).collect::<Vec<_>>();
    let (mut width, mut height) = match size.as_slice() {
        [Ok(w), Ok(h)] if *w > 0 && *h > 0 => (*w, *h),
        _ => return unprocessable("value_error", &["aspect_ratios_selection"], "Value error, expected WIDTH*HEIGHT, e.g. 1152*896", json!(r.aspect_ratios_selection), &raw),
    };
    if r.advanced_params.overwrite_width > 0 {
        width = r.advanced_params.overwrite_width as u32;
    }
    if r.advanced_params.overwrite_height > 0 {
        height = r.advanced_params.overwrite_height as u32;
    }
    if !(1..=32).contains(&r.image_number) {
        return unprocessable("less_than_equal", &["image_number"], "Input should be between 1 and 32", json!(r.image_number), &raw);
    }
    let png_stream = req.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("accept") && v == "image/png")
        || req.query.split('&').any(|kv| kv == "accept=image/png" || kv == "accept=image%2Fpng");
    let seed = if r.image_seed == -1 { random_seed() } else { r.image_seed as u64 & MAX_SEED };
    let params = GenerationParams {
        prompt: r.prompt.clone(),
        negative_prompt: r.negative_prompt.clone(),
        width,
        height,
        steps,
        guidance_scale: r.guidance_scale as f32,
        sampler: r.advanced_params.sampler_name.clone(),
        scheduler: r.advanced_params.scheduler_name.clone(),
        seed,
        image_number: if png_stream { 1 } else { r.image_number as u32 },
    };
    let task = match engine::submit(&params) {
        Ok(t) => t,
        Err(e) if e == "QUEUE_IS_FULL" => {
            return if png_stream {
                Response { status: 409, headers: vec![], body: b"QUEUE_IS_FULL".to_vec() }
            } else {
                json(200, &json!([{"base64": null, "url": null, "seed": "", "finish_reason": "QUEUE_IS_FULL"}]))
            }
        }
        Err(e) => {
            let field = if e.contains("sampler") { "sampler_name" } else if e.contains("scheduler") { "scheduler_name" } else { "advanced_params" };
            return unprocessable("value_error", &["advanced_params", field], &e, Value::Null, &raw);
        }
    };
    let progress = loop {
        let p = task.wait(60_000);
        if !matches!(p.state, TaskState::Queued | TaskState::Running) {
            break p;
        }
    };
    let images = match (progress.state, task.images()) {
        (TaskState::Finished, Ok(images)) => images,
        _ => {
            crate::focal::plugin::log::log(crate::focal::plugin::log::Level::Error, &format!("generation failed: {:?}", progress.error));
            // As the seed does: a failed sync job answers an empty list (and 500 for PNG streaming).
            return if png_stream { Response { status: 500, headers: vec![], body: b"ERROR".to_vec() } } else { json(200, &json!([])) };
        }
    };
    if png_stream {
        let png = images.first().map(|i| i.png()).unwrap_or_default();
        return Response { status: 200, headers: vec![("content-type".into(), "image/png".into())], body: png };
    }
    let results: Vec<Value> = images
        .iter()
        .map(|img| {
            let b64 = if r.require_base64 { json!(format!("data:image/png;base64,{}", crate::base64::encode(&img.png()))) } else { Value::Null };
            json!({"base64": b64, "url": null, "seed": img.seed().to_string(), "finish_reason": "SUCCESS"})
        })
        .collect();
    json(200, &Value::Array(results))
}
