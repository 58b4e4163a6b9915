//! The engine worker: one thread owns the loaded models and runs jobs one at a time, from the
//! prompt steps through sampling to the saved files.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use focal_engine::pipeline::{refiner_switch_step, Refiner};
use focal_engine::sdxl::Conditioning;
use focal_runtime::prompts::{PromptInput, PromptOutput};
use focal_runtime::services::{JobImage, JobSpec, JobStage};
use serde_json::json;

use super::models::{Loaded, ModelKey};
use super::translate::{engine_params, swap_method};
use super::{now_ms, JobManager, TEXT_TO_IMAGE};
use crate::metadata::{self, ImageFacts};
use crate::outputs::{self, Embedded, Format};

/// Fooocus's `MAX_SEED + 1` (2^63): image seeds wrap modulo this.
const SEED_MODULUS: u64 = 1 << 63;

/// The metadata keys the prompt pipeline decides per image.
const PROMPT_KEYS: [&str; 6] = ["prompt", "negative_prompt", "prompt_expansion", "styles", "full_prompt", "full_negative_prompt"];

impl JobManager {
    pub(super) fn worker_loop(self: Arc<Self>) {
        let mut loaded: Option<(ModelKey, Loaded)> = None;
        loop {
            let id = {
                let mut jobs = self.jobs.lock().unwrap();
                loop {
                    if self.release_model.swap(false, Ordering::Relaxed) && loaded.take().is_some() {
                        tracing::info!("model unloaded");
                    }
                    if let Some(id) = jobs.waiting.pop_front() {
                        jobs.running = Some(id.clone());
                        break id;
                    }
                    jobs = self.work.wait(jobs).unwrap();
                }
            };
            self.stop_running.store(false, Ordering::Relaxed);
            self.update(&id, true, |e| {
                e.info.stage = JobStage::Running;
                e.info.start_ms = now_ms();
                e.info.progress = 1;
                e.info.status = Some("Loading models ...".into());
            });
            let spec = self.jobs.lock().unwrap().entries[&id].spec.clone();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&id, &spec, &mut loaded)))
                .unwrap_or_else(|_| Err("the engine panicked while running this job".into()));
            self.finish(&id, outcome);
        }
    }


    /// Each image's prompt through the pipeline, as Fooocus processes all of them before
    /// sampling the first.
    fn process_prompts(&self, p: &focal_runtime::services::GenerationParams, seeds: &[u64]) -> Result<Vec<PromptOutput>, String> {
        seeds
            .iter()
            .enumerate()
            .map(|(i, &seed)| {
                let input = PromptInput {
                    index: i as u32,
                    seed,
                    prompt: p.prompt.clone(),
                    negative_prompt: p.negative_prompt.clone(),
                    styles: p.styles.clone(),
                    read_wildcards_in_order: p.read_wildcards_in_order,
                };
                let out = match self.prompts.get() {
                    Some(pipeline) => pipeline.run(input)?,
                    None => focal_runtime::prompts::assemble(focal_runtime::prompts::initial_task(input)),
                };
                if !out.unknown_styles.is_empty() {
                    tracing::warn!(styles = ?out.unknown_styles, "styles no prompt step knows; dropped");
                }
                Ok(out)
            })
            .collect()
    }

    /// Run one job; images are recorded as they are saved. `Ok` also when stopped early.
    fn run(&self, id: &str, spec: &JobSpec, loaded: &mut Option<(ModelKey, Loaded)>) -> Result<(), String> {
        // Never answer an image task with an unrelated text-to-image result.
        if spec.job_type != TEXT_TO_IMAGE || !spec.inputs.is_empty() {
            let roles: Vec<&str> = spec.inputs.iter().map(|i| i.role.as_str()).collect();
            return Err(format!(
                "'{}' jobs with input images [{}] need image-conditioned generation (upscale, vary, inpaint, \
                 image prompts), which this focal engine does not provide yet; only '{TEXT_TO_IMAGE}' without \
                 input images runs",
                spec.job_type,
                roles.join(", ")
            ));
        }
        let p = &spec.params;
        let count = p.image_number.max(1);
        let seeds: Vec<u64> = (0..count as u64)
            .map(|i| if p.disable_seed_increment { p.seed % SEED_MODULUS } else { p.seed.wrapping_add(i) % SEED_MODULUS })
            .collect();
        self.update(id, false, |e| e.info.status = Some("Processing prompts ...".into()));
        let prompts = self.process_prompts(p, &seeds)?;
        let key = self.model_key(id, p, &prompts[0].loras)?;
        let (checkpoint, loras) = (key.checkpoint.clone(), key.loras.clone());
        self.ensure_loaded(id, key, loaded)?;
        let lora_facts: Vec<(String, f32, String)> = loras
            .iter()
            .map(|l| (l.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(), l.weight, self.model_hash(&l.path)))
            .collect();
        let models = &loaded.as_ref().unwrap().1;
        let model = &models.base;
        self.update(id, false, |e| {
            e.info.progress = 13;
            e.info.status = Some("Encoding prompts ...".into());
        });
        let clip_skip = p.clip_skip.clamp(1, 12) as usize;
        // Encode each image's workloads; images with the same prompts share them.
        let mut conds: Vec<(Arc<Conditioning>, Arc<Conditioning>)> = Vec::with_capacity(prompts.len());
        for (i, pr) in prompts.iter().enumerate() {
            let same = i > 0 && prompts[i - 1].positive == pr.positive && prompts[i - 1].negative == pr.negative;
            if same {
                conds.push(conds[i - 1].clone());
                continue;
            }
            let cond = Arc::new(model.encode_workloads(&pr.positive, pr.positive_pooled, clip_skip).map_err(|e| e.to_string())?);
            // At CFG 1 the negative is never used (Fooocus clones the positive).
            let uncond = if (p.guidance_scale - 1.0).abs() < 1e-4 {
                cond.clone()
            } else {
                Arc::new(model.encode_workloads(&pr.negative, pr.negative_pooled, clip_skip).map_err(|e| e.to_string())?)
            };
            conds.push((cond, uncond));
        }
        let format = Format::from_extension(&spec.output.extension).unwrap_or(Format::Png);
        let stem = if spec.output.save_name.is_empty() { id.to_string() } else { spec.output.save_name.clone() };
        let all_steps = (p.steps * count).max(1);
        for i in 0..count {
            let seed = seeds[i as usize];
            let (cond, uncond) = &conds[i as usize];
            let params = engine_params(p, seed).map_err(|e| e.to_string())?;
            let mut on_step = |pr: focal_engine::Progress| {
                let done = i * p.steps + pr.step as u32;
                let preview = pr.preview.and_then(|img| img.encode_png().ok());
                self.update(id, false, |e| {
                    e.info.progress = (15 + 85 * done / all_steps) as u8;
                    e.info.status = Some(format!("Step {}/{} in the {}-th Sampling", pr.step, p.steps, i + 1));
                    if preview.is_some() {
                        e.preview = preview;
                    }
                });
                !self.stop_running.load(Ordering::Relaxed)
            };
            let refiner_at = match (&models.refiner, &p.refiner) {
                (Some(model), Some(r)) => Some(Refiner { model, switch: refiner_switch_step(p.steps as usize, r.switch), swap: swap_method(&r.swap_method)? }),
                _ => None,
            };
            let out = match model.generate_with_refiner(&params, cond, uncond, refiner_at, p.preview, &mut on_step) {
                Ok(o) => o,
                Err(focal_engine::EngineError::Cancelled) => {
                    self.update(id, false, |e| e.info.stopped = true);
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            };
            self.update(id, false, |e| e.info.status = Some(format!("Saving image {}/{count} to system ...", i + 1)));
            let parameters = spec.output.metadata.as_ref().map(|m| {
                let base_model = checkpoint.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let facts = ImageFacts {
                    seed: out.seed,
                    base_model: &base_model,
                    base_model_hash: &self.model_hash(&checkpoint),
                    width: out.image.width,
                    height: out.image.height,
                    loras: &lora_facts,
                };
                let entries = prompt_entries(&m.entries, &prompts[i as usize]);
                (metadata::parameters(&m.scheme, &entries, &facts), m.scheme.clone())
            });
            let embedded = parameters.as_ref().map(|(parameters, scheme)| Embedded { parameters, scheme });
            let bytes = outputs::encode(&out.image, format, embedded.as_ref()).map_err(|e| format!("encoding the image: {e:#}"))?;
            let name = format!("{stem}-{i}.{}", spec.output.extension.to_ascii_lowercase());
            let rel = self.options.outputs.save(&name, &bytes).map_err(|e| format!("{e:#}"))?;
            self.update(id, true, |e| e.info.images.push(JobImage { seed: out.seed, path: format!("/files/{rel}") }));
        }
        Ok(())
    }

}

/// The job's metadata entries with what the prompt pipeline made of this image (Fooocus's
/// `log_positive_prompt`, expansion, applied styles as a Python list, full workloads).
fn prompt_entries(entries: &[(String, String)], pr: &PromptOutput) -> Vec<(String, String)> {
    let text = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut out: Vec<(String, String)> = entries.iter().filter(|(k, _)| !PROMPT_KEYS.contains(&k.as_str())).cloned().collect();
    out.extend([
        ("prompt".into(), text(&pr.log_prompt)),
        ("negative_prompt".into(), text(&pr.log_negative_prompt)),
        ("prompt_expansion".into(), text(&pr.expansion)),
        ("styles".into(), text(&metadata::python_list_repr(&pr.styles))),
        ("full_prompt".into(), json!(pr.positive).to_string()),
        ("full_negative_prompt".into(), json!(pr.negative).to_string()),
    ]);
    out
}
