//! The job manager behind the `engine` capability: one worker thread owns the SDXL model and
//! runs jobs in FIFO order; every job is recorded in SQLite when queued, started and finished;
//! finished images go to the outputs folder; webhooks are delivered off the worker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use focal_engine::freeu::FreeU;
use focal_engine::patches::FooocusPatches;
use focal_engine::pipeline::{refiner_switch_step, Refiner, RefinerSwap};
use focal_engine::lora::LoraSpec;
use focal_engine::sdxl::Conditioning;
use focal_engine::interposer::Interposer;
use focal_engine::refiner::RefinerModel;
use focal_engine::{GenerationParams, LoadOptions, SdxlModel};
use focal_models::{Downloader, ModelsDir};
use focal_runtime::prompts::{PromptInput, PromptOutput};
use focal_runtime::services::{
    BoxFuture, EngineService, JobImage, JobInfo, JobSpec, JobStage, Lora, ModelFiles, QueueInfo, SubmitError,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::decode;
use crate::limits::RequestLimits;
use crate::metadata::{self, ImageFacts};
use crate::outputs::{self, Embedded, Format, Outputs};
use crate::store::Store;
use crate::webhook::Webhooks;

/// The one job type this engine version runs; the others are accepted by the API and end with
/// an error that says what is missing.
pub const TEXT_TO_IMAGE: &str = "Text to Image";

pub struct JobOptions {
    pub models: ModelsDir,
    /// Checkpoint file name → URL (from the preset): the default checkpoint is fetched on first
    /// use when missing. Requests naming other missing files get the default, as in the seed.
    pub downloads: BTreeMap<String, String>,
    /// Checkpoint used when a job names none or one that does not exist (as the seed does).
    pub default_checkpoint: PathBuf,
    /// Waiting plus running jobs allowed; more get `QUEUE_IS_FULL`.
    pub max_queue: usize,
    /// Finished jobs kept (oldest deleted with their files beyond it); 0 keeps all.
    pub max_history: usize,
    /// Webhook for jobs that name none.
    pub webhook_url: Option<String>,
    /// Prefix of the absolute URLs sent in webhooks, e.g. `http://127.0.0.1:8888`.
    pub base_url: String,
    pub database: PathBuf,
    pub outputs: Outputs,
    /// Sizes a job may ask for (checked at submit, before anything is queued).
    pub limits: RequestLimits,
}

/// Turns one image's prompt into what the engine encodes: the prompt-step plugins
/// (`crate::prompts::PluginPrompts`). Without one, the prompt is encoded as given.
pub trait PromptPipeline: Send + Sync {
    fn run(&self, input: PromptInput) -> Result<PromptOutput, String>;
}

/// Fooocus's `MAX_SEED + 1` (2^63): image seeds wrap modulo this.
const SEED_MODULUS: u64 = 1 << 63;

/// Fooocus's `default_max_lora_number`: request and prompt-tag LoRAs together.
const MAX_LORAS: usize = 5;

/// The metadata keys the prompt pipeline decides per image.
const PROMPT_KEYS: [&str; 6] = ["prompt", "negative_prompt", "prompt_expansion", "styles", "full_prompt", "full_negative_prompt"];

/// What a loaded model was built from.
#[derive(Clone, PartialEq)]
struct ModelKey {
    checkpoint: PathBuf,
    loras: Vec<LoraSpec>,
    refiner: Option<PathBuf>,
    vae: Option<PathBuf>,
}

/// The loaded base model and, when the job has one, its refiner.
struct Loaded {
    base: SdxlModel,
    refiner: Option<RefinerModel>,
}

struct Entry {
    spec: JobSpec,
    info: JobInfo,
    preview: Option<Vec<u8>>,
}

#[derive(Default)]
struct Jobs {
    entries: HashMap<String, Entry>,
    waiting: VecDeque<String>,
    running: Option<String>,
    /// Oldest first.
    finished: VecDeque<String>,
    last_job_id: Option<String>,
}

pub struct JobManager {
    jobs: Mutex<Jobs>,
    /// Wakes the worker: a job was queued or memory should be released.
    work: Condvar,
    /// Bumped on every change, so waiters re-check their job.
    changed: watch::Sender<u64>,
    store: Mutex<Store>,
    options: JobOptions,
    webhooks: Option<Webhooks>,
    stop_running: AtomicBool,
    release_model: AtomicBool,
    hashes: Mutex<HashMap<PathBuf, String>>,
    prompts: OnceLock<Arc<dyn PromptPipeline>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn ended(stage: JobStage) -> bool {
    matches!(stage, JobStage::Success | JobStage::Error)
}

impl JobManager {
    /// Open the job database, requeue what a previous run left unfinished and start the worker.
    /// The model is loaded on the first job, as Fooocus does, so the server starts at once.
    pub fn start(options: JobOptions, webhooks: Option<Webhooks>) -> Result<Arc<Self>> {
        let store = Store::open(&options.database)?;
        let mut jobs = Jobs::default();
        let mut finished: Vec<String> = Vec::new();
        for (spec, mut info) in store.load()? {
            let id = info.id.clone();
            if ended(info.stage) {
                finished.push(id.clone());
            } else {
                // Killed while waiting or running: run it again from the start.
                info.stage = JobStage::Waiting;
                info.progress = 0;
                info.start_ms = 0;
                info.status = None;
                info.images.clear();
                store.put(&spec, &info)?;
                jobs.waiting.push_back(id.clone());
            }
            jobs.last_job_id = Some(id.clone());
            jobs.entries.insert(id, Entry { spec, info, preview: None });
        }
        finished.sort_by_key(|id| jobs.entries[id].info.finish_ms);
        jobs.finished = finished.into();
        if !jobs.waiting.is_empty() {
            tracing::info!(count = jobs.waiting.len(), "requeued jobs left unfinished by the previous run");
        }
        let (changed, _) = watch::channel(0);
        let manager = Arc::new(Self {
            jobs: Mutex::new(jobs),
            work: Condvar::new(),
            changed,
            store: Mutex::new(store),
            options,
            webhooks,
            stop_running: AtomicBool::new(false),
            release_model: AtomicBool::new(false),
            hashes: Mutex::new(HashMap::new()),
            prompts: OnceLock::new(),
        });
        manager.trim_history();
        let worker = manager.clone();
        std::thread::Builder::new().name("focal-engine".into()).spawn(move || worker.worker_loop())?;
        Ok(manager)
    }

    /// Route every job's prompts through `pipeline` from now on (set once, at start-up).
    pub fn set_prompt_pipeline(&self, pipeline: Arc<dyn PromptPipeline>) {
        let _ = self.prompts.set(pipeline);
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

    /// The request's LoRAs plus the prompt's `<lora:stem:weight>` tags found in `loras/` (by
    /// file stem; unknown stems and names already requested skipped), at most [`MAX_LORAS`]
    /// besides the performance LoRA, which stays last.
    fn with_tag_loras(&self, requested: &[Lora], tags: &[(String, f32)]) -> Vec<Lora> {
        let is_performance = |l: &Lora| focal_models::presets::PERFORMANCE_LORAS.iter().any(|(f, _)| *f == l.name);
        let (mut loras, performance): (Vec<Lora>, Vec<Lora>) = requested.iter().cloned().partition(|l| !is_performance(l));
        let files = self.options.models.list("loras");
        for (stem, weight) in tags {
            let file = files.iter().find(|f| Path::new(f).file_stem().is_some_and(|s| s == stem.as_str()));
            match file {
                Some(file) if !loras.iter().any(|l| &l.name == file) => loras.push(Lora { name: file.clone(), weight: *weight }),
                Some(_) => {}
                None => tracing::warn!(lora = %stem, "LoRA named in the prompt not found in the models folder; skipped"),
            }
        }
        loras.truncate(MAX_LORAS);
        loras.extend(performance);
        loras
    }

    fn persist(&self, entry: &Entry) {
        if let Err(e) = self.store.lock().unwrap().put(&entry.spec, &entry.info) {
            tracing::error!(job = %entry.info.id, "cannot record job: {e:#}");
        }
    }

    /// Apply `f` to a job's record, persist it when asked, and wake waiters.
    fn update(&self, id: &str, persist: bool, f: impl FnOnce(&mut Entry)) {
        let mut jobs = self.jobs.lock().unwrap();
        if let Some(entry) = jobs.entries.get_mut(id) {
            f(entry);
            if persist {
                self.persist(entry);
            }
        }
        drop(jobs);
        self.changed.send_modify(|v| *v += 1);
    }

    /// A checkpoint from the models folder by name; unknown or empty names fall back to the
    /// default (the seed's behaviour, logged here).
    fn checkpoint_for(&self, name: &str) -> PathBuf {
        let default_name = self.options.default_checkpoint.file_name().and_then(|n| n.to_str());
        if name.is_empty() || name == "None" || Some(name) == default_name {
            return self.options.default_checkpoint.clone();
        }
        if let Some(path) = self.options.models.find("checkpoints", name) {
            return path;
        }
        tracing::warn!(model = name, "unknown base model; using the default");
        self.options.default_checkpoint.clone()
    }

    /// The request's LoRAs that exist in `loras/`; others are skipped with a warning, as the
    /// seed replaces unknown names by "None".
    /// The performance LoRAs (Lightning, Hyper-SD, …) are downloaded when missing: without them
    /// a 4-step image is noise.
    fn lora_specs(&self, id: &str, loras: &[focal_runtime::services::Lora]) -> Result<Vec<LoraSpec>, String> {
        let mut specs = Vec::new();
        for l in loras {
            if let Some(path) = self.options.models.find("loras", &l.name) {
                specs.push(LoraSpec { path, weight: l.weight });
            } else if let Some((_, url)) = focal_models::presets::PERFORMANCE_LORAS.iter().find(|(f, _)| *f == l.name) {
                let dest = self.options.models.folder("loras").join(&l.name);
                self.download(id, url, &dest)?;
                specs.push(LoraSpec { path: dest, weight: l.weight });
            } else {
                tracing::warn!(lora = %l.name, "LoRA not found in the models folder; skipped");
            }
        }
        Ok(specs)
    }

    /// Download a missing checkpoint the preset knows a URL for.
    fn download_if_missing(&self, id: &str, checkpoint: &Path) -> Result<(), String> {
        let name = checkpoint.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match self.options.downloads.get(name).filter(|_| !checkpoint.exists()) {
            Some(url) => self.download(id, url, checkpoint),
            None => Ok(()),
        }
    }

    /// Fetch `url` to `dest`, reporting progress as the job's status.
    fn download(&self, id: &str, url: &str, dest: &Path) -> Result<(), String> {
        let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let downloader = Downloader::new().map_err(|e| e.to_string())?;
        let mut last_pct = u64::MAX;
        downloader
            .fetch(url, dest, None, &mut |done, total| {
                let pct = total.map(|t| done * 100 / t.max(1)).unwrap_or(0);
                if pct != last_pct {
                    last_pct = pct;
                    self.update(id, false, |e| e.info.status = Some(format!("Downloading {name} ({pct}%) ...")));
                }
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// First 10 hex digits of the file's sha256 (Fooocus's model hash), computed once per file.
    fn model_hash(&self, path: &Path) -> String {
        if let Some(h) = self.hashes.lock().unwrap().get(path) {
            return h.clone();
        }
        let hash = (|| -> std::io::Result<String> {
            let mut file = std::fs::File::open(path)?;
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher)?;
            Ok(hasher.finalize().iter().take(5).map(|b| format!("{b:02x}")).collect())
        })()
        .unwrap_or_default();
        self.hashes.lock().unwrap().insert(path.to_path_buf(), hash.clone());
        hash
    }

    fn worker_loop(self: Arc<Self>) {
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
        let checkpoint = self.checkpoint_for(&p.base_model);
        let requested_loras = self.with_tag_loras(&p.loras, &prompts[0].loras);
        let loras = self.lora_specs(id, &requested_loras)?;
        let refiner = p.refiner.as_ref().and_then(|r| match self.options.models.find("checkpoints", &r.model) {
            Some(path) if path != checkpoint => Some(path),
            Some(_) => None,
            // A refiner the preset knows a URL for is fetched on first use, like its base model.
            None if self.options.downloads.contains_key(&r.model) => Some(self.options.models.folder("checkpoints").join(&r.model)),
            None => {
                tracing::warn!(refiner = %r.model, "refiner not found in the models folder; skipped");
                None
            }
        });
        // Fooocus's vae_name: a file from models/vae; an unknown name is an error there too.
        let vae = match p.vae.as_str() {
            "" | "Default (model)" | "None" => None,
            name => Some(self.options.models.find("vae", name).filter(|f| f.is_file()).ok_or_else(|| {
                format!("vae_name '{name}' is not in the models folder's vae/ (available: {})", self.options.models.list("vae").join(", "))
            })?),
        };
        let key = ModelKey { checkpoint: checkpoint.clone(), loras: loras.clone(), refiner: refiner.clone(), vae: vae.clone() };
        // The same checkpoints and LoRA set reuse the merged models; anything else reloads.
        if loaded.as_ref().map(|(k, _)| k != &key).unwrap_or(true) {
            *loaded = None; // free the old models before loading the next
            self.download_if_missing(id, &checkpoint)?;
            tracing::info!(checkpoint = %checkpoint.display(), loras = loras.len(), "loading model");
            let options = LoadOptions { loras: loras.clone(), embeddings_dir: Some(self.options.models.folder("embeddings")), ..Default::default() };
            let base = SdxlModel::load(&checkpoint, &LoadOptions { vae, ..options.clone() })
                .map_err(|e| format!("cannot load the base model ({e:#}); put an SDXL checkpoint in the models folder or pass --base-model"))?;
            for unknown in &base.lora_report.unknown {
                tracing::warn!(job = %id, "LoRA key not merged: {unknown}");
            }
            if let Some(path) = &refiner {
                self.download_if_missing(id, path)?;
            }
            // The refiner gets the same LoRAs, as in Fooocus (what does not fit its UNet is
            // reported, not merged: an SDXL LoRA on an SDXL-refiner checkpoint).
            let refiner = match &refiner {
                Some(path) => {
                    let mut r = RefinerModel::load(path, &options).map_err(|e| format!("cannot load the refiner ({e:#})"))?;
                    if r.has_own_vae() {
                        // SD1.5: Fooocus's latent interposer, fetched on first use as Fooocus's launcher does.
                        let file = self.options.models.folder("vae_approx").join(focal_engine::interposer::FILE_NAME);
                        if !file.is_file() {
                            self.download(id, focal_engine::interposer::URL, &file).map_err(|e| {
                                format!(
                                    "an SD1.5 refiner needs the latent interposer models/vae_approx/{}; fetching it from {} failed ({e}); put the file there",
                                    focal_engine::interposer::FILE_NAME,
                                    focal_engine::interposer::URL
                                )
                            })?;
                        }
                        let interposer = Interposer::load(&file, &options.device).map_err(|e| e.to_string())?;
                        r = r.with_interposer(interposer);
                    }
                    if !r.lora_report.unknown.is_empty() {
                        tracing::info!(job = %id, not_merged = r.lora_report.unknown.len(), "refiner: LoRA modules that do not fit it are skipped");
                    }
                    Some(r)
                }
                None => None,
            };
            *loaded = Some((key, Loaded { base, refiner }));
        }
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

    fn finish(&self, id: &str, outcome: Result<(), String>) {
        if let Err(e) = &outcome {
            tracing::error!(job = %id, "job failed: {e}");
        }
        let mut notice = None;
        {
            let mut jobs = self.jobs.lock().unwrap();
            jobs.running = None;
            if let Some(entry) = jobs.entries.get_mut(id) {
                let info = &mut entry.info;
                info.stage = if outcome.is_ok() { JobStage::Success } else { JobStage::Error };
                info.error = outcome.err();
                info.progress = 100;
                info.status = Some(if info.stopped { "User stopped".into() } else { "Finished".into() });
                info.finish_ms = now_ms();
                entry.preview = None;
                // Input images are only needed to run the job; keep the record small.
                entry.spec.inputs.clear();
                self.persist(entry);
                let url = entry.spec.webhook_url.clone().filter(|u| !u.is_empty()).or_else(|| self.options.webhook_url.clone());
                notice = url.map(|url| (url, self.webhook_body(&entry.info)));
            }
            jobs.finished.push_back(id.to_string());
        }
        self.changed.send_modify(|v| *v += 1);
        self.trim_history();
        if let (Some((url, body)), Some(hooks)) = (notice, &self.webhooks) {
            hooks.send(url, body);
        }
    }

    /// The seed's payload (`job_id`, `job_result: [{url, seed}]`, `[]` on error) plus the stage.
    fn webhook_body(&self, info: &JobInfo) -> serde_json::Value {
        let result: Vec<_> = info
            .images
            .iter()
            .map(|img| json!({"url": format!("{}{}", self.options.base_url, img.path), "seed": img.seed.to_string()}))
            .collect();
        let stage = if info.stage == JobStage::Success { "SUCCESS" } else { "ERROR" };
        json!({"job_id": info.id, "job_result": if info.stage == JobStage::Success { result } else { vec![] }, "job_stage": stage})
    }

    fn trim_history(&self) {
        let max = self.options.max_history;
        if max == 0 {
            return;
        }
        loop {
            let removed = {
                let mut jobs = self.jobs.lock().unwrap();
                if jobs.finished.len() <= max {
                    break;
                }
                let id = jobs.finished.pop_front().unwrap();
                jobs.entries.remove(&id)
            };
            if let Some(entry) = removed {
                self.forget(&entry);
            }
        }
    }

    /// Delete a finished job's files and record.
    fn forget(&self, entry: &Entry) {
        for img in &entry.info.images {
            self.options.outputs.remove(img.path.trim_start_matches("/files/"));
        }
        if let Err(e) = self.store.lock().unwrap().delete(&entry.info.id) {
            tracing::error!(job = %entry.info.id, "cannot delete job record: {e:#}");
        }
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

/// The engine's parameters for one image of a job.
fn engine_params(p: &focal_runtime::services::GenerationParams, seed: u64) -> focal_engine::Result<GenerationParams> {
    let mut params = GenerationParams::txt2img(&p.prompt, p.width, p.height, p.steps as usize, seed);
    params.clip_skip = p.clip_skip.clamp(1, 12) as usize;
    params.negative_prompt = p.negative_prompt.clone();
    params.cfg = p.guidance_scale;
    params.sampler = p.sampler.parse()?;
    params.scheduler = p.scheduler.parse()?;
    params.patches = p.patches.map(|s| FooocusPatches {
        sharpness: s.sharpness,
        adaptive_cfg: s.adaptive_cfg,
        adm_positive: s.adm_positive,
        adm_negative: s.adm_negative,
        adm_end: s.adm_end,
    });
    // The request's decimal, not the f32's binary expansion (1.01, not 1.0099999904632568).
    let decimal = |v: f32| v.to_string().parse::<f64>().unwrap_or(v as f64);
    params.freeu = p.freeu.map(|f| FreeU { b1: decimal(f.b1), b2: decimal(f.b2), s1: decimal(f.s1), s2: decimal(f.s2) });
    Ok(params)
}

impl EngineService for JobManager {
    fn submit(&self, mut spec: JobSpec) -> Result<String, SubmitError> {
        // Validate before queueing so the plugin can answer 422 naming the field.
        let invalid = |e: String| SubmitError::Invalid(e);
        self.options.limits.check_job(&spec).map_err(invalid)?;
        engine_params(&spec.params, 0).map_err(|e| invalid(e.to_string()))?.validate(8).map_err(|e| invalid(e.to_string()))?;
        if Format::from_extension(&spec.output.extension).is_none() {
            return Err(invalid(format!("save_extension '{}' is not one of png, jpg, jpeg, webp", spec.output.extension)));
        }
        if let Some(m) = &spec.output.metadata {
            if !metadata::is_known_scheme(&m.scheme) {
                return Err(invalid(format!("meta_scheme '{}' is not one of fooocus, a1111", m.scheme)));
            }
        }
        let stem = &spec.output.save_name;
        if stem.contains(['/', '\\', '\0']) || stem.starts_with('.') {
            return Err(invalid(format!("save_name '{stem}' must be a plain file name")));
        }
        for input in &spec.inputs {
            decode::decode(&input.data, &self.options.limits.image).map_err(|e| invalid(format!("{}: {e}", input.role)))?;
        }
        spec.output.extension = spec.output.extension.to_ascii_lowercase();
        let id = uuid::Uuid::new_v4().to_string();
        let info = JobInfo {
            id: id.clone(),
            job_type: spec.job_type.clone(),
            stage: JobStage::Waiting,
            progress: 0,
            status: None,
            error: None,
            stopped: false,
            in_queue_ms: now_ms(),
            start_ms: 0,
            finish_ms: 0,
            images: vec![],
            request: spec.request.clone(),
        };
        {
            let mut jobs = self.jobs.lock().unwrap();
            let active = jobs.waiting.len() + jobs.running.is_some() as usize;
            if active >= self.options.max_queue {
                return Err(SubmitError::QueueFull);
            }
            let entry = Entry { spec, info, preview: None };
            self.persist(&entry);
            jobs.entries.insert(id.clone(), entry);
            jobs.waiting.push_back(id.clone());
            jobs.last_job_id = Some(id.clone());
        }
        self.work.notify_one();
        self.changed.send_modify(|v| *v += 1);
        Ok(id)
    }

    fn get(&self, id: &str) -> Option<JobInfo> {
        self.jobs.lock().unwrap().entries.get(id).map(|e| e.info.clone())
    }

    fn wait(&self, id: &str, timeout: Duration) -> BoxFuture<'_, Option<JobInfo>> {
        let id = id.to_string();
        let mut rx = self.changed.subscribe();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                rx.borrow_and_update();
                let info = self.get(&id)?;
                if ended(info.stage) || tokio::time::Instant::now() >= deadline {
                    return Some(info);
                }
                if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                    return self.get(&id);
                }
            }
        })
    }

    fn preview(&self, id: &str) -> Option<Vec<u8>> {
        self.jobs.lock().unwrap().entries.get(id).and_then(|e| e.preview.clone())
    }

    fn image_file(&self, id: &str, index: u32) -> Option<Vec<u8>> {
        let path = self.get(id)?.images.get(index as usize)?.path.clone();
        self.options.outputs.read_file(path.trim_start_matches("/files/"))
    }

    fn stop(&self) {
        // Only a running job is stopped (the seed's flag outlived an idle stop and cancelled
        // the next job).
        if self.jobs.lock().unwrap().running.is_some() {
            self.stop_running.store(true, Ordering::Relaxed);
        }
    }

    fn queue(&self) -> QueueInfo {
        let jobs = self.jobs.lock().unwrap();
        QueueInfo {
            running_size: (jobs.waiting.len() + jobs.running.is_some() as usize) as u32,
            finished_size: jobs.finished.len() as u32,
            last_job_id: jobs.last_job_id.clone(),
        }
    }

    fn history(&self, job_id: Option<&str>, offset: u32, limit: u32) -> (Vec<JobInfo>, Vec<JobInfo>) {
        let jobs = self.jobs.lock().unwrap();
        let wanted = |id: &String| job_id.is_none_or(|j| j == id);
        let info = |id: &String| jobs.entries[id].info.clone();
        let queue = jobs.running.iter().chain(jobs.waiting.iter()).filter(|id| wanted(id)).map(info).collect();
        let history = jobs
            .finished
            .iter()
            .rev()
            .filter(|id| wanted(id))
            .skip(offset as usize)
            .take(limit as usize)
            .map(info)
            .collect();
        (queue, history)
    }

    fn delete(&self, id: &str) -> bool {
        let removed = {
            let mut jobs = self.jobs.lock().unwrap();
            let Some(pos) = jobs.finished.iter().position(|j| j == id) else { return false };
            jobs.finished.remove(pos);
            jobs.entries.remove(id)
        };
        if let Some(entry) = removed {
            self.forget(&entry);
        }
        true
    }

    fn models(&self) -> ModelFiles {
        ModelFiles { checkpoints: self.options.models.list("checkpoints"), loras: self.options.models.list("loras") }
    }

    fn release_memory(&self) {
        self.release_model.store(true, Ordering::Relaxed);
        self.work.notify_one();
    }
}

/// Fooocus's `refiner_swap_method` (empty: its default, joint).
fn swap_method(name: &str) -> Result<RefinerSwap, String> {
    match name {
        "" | "joint" => Ok(RefinerSwap::Joint),
        "separate" => Ok(RefinerSwap::Separate),
        "vae" => Ok(RefinerSwap::Vae),
        other => Err(format!("refiner_swap_method '{other}' is not one of joint, separate, vae")),
    }
}
