//! The engine worker: one thread owns the loaded models and runs jobs one at a time, from the
//! prompt steps through sampling and the image steps to the saved files.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use focal_core::{JobImage, JobSpec, JobStage, Phase, StepCall, Task};
use focal_engine::image::RgbImage;
use focal_engine::inpaint::InpaintHead;
use focal_engine::pipeline::{refiner_switch_step, Refiner};
use focal_engine::rng::TorchGlobal;
use focal_engine::sdxl::Conditioning;
use focal_runtime::prompts::{PromptInput, PromptOutput};
use serde_json::json;

use super::controlnets::ControlNetModels;
use super::image_prompts::ImagePromptModels;
use super::image_tasks::{encode_input, Prepared};
use super::models::{Loaded, ModelKey, SYNTHETIC_REFINER_SWITCH};
use super::translate::{check_runnable, engine_params, swap_method};
use super::upscaler::Upscalers;
use super::{now_ms, JobManager};
use crate::images::image_from_rgb;
use crate::metadata::{self, ImageFacts};
use crate::outputs::{self, Embedded, Format};

/// Fooocus's `MAX_SEED + 1` (2^63): image seeds wrap modulo this.
const SEED_MODULUS: u64 = 1 << 63;

/// The metadata keys the prompt pipeline decides per image.
const PROMPT_KEYS: [&str; 6] = ["prompt", "negative_prompt", "prompt_expansion", "styles", "full_prompt", "full_negative_prompt"];

/// Positive and negative conditioning of one image.
type Conds = (Arc<Conditioning>, Arc<Conditioning>);

impl JobManager {
    pub(super) fn worker_loop(self: Arc<Self>) {
        let mut state = WorkerState::default();
        loop {
            let id = {
                let mut queue = self.queue.lock().unwrap();
                loop {
                    if self.release_model.swap(false, Ordering::Relaxed) && state.free_models() {
                        tracing::info!("models unloaded");
                    }
                    if let Some(id) = queue.start_next() {
                        break id;
                    }
                    queue = self.work.wait(queue).unwrap();
                }
            };
            self.stop_running.store(false, Ordering::Relaxed);
            self.update(&id, true, |e| {
                e.info.stage = JobStage::Running;
                e.info.start_ms = now_ms();
                e.info.progress.enter(Phase::LoadingModels, 1);
            });
            let spec = self.queue.lock().unwrap().entry_of(&id).map(|e| e.spec.clone());
            let Some(spec) = spec else { continue };
            let recording = crate::timings::JobRecording::start();
            let span = tracing::info_span!(crate::timings::JOB_SPAN, id = %id, label = %spec.label, tenant = %spec.owner.0);
            let outcome = span.in_scope(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&id, &spec, &mut state)))
                    .unwrap_or_else(|panic| Err(format!("the engine panicked while running this job: {}", panic_message(&*panic))))
            });
            drop(span);
            if let Some(recording) = recording {
                recording.report(&id);
            }
            let outcome = outcome.map_err(|e| match out_of_device_memory(&e) {
                // What this worker holds goes, so the next job starts from free memory (it loads
                // what it needs again); this job alone fails.
                true => {
                    state.free_models();
                    format!("the GPU ran out of memory ({e}); the loaded models were freed, the next job loads them again")
                }
                false => e,
            });
            self.finish(&id, outcome);
        }
    }

    /// Each image's prompt through the pipeline, as Fooocus processes all of them before
    /// sampling the first.
    fn process_prompts(&self, spec: &JobSpec, seeds: &[u64]) -> Result<Vec<PromptOutput>, String> {
        let _span = tracing::info_span!("prompt_steps", images = seeds.len()).entered();
        let p = &spec.params;
        let fooocus = spec.fooocus.as_ref();
        seeds
            .iter()
            .enumerate()
            .map(|(i, &seed)| {
                let input = PromptInput {
                    index: i as u32,
                    seed,
                    prompt: p.prompt.clone(),
                    negative_prompt: p.negative_prompt.clone(),
                    styles: fooocus.map(|f| f.styles.clone()).unwrap_or_default(),
                    read_wildcards_in_order: fooocus.is_some_and(|f| f.read_wildcards_in_order),
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

    /// Encode each image's workloads; images with the same prompts share them.
    fn encode_prompts(&self, loaded: &Loaded, spec: &JobSpec, prompts: &[PromptOutput]) -> Result<Vec<Conds>, String> {
        let _span = tracing::info_span!("encode_prompts", images = prompts.len()).entered();
        let p = &spec.params;
        let model = &loaded.base;
        let clip_skip = p.clip_skip.clamp(1, 12) as usize;
        let mut conds: Vec<Conds> = Vec::with_capacity(prompts.len());
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
        Ok(conds)
    }

    /// Run one job; images are recorded as they are saved. `Ok` also when stopped early.
    fn run(self: &Arc<Self>, id: &str, spec: &JobSpec, state: &mut WorkerState) -> Result<(), String> {
        check_runnable(spec)?;
        let p = &spec.params;
        let prepared = self.prepare_image_task(id, spec, &state.upscalers)?;
        if let Some(Prepared::Direct(image)) = prepared {
            // Fooocus returns a fast (or very large) upscale as it is: one image, no sampling.
            self.enter(id, Phase::Saving, 100);
            let image = self.post_process(spec, image)?;
            let saver = Saver { embed: false, ..Saver::new(self, spec, id, &self.checkpoint_for(&p.base_model), &[]) };
            let path = saver.save(0, p.seed, &image, &PromptOutput::default())?;
            self.update(id, true, |e| e.info.images.push(JobImage { seed: p.seed, path }));
            return Ok(());
        }
        // An inpaint's additional prompt goes first, when the inpaint runs.
        let inpaint = match (&spec.task, &prepared) {
            (Task::Inpaint { options, .. }, Some(Prepared::Inpaint(_))) => Some(options),
            _ => None,
        };
        let with_prompt;
        let spec = match inpaint {
            Some(o) if !o.additional_prompt.is_empty() => {
                with_prompt = Self::with_additional_prompt(spec, &o.additional_prompt);
                &with_prompt
            }
            _ => spec,
        };
        let loaded = &mut state.loaded;
        let count = p.image_number.max(1);
        let seeds: Vec<u64> = (0..count as u64)
            .map(|i| if p.disable_seed_increment { p.seed % SEED_MODULUS } else { p.seed.wrapping_add(i) % SEED_MODULUS })
            .collect();
        self.update(id, false, |e| {
            e.info.progress.images = count;
            e.info.progress.steps = p.steps;
            e.info.progress.enter(Phase::ProcessingPrompts, 1);
        });
        let prompts = self.process_prompts(spec, &seeds)?;
        let mut key = self.model_key(id, spec, &prompts[0].loras)?;
        // Fooocus's inpaint engine: the patch on the base, the head's file beside it, and the
        // base without the patch as refiner when none is named.
        let head = match inpaint.and_then(|o| o.patch_model.as_deref()) {
            Some(patch) => {
                let (head, patch) = self.inpaint_files(id, patch)?;
                key.inpaint_patch = Some(patch);
                key.synthetic_refiner = key.refiner.is_none();
                Some(InpaintHead::load(&head).map_err(|e| format!("cannot load the inpaint head ({e})"))?)
            }
            None => None,
        };
        let synthetic = key.synthetic_refiner;
        let refiner_switch = if synthetic { Some(SYNTHETIC_REFINER_SWITCH) } else { p.refiner.as_ref().map(|r| r.switch) };
        let (checkpoint, loras) = (key.checkpoint.clone(), key.loras.clone());
        tracing::info_span!("load_models").in_scope(|| self.ensure_loaded(id, key, loaded))?;
        let models = &loaded.as_ref().unwrap().1;
        self.enter(id, Phase::EncodingPrompts, 13);
        let conds = self.encode_prompts(models, spec, &prompts)?;
        let image_prompts = self.encode_image_prompts(id, spec, &mut state.image_prompts)?;
        let disable_initial_latent = inpaint.is_some_and(|o| o.disable_initial_latent);
        let init = match &prepared {
            Some(prepared) => encode_input(&models.base, prepared, &state.torch_global, head.as_ref(), disable_initial_latent)?,
            None => None,
        };
        let size = init.as_ref().map_or((p.width, p.height), |e| (e.width(), e.height()));
        let controlnets = self.prepare_controlnets(id, spec, &models.base, size, &mut state.controlnets)?;
        let softness = spec.fooocus.as_ref().map_or(0.0, |f| f.controlnet_softness as f64);
        let saver = Saver::new(self, spec, id, &checkpoint, &loras);
        let synthetic_switch = refiner_switch.filter(|_| synthetic);
        let saver = match &init {
            Some(encoded) => saver.with_ran(encoded.width(), encoded.height(), p.steps, synthetic_switch),
            None => saver,
        };
        let all_steps = (p.steps * count).max(1);
        for i in 0..count {
            let _span = tracing::info_span!("image", index = i, seed = seeds[i as usize]).entered();
            // Each step's time, from this image's start (not the previous image's decode and save).
            let mut last_step = std::time::Instant::now();
            let (cond, uncond) = &conds[i as usize];
            let mut params = engine_params(spec, seeds[i as usize]).map_err(|e| e.to_string())?;
            params.torch_global = Some(state.torch_global.clone());
            params.image_prompts = image_prompts.clone();
            (params.controls, params.control_softness) = (controlnets.clone(), softness);
            if let Some(encoded) = &init {
                encoded.apply(&mut params);
            }
            let mut on_step = |pr: focal_engine::Progress| {
                crate::metrics::observe("focal_engine_step_seconds", &[], last_step.elapsed().as_secs_f64());
                last_step = std::time::Instant::now();
                let done = i * p.steps + pr.step as u32;
                let preview = pr.preview.and_then(|img| image_from_rgb(&img).ok());
                self.update(id, false, |e| {
                    let progress = &mut e.info.progress;
                    progress.enter(Phase::Sampling, (15 + 85 * done / all_steps) as u8);
                    progress.image = i;
                    progress.step = pr.step as u32;
                    if preview.is_some() {
                        e.preview = preview;
                    }
                });
                !self.stop_running.load(Ordering::Relaxed)
            };
            let swap = spec.fooocus.as_ref().map(|f| f.refiner_swap_method.as_str()).unwrap_or_default();
            let refiner_at = match (&models.refiner, refiner_switch) {
                (Some(model), Some(switch)) => {
                    Some(Refiner { model, switch: refiner_switch_step(p.steps as usize, switch), swap: swap_method(swap)? })
                }
                _ => None,
            };
            let out = match models.base.generate_with_refiner(&params, cond, uncond, refiner_at, p.preview, &mut on_step) {
                Ok(o) => o,
                Err(focal_engine::EngineError::Cancelled) => {
                    self.update(id, false, |e| e.info.stopped = true);
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            };
            self.update(id, false, |e| e.info.progress.enter(Phase::Saving, e.info.progress.percent));
            let image = match &prepared {
                Some(Prepared::Inpaint(plan)) => self.finish_inpaint(id, plan, &out.image, &state.upscalers)?,
                _ => out.image,
            };
            let image = self.post_process(spec, image)?;
            let path = saver.save(i, out.seed, &image, &prompts[i as usize])?;
            self.update(id, true, |e| e.info.images.push(JobImage { seed: out.seed, path }));
        }
        Ok(())
    }

    /// The job's image steps, in order, on one image.
    fn post_process(&self, spec: &JobSpec, image: RgbImage) -> Result<RgbImage, String> {
        let steps: Vec<StepCall> = spec.post_steps.iter().chain(&self.options.output_steps).cloned().collect();
        if steps.is_empty() {
            return Ok(image);
        }
        let _span = tracing::info_span!("image_steps", steps = steps.len()).entered();
        let pipeline = self.images.get().ok_or("this host runs no image steps")?;
        let out = pipeline.run(&steps, image_from_rgb(&image)?)?;
        crate::decode::decode(&out.encoded, &self.options.limits.image).map_err(|e| format!("the image steps' result: {e}"))
    }
}

/// What a panic said (a `panic!` with a message, or an `unwrap` of an error): a library that
/// unwraps a failed CUDA allocation still names it, so the job is told apart as out of memory.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied()).unwrap_or("no message")
}

/// An engine error that says the device's memory ran out (CUDA's allocator, cuBLAS's or cuDNN's).
fn out_of_device_memory(error: &str) -> bool {
    [
        "CUDA_ERROR_OUT_OF_MEMORY",
        "CUBLAS_STATUS_ALLOC_FAILED",
        "cudaErrorMemoryAllocation",
        "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
    ]
    .iter()
    .any(|m| error.contains(m))
}

/// What the engine worker keeps between jobs.
#[derive(Default)]
struct WorkerState {
    loaded: Option<(ModelKey, Loaded)>,
    /// Shared with the image-task component's upscaler calls (on this thread).
    upscalers: Arc<std::sync::Mutex<Upscalers>>,
    /// torch's global generator as the last job left it (Fooocus's encodes draw from it).
    torch_global: TorchGlobal,
    image_prompts: ImagePromptModels,
    controlnets: ControlNetModels,
}

impl WorkerState {
    /// Drop every model this worker holds (`clean_vram`, or a job that ran out of GPU memory):
    /// the base model and refiner, image-prompt and ControlNet models. Whether a base model was
    /// loaded (the others are only loaded beside one).
    fn free_models(&mut self) -> bool {
        self.image_prompts = ImagePromptModels::default();
        self.controlnets = ControlNetModels::default();
        self.loaded.take().is_some()
    }
}

/// Writes a job's images: file name, format and the metadata Fooocus embeds.
struct Saver<'a> {
    jobs: &'a JobManager,
    spec: &'a JobSpec,
    stem: String,
    format: Format,
    base_model: String,
    base_model_hash: String,
    /// (file stem, weight, hash) of each merged LoRA.
    loras: Vec<(String, f32, String)>,
    /// Metadata entries (key → JSON text) set by what the job ran rather than by the request:
    /// an image task's sampled size and steps, the synthetic refiner's switch.
    ran: Vec<(String, String)>,
    /// Whether to embed the metadata at all (Fooocus embeds none in a fast upscale).
    embed: bool,
}

impl<'a> Saver<'a> {
    fn new(
        jobs: &'a JobManager,
        spec: &'a JobSpec,
        id: &str,
        checkpoint: &std::path::Path,
        loras: &[focal_engine::lora::LoraSpec],
    ) -> Self {
        let stem_of = |p: &std::path::Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Saver {
            jobs,
            spec,
            stem: if spec.output.save_name.is_empty() { id.to_string() } else { spec.output.save_name.clone() },
            format: Format::from_extension(&spec.output.extension).unwrap_or(Format::Png),
            base_model: stem_of(checkpoint),
            base_model_hash: jobs.model_hash(checkpoint),
            loras: loras.iter().map(|l| (stem_of(&l.path), l.weight, jobs.model_hash(&l.path))).collect(),
            ran: vec![],
            embed: true,
        }
    }

    /// Fooocus logs an image task's sampled size and steps, and 0.8 as the switch of its
    /// synthetic refiner, where the request had its own.
    fn with_ran(mut self, width: u32, height: u32, steps: u32, synthetic_switch: Option<f32>) -> Self {
        self.ran.push(("resolution".into(), serde_json::Value::String(format!("({width}, {height})")).to_string()));
        self.ran.push(("steps".into(), steps.to_string()));
        if let Some(switch) = synthetic_switch {
            self.ran.push(("refiner_switch".into(), switch.to_string()));
        }
        self
    }

    /// Save image `index`; returns the path it is served at.
    fn save(&self, index: u32, seed: u64, image: &RgbImage, prompt: &PromptOutput) -> Result<String, String> {
        let _span = tracing::info_span!("save").entered();
        let metadata = self.spec.fooocus.as_ref().and_then(|f| f.metadata.as_ref()).filter(|_| self.embed);
        let parameters = metadata.map(|m| {
            let facts = ImageFacts {
                seed,
                base_model: &self.base_model,
                base_model_hash: &self.base_model_hash,
                width: image.width,
                height: image.height,
                loras: &self.loras,
            };
            let mut entries = prompt_entries(&m.entries, prompt);
            for (key, value) in &self.ran {
                if let Some(entry) = entries.iter_mut().find(|(k, _)| k == key) {
                    entry.1 = value.clone();
                }
            }
            (metadata::parameters(&m.scheme, &entries, &facts), m.scheme.clone())
        });
        let embedded = parameters.as_ref().map(|(parameters, scheme)| Embedded { parameters, scheme });
        let bytes = outputs::encode(image, self.format, embedded.as_ref()).map_err(|e| format!("encoding the image: {e:#}"))?;
        let name = format!("{}-{index}.{}", self.stem, self.spec.output.extension.to_ascii_lowercase());
        let rel = self.jobs.options.outputs.save(&self.spec.owner, &name, &bytes).map_err(|e| format!("{e:#}"))?;
        Ok(format!("/files/{rel}"))
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

#[cfg(test)]
mod tests {
    use super::{out_of_device_memory, panic_message};

    #[test]
    fn device_memory_errors_are_told_apart() {
        // As candle's CUDA backend reports cudarc's and cuBLAS's errors.
        assert!(out_of_device_memory(r#"DriverError(CUDA_ERROR_OUT_OF_MEMORY, "out of memory")"#));
        assert!(out_of_device_memory("cublas error: CUBLAS_STATUS_ALLOC_FAILED"));
        // cuDNN 9's status for a failed device allocation (its host one is not the GPU's memory).
        assert!(out_of_device_memory("CudnnError(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)"));
        assert!(!out_of_device_memory("CudnnError(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED)"));
        assert!(!out_of_device_memory("cannot load the CLIP vision model (missing file)"));
        let unwrapped =
            std::panic::catch_unwind(|| std::hint::black_box(Err::<(), _>("DriverError(CUDA_ERROR_OUT_OF_MEMORY)")).unwrap()).unwrap_err();
        assert!(out_of_device_memory(panic_message(&*unwrapped)), "{}", panic_message(&*unwrapped));
    }
}
