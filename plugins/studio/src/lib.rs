//! The contract-0.2.0 example endpoint: a small JSON API of focal's own (not Fooocus's) that
//! shows what 0.2.0 offers a plugin author.
//!
//! - `GET  /studio/catalog`: every name list the engine accepts (`catalog`).
//! - `POST /studio/jobs`: `{"prompt", "negative_prompt", "width", "height", "steps", "cfg",
//!   "sampler", "scheduler", "seed", "images", "base_model", "init_image" (base64) + "denoise",
//!   "post_steps": [{"plugin", "options": {…}}], "wait"}` → the job; names are checked against
//!   the catalog (422 naming the field); an init image makes it an image-to-image task, handed to
//!   the host once as an image handle.
//! - `GET  /studio/jobs/{id}`, `POST /studio/jobs/{id}/stop`, `DELETE /studio/jobs/{id}`,
//!   `GET /studio/jobs/{id}/images/{n}` (the saved file), `GET /studio/jobs/{id}/preview` (PNG),
//!   `GET /studio/queue`.
//!
//! Jobs carry no Fooocus options, so they sample as ComfyUI does (no Fooocus patches, styles or
//! embedded metadata).

wit_bindgen::generate!({ world: "endpoint", path: "../../wit/focal-plugin@0.2.0" });

use base64::Engine as _;
use exports::focal::plugin::handler::{Guest, Request, Response};
use focal::plugin::catalog;
use focal::plugin::engine::{
    self, GenerationParams, ImageToImage, JobInfo, JobSpec, JobStage, OutputOptions, Phase, StepCall, SubmitError, Task,
};
use focal::plugin::images::Image;
use serde::Deserialize;
use serde_json::{json, Map, Value};

struct Studio;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewJob {
    prompt: String,
    #[serde(default)]
    negative_prompt: String,
    #[serde(default = "default_size")]
    width: u32,
    #[serde(default = "default_size")]
    height: u32,
    #[serde(default = "default_steps")]
    steps: u32,
    #[serde(default = "default_cfg")]
    cfg: f32,
    #[serde(default = "default_sampler")]
    sampler: String,
    #[serde(default = "default_scheduler")]
    scheduler: String,
    #[serde(default)]
    seed: u64,
    #[serde(default = "one")]
    images: u32,
    #[serde(default)]
    base_model: String,
    #[serde(default)]
    init_image: Option<String>,
    #[serde(default = "default_denoise")]
    denoise: f32,
    #[serde(default)]
    post_steps: Vec<PostStep>,
    #[serde(default)]
    wait: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostStep {
    plugin: String,
    #[serde(default)]
    options: Map<String, Value>,
}

fn default_size() -> u32 {
    1024
}
fn default_steps() -> u32 {
    30
}
fn default_cfg() -> f32 {
    7.0
}
fn default_sampler() -> String {
    "euler".into()
}
fn default_scheduler() -> String {
    "karras".into()
}
fn one() -> u32 {
    1
}
fn default_denoise() -> f32 {
    0.75
}

fn respond(status: u16, body: Value) -> Response {
    Response { status, headers: vec![("content-type".into(), "application/json".into())], body: body.to_string().into_bytes() }
}

/// FastAPI-style 422 naming the field.
fn invalid(field: &str, msg: &str) -> Response {
    respond(422, json!({"detail": [{"loc": ["body", field], "msg": msg, "type": "value_error"}]}))
}

fn not_found() -> Response {
    respond(404, json!({"detail": "Not Found"}))
}

fn stage_name(stage: JobStage) -> &'static str {
    match stage {
        JobStage::Waiting => "waiting",
        JobStage::Running => "running",
        JobStage::Success => "success",
        JobStage::Error => "error",
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Waiting => "waiting",
        Phase::LoadingModels => "loading-models",
        Phase::Downloading => "downloading",
        Phase::ProcessingPrompts => "processing-prompts",
        Phase::EncodingPrompts => "encoding-prompts",
        Phase::Sampling => "sampling",
        Phase::Saving => "saving",
        Phase::Finished => "finished",
    }
}

/// A job as this API shows it: the structured progress as the host reports it.
fn job_json(info: &JobInfo) -> Value {
    let p = &info.progress;
    json!({
        "id": info.id,
        "label": info.label,
        "stage": stage_name(info.stage),
        "progress": {
            "phase": phase_name(p.phase),
            "percent": p.percent,
            "image": p.image,
            "images": p.images,
            "step": p.step,
            "steps": p.steps,
        },
        "error": info.error,
        "stopped": info.stopped,
        "images": info.images.iter().map(|i| json!({"seed": i.seed.to_string(), "path": i.path})).collect::<Vec<_>>(),
    })
}

fn catalog_json() -> Value {
    json!({
        "samplers": catalog::samplers(),
        "schedulers": catalog::schedulers(),
        "checkpoints": catalog::checkpoints(),
        "loras": catalog::loras(),
        "vaes": catalog::vaes(),
        "upscalers": catalog::upscalers(),
        "inpaint_models": catalog::inpaint_models(),
        "controls": catalog::controls(),
        "image_steps": catalog::image_steps(),
    })
}

fn submit(body: &[u8]) -> Response {
    let job: NewJob = match serde_json::from_slice(body) {
        Ok(j) => j,
        Err(e) => return invalid("body", &e.to_string()),
    };
    if !catalog::samplers().contains(&job.sampler) {
        return invalid("sampler", &format!("'{}' is not one of the catalog's samplers", job.sampler));
    }
    if !catalog::schedulers().contains(&job.scheduler) {
        return invalid("scheduler", &format!("'{}' is not one of the catalog's schedulers", job.scheduler));
    }
    let steps_known = catalog::image_steps();
    if let Some(step) = job.post_steps.iter().find(|s| !steps_known.contains(&s.plugin)) {
        return invalid("post_steps", &format!("'{}' is not a loaded image step", step.plugin));
    }
    // The image crosses into the host once; the task borrows the handle.
    let init = match &job.init_image {
        None => None,
        Some(b64) => {
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                return invalid("init_image", "not base64");
            };
            match Image::decode(&bytes) {
                Ok(image) => Some(image),
                Err(e) => return invalid("init_image", &e),
            }
        }
    };
    let task = match &init {
        Some(image) => Task::ImageToImage(ImageToImage { image, denoise: job.denoise }),
        None => Task::TextToImage,
    };
    let spec = JobSpec {
        label: if init.is_some() { "Image to Image".into() } else { "Text to Image".into() },
        task,
        controls: vec![],
        params: GenerationParams {
            prompt: job.prompt,
            negative_prompt: job.negative_prompt,
            width: job.width,
            height: job.height,
            steps: job.steps,
            guidance_scale: job.cfg,
            sampler: job.sampler,
            scheduler: job.scheduler,
            seed: job.seed,
            image_number: job.images,
            base_model: job.base_model,
            clip_skip: 2,
            disable_seed_increment: false,
            preview: true,
            freeu: None,
            vae: String::new(),
            loras: vec![],
            refiner: None,
        },
        fooocus: None,
        output: OutputOptions { extension: "png".into(), save_name: String::new() },
        post_steps: job
            .post_steps
            .into_iter()
            .map(|s| StepCall {
                plugin: s.plugin,
                options: s.options.into_iter().map(|(k, v)| (k, v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))).collect(),
            })
            .collect(),
        webhook_url: None,
        request: String::from_utf8_lossy(body).into_owned(),
    };
    let id = match engine::submit(&spec) {
        Ok(id) => id,
        Err(SubmitError::QueueFull) => return respond(503, json!({"detail": "the queue is full"})),
        Err(SubmitError::Invalid(msg)) => return invalid(msg.split(':').next().unwrap_or("body"), &msg),
    };
    let info = if job.wait { engine::wait(&id, u32::MAX) } else { engine::get(&id) };
    match info {
        Some(info) => respond(200, job_json(&info)),
        None => not_found(),
    }
}

fn job_route(method: &str, rest: &str) -> Response {
    let parts: Vec<&str> = rest.split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", [id]) => engine::get(id).map(|i| respond(200, job_json(&i))).unwrap_or_else(not_found),
        ("DELETE", [id]) => respond(200, json!({"deleted": engine::delete(id)})),
        ("POST", [id, "stop"]) => respond(200, json!({"stopped": engine::stop(id)})),
        ("GET", [id, "preview"]) => match engine::preview(id) {
            Some(image) => Response { status: 200, headers: vec![("content-type".into(), "image/png".into())], body: image.png() },
            None => not_found(),
        },
        ("GET", [id, "images", n]) => match n.parse().ok().and_then(|n| engine::image_file(id, n)) {
            Some(file) => Response { status: 200, headers: vec![("content-type".into(), "image/png".into())], body: file },
            None => not_found(),
        },
        _ => not_found(),
    }
}

impl Guest for Studio {
    fn handle(req: Request) -> Response {
        let path = req.path.trim_end_matches('/');
        match (req.method.as_str(), path) {
            ("GET", "/studio/catalog") => respond(200, catalog_json()),
            ("GET", "/studio/queue") => {
                let q = engine::queue();
                respond(200, json!({"running": q.running_size, "finished": q.finished_size, "last_job_id": q.last_job_id}))
            }
            ("POST", "/studio/jobs") => submit(&req.body),
            (method, p) => match p.strip_prefix("/studio/jobs/") {
                Some(rest) => job_route(method, rest),
                None => not_found(),
            },
        }
    }
}

export!(Studio);
