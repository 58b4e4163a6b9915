//! `focal generate`: one Fooocus-API request (text-to-image, or a v2 JSON body of an image
//! route) through the same plugins and job worker as `focal serve`, in-process (no HTTP), images
//! written to a folder. The request is parsed by the `fooocus_api` plugin, so the command and
//! the server cannot disagree about it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use focal_core::services::EngineService;
use focal_core::{JobStage, Owner, Phase};
use focal_runtime::Request;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::app::{App, AppConfig};
use crate::serve::Dirs;

/// The route of a plain text-to-image request.
const TEXT_TO_IMAGE: &str = "/v1/generation/text-to-image";

/// Body fields that carry an image; `focal generate` also accepts a file path there.
const IMAGE_FIELDS: [&str; 3] = ["input_image", "input_mask", "enhance_input_image"];

/// The route for `--route` (a path, or a name such as `image-upscale-vary`), or the one the body
/// implies: an `uov_method` is upscale/vary, an outpaint or mask field inpaint, else text-to-image.
fn route_for(route: Option<&str>, body: &serde_json::Map<String, Value>) -> String {
    match route {
        Some(r) if r.starts_with('/') => r.to_string(),
        Some("text-to-image") => TEXT_TO_IMAGE.to_string(),
        Some(name) => format!("/v2/generation/{name}"),
        None if body.contains_key("uov_method") => "/v2/generation/image-upscale-vary".into(),
        None if body.contains_key("outpaint_selections") || body.contains_key("input_mask") => {
            "/v2/generation/image-inpaint-outpaint".into()
        }
        None if body.contains_key("image_prompts") => "/v2/generation/image-prompt".into(),
        None => TEXT_TO_IMAGE.to_string(),
    }
}

/// Image fields naming a file are replaced by its contents (base64), as a client would send them.
fn inline_files(body: &mut serde_json::Map<String, Value>) -> Result<()> {
    use base64::Engine as _;
    for key in IMAGE_FIELDS {
        let Some(path) = body.get(key).and_then(Value::as_str).map(PathBuf::from) else { continue };
        let text = path.to_string_lossy();
        if text.starts_with("data:") || text.contains("://") || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("{key}: cannot read {}", path.display()))?;
        body.insert(key.into(), Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)));
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Fooocus-style models folder (checkpoints are looked up in DIR/checkpoints).
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// Checkpoint file name in DIR/checkpoints, or a path to a .safetensors file / diffusers folder.
    #[arg(long)]
    base_model: String,
    /// A Fooocus-API JSON body: v1 text-to-image, or the v2 body of an image route, whose
    /// `input_image`/`input_mask` may be file paths (`refiner_model_name` may also be a path).
    #[arg(long)]
    request: PathBuf,
    /// The route: `image-upscale-vary`, `image-inpaint-outpaint`, … or a path; inferred from the
    /// body when left out.
    #[arg(long)]
    route: Option<String>,
    /// Output folder for 0.png, 1.png, … (the request's `save_extension` decides the format).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    compute: crate::device::Compute,
    #[command(flatten)]
    dirs: Dirs,
}

pub fn resolve_checkpoint(models_dir: &Path, name: &str) -> Result<PathBuf> {
    let direct = PathBuf::from(name);
    let in_folder = models_dir.join("checkpoints").join(name);
    for candidate in [&direct, &in_folder] {
        if candidate.exists() {
            return Ok(candidate.clone());
        }
    }
    bail!(
        "base model '{name}' not found: looked for {} and {}; put an SDXL .safetensors checkpoint there",
        direct.display(),
        in_folder.display()
    )
}

/// A FastAPI-style error body as one line: `advanced_params.sampler_name: msg; …`.
fn detail_text(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return String::from_utf8_lossy(body).into_owned() };
    match &v["detail"] {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let loc: Vec<String> = item["loc"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .skip(1)
                    .map(|p| p.as_str().map(String::from).unwrap_or_else(|| p.to_string()))
                    .collect();
                format!("{}: {}", loc.join("."), item["msg"].as_str().unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.request).with_context(|| format!("cannot read {}", args.request.display()))?;
    let mut body: Value = serde_json::from_str(&text).map_err(|e| anyhow!("invalid request: {e}"))?;
    let Some(fields) = body.as_object_mut() else { bail!("invalid request: the body is not a JSON object") };
    let crate::device::Resolved { device, dtype, vae_dtype } = args.compute.resolve()?;
    let checkpoint = resolve_checkpoint(&args.models_dir, &args.base_model)?;
    let file_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The command line's model is the request's; a refiner given as a path is named by its
    // file name (clients of the server can only name files in the models folder).
    fields.insert("base_model_name".into(), Value::String(file_name(&checkpoint)));
    let mut extra_checkpoints = BTreeMap::new();
    if let Some(refiner) = fields.get("refiner_model_name").and_then(Value::as_str).map(PathBuf::from) {
        if refiner.components().count() > 1 && refiner.is_file() {
            fields.insert("refiner_model_name".into(), Value::String(file_name(&refiner)));
            extra_checkpoints.insert(file_name(&refiner), refiner);
        }
    }
    fields.insert("async_process".into(), Value::Bool(true));
    let route = route_for(args.route.as_deref(), fields);
    inline_files(fields)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;

    // This run's job database and files live in a scratch folder; the compiled-plugin cache and
    // the operator's plugins are the data folder's, as for `focal serve`.
    let scratch = std::env::temp_dir().join(format!("focal-generate-{}", std::process::id()));
    let result = tokio::runtime::Runtime::new()?.block_on(async {
        let app = App::start(AppConfig {
            output_steps: vec![],
            models_dir: args.models_dir.clone(),
            database: scratch.join("focal.db"),
            checkpoint,
            downloads: BTreeMap::new(),
            allow_downloads: false,
            extra_checkpoints,
            dtype,
            vae_dtype,
            device,
            outputs_dir: scratch.join("outputs"),
            max_queue: 1,
            max_history: 0,
            webhook_url: None,
            webhooks: false,
            base_url: String::new(),
            limits: Default::default(),
            allow_private_fetch: false,
            settings: BTreeMap::new(),
            tenants: None,
            dirs: &args.dirs,
        })?;
        generate(&app, &route, body, &args.out).await
    });
    std::fs::remove_dir_all(&scratch).ok();
    result
}

/// Submit the request to the Fooocus-API plugin, follow the job, write its images.
async fn generate(app: &App, route: &str, body: Value, out: &Path) -> Result<()> {
    let plugin = app.registry.route(route).with_context(|| format!("no plugin serves {route}"))?;
    let request = Request {
        method: "POST".into(),
        path: route.into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(&body)?,
        ..Default::default()
    };
    let response = app.host.handle(&plugin, request, Owner::default()).await?;
    if response.status != 200 {
        bail!("invalid request: {}", detail_text(&response.body));
    }
    let accepted: Value = serde_json::from_slice(&response.body).context("the plugin's answer")?;
    let id = accepted["job_id"].as_str().context("the plugin answered no job id")?.to_string();
    let owner = Owner::default();
    let bar =
        ProgressBar::new(1).with_style(ProgressStyle::with_template("image {msg} [{bar:30}] {pos}/{len} steps {elapsed}/{eta}").unwrap());
    let info = loop {
        let info = app.jobs.wait(&owner, &id, Duration::from_millis(250)).await.context("the job disappeared")?;
        let p = &info.progress;
        if p.phase == Phase::Sampling {
            bar.set_length(p.steps.max(1) as u64);
            bar.set_position(p.step as u64);
            bar.set_message(format!("{}/{}", p.image + 1, p.images));
        }
        if info.stage.ended() {
            break info;
        }
    };
    bar.finish_and_clear();
    if info.stage == JobStage::Error {
        bail!("{}", info.error.unwrap_or_default());
    }
    for (i, image) in info.images.iter().enumerate() {
        let bytes = app.jobs.image_file(&owner, &id, i as u32).context("the saved image is gone")?;
        let extension = image.path.rsplit('.').next().unwrap_or("png");
        let path = out.join(format!("{i}.{extension}"));
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", serde_json::json!({"seed": image.seed, "finish_reason": "SUCCESS", "path": path}));
    }
    Ok(())
}
