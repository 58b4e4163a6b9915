//! `focal generate`: one request, straight through the engine, PNGs to a folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::DType;
use focal_engine::interposer::{self, Interposer};
use focal_engine::pipeline::{refiner_switch_step, Refiner};
use focal_engine::refiner::RefinerModel;
use focal_engine::{LoadOptions, SdxlModel};
use indicatif::{ProgressBar, ProgressStyle};

use crate::request::TextToImageRequest;

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Fooocus-style models folder (checkpoints are looked up in DIR/checkpoints).
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// Checkpoint file name in DIR/checkpoints, or a path to a .safetensors file / diffusers folder.
    #[arg(long)]
    base_model: String,
    /// A Fooocus-API v1 text-to-image JSON body.
    #[arg(long)]
    request: PathBuf,
    /// Output folder for 0.png, 1.png, …
    #[arg(long)]
    out: PathBuf,
    /// Compute precision: f32 (default on CPU), f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
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

pub fn parse_dtype(s: &str) -> Result<DType> {
    Ok(match s {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => bail!("--dtype: '{other}' is not one of f32, f16, bf16"),
    })
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.request).with_context(|| format!("cannot read {}", args.request.display()))?;
    let request = TextToImageRequest::parse(&text)?;
    let base_seed = request.base_seed()?;
    // Validate every image's parameters before the (slow) model load.
    let params = (0..request.image_number).map(|i| request.to_params(base_seed, i)).collect::<Result<Vec<_>>>()?;
    for setting in request.unapplied_settings() {
        eprintln!("note: {setting} is not applied yet");
    }
    let dtype = parse_dtype(&args.dtype)?;
    let checkpoint = resolve_checkpoint(&args.models_dir, &args.base_model)?;
    let embeddings_dir = Some(focal_models::ModelsDir::new(&args.models_dir).folder("embeddings"));
    let model = SdxlModel::load(&checkpoint, &LoadOptions { dtype, embeddings_dir, ..Default::default() })?;
    let refiner = match request.refiner()? {
        Some((name, switch, swap)) => Some((load_refiner(&args.models_dir, &name, dtype)?, switch, swap)),
        None => None,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;

    let cond = model.encode_prompt(&request.prompt, 2)?;
    let uncond = model.encode_prompt(&request.negative_prompt, 2)?;
    for (i, p) in params.iter().enumerate() {
        let bar = ProgressBar::new(p.steps as u64).with_style(
            ProgressStyle::with_template("image {msg} [{bar:30}] {pos}/{len} steps {elapsed}/{eta}").unwrap(),
        );
        bar.set_message(format!("{}/{}", i + 1, params.len()));
        let refiner_at = refiner.as_ref().map(|(m, switch, swap)| Refiner { model: m, switch: refiner_switch_step(p.steps, *switch), swap: *swap });
        let out = model.generate_with_refiner(p, &cond, &uncond, refiner_at, false, &mut |pr| {
            bar.set_position(pr.step as u64);
            true
        })?;
        bar.finish_and_clear();
        let path = args.out.join(format!("{i}.png"));
        std::fs::write(&path, out.image.encode_png()?).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", serde_json::json!({"seed": out.seed, "finish_reason": "SUCCESS", "path": path}));
    }
    Ok(())
}

/// The request's refiner from DIR/checkpoints; an SD1.5 one with the interposer from
/// DIR/vae_approx (which `focal serve` fetches on first use).
fn load_refiner(models_dir: &Path, name: &str, dtype: DType) -> Result<RefinerModel> {
    let path = resolve_checkpoint(models_dir, name).context("refiner_model_name")?;
    let refiner = RefinerModel::load(&path, &LoadOptions { dtype, ..Default::default() })?;
    if !refiner.has_own_vae() {
        return Ok(refiner);
    }
    let file = models_dir.join("vae_approx").join(interposer::FILE_NAME);
    if !file.is_file() {
        bail!("an SD1.5 refiner needs the latent interposer {}: download it from {}", file.display(), interposer::URL);
    }
    Ok(refiner.with_interposer(Interposer::load(&file, &candle_core::Device::Cpu)?))
}
