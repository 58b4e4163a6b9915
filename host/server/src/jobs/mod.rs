//! The job manager behind the `engine` capability: the queue (job records, their states and
//! their SQLite rows), what clients may ask of it (`EngineService`), and the end of a job
//! (history, webhooks). The worker that runs jobs is `worker`, the models it holds `models`,
//! and the mapping of a job's parameters onto the engine `translate`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use focal_core::image_task::{ImageTaskCall, ImageTaskOutput, UpscaleService};
use focal_core::services::{BoxFuture, EngineService};
use focal_core::{Image, JobInfo, JobSpec, JobStage, Owner, Phase, QueueInfo, StepCall, SubmitError};
use focal_models::ModelsDir;
use focal_runtime::prompts::{PromptInput, PromptOutput};
use serde_json::json;
use tokio::sync::watch;

use crate::limits::RequestLimits;
use crate::metadata;
use crate::outputs::{Format, Outputs};
use crate::store::{JobStore, SqliteStore};
use crate::webhook::Webhooks;
use queue::{Entry, Queue};

mod controlnets;
mod image_prompts;
pub use controlnets::CONTROLNET_KINDS;
pub use image_prompts::IMAGE_PROMPT_KINDS;
mod image_tasks;
mod inpaint_task;
mod models;
mod queue;
mod translate;
mod upscaler;
mod worker;

/// The label of plain text-to-image jobs (contract 0.1.0's one runnable job type).
pub const TEXT_TO_IMAGE: &str = "Text to Image";

pub struct JobOptions {
    pub models: ModelsDir,
    /// Checkpoint file name → URL (from the preset): the default checkpoint is fetched on first
    /// use when missing. Requests naming other missing files get the default, as in the seed.
    pub downloads: BTreeMap<String, String>,
    /// Whether missing models may be fetched at all (`focal generate` never downloads: it says
    /// where to put the file).
    pub allow_downloads: bool,
    /// Checkpoints the operator named outside the models folder (`focal generate`'s paths), by
    /// file name; clients can only name files inside the models folder.
    pub extra_checkpoints: BTreeMap<String, PathBuf>,
    /// Compute precision of the loaded models.
    pub dtype: candle_core::DType,
    /// The VAE's (`None`: the engine's default for the device and dtype).
    pub vae_dtype: Option<candle_core::DType>,
    /// Where the engine runs; the noise is made on the CPU either way (torch's seeds).
    pub device: candle_core::Device,
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
    /// The operator's image steps (`focal serve --output-step`), run on every saved image after
    /// the job's own `post_steps`.
    pub output_steps: Vec<StepCall>,
    /// Tenants whose quotas submits are checked against (none: no quotas).
    pub tenants: Option<Arc<crate::tenants::TenantStore>>,
}

/// Turns one image's prompt into what the engine encodes: the prompt-step plugins
/// (`crate::steps::PluginSteps`). Without one, the prompt is encoded as given.
pub trait PromptPipeline: Send + Sync {
    fn run(&self, input: PromptInput) -> Result<PromptOutput, String>;
}

/// The image plugins a job calls: its image steps (`post_steps`) on each image it saves, and
/// the image-task component for the pixel work of image tasks.
pub trait ImagePipeline: Send + Sync {
    fn run(&self, steps: &[StepCall], image: Image) -> Result<Image, String>;
    /// One call of the image-task component, `upscaler` serving its super-resolution.
    fn task(&self, call: ImageTaskCall, upscaler: Arc<dyn UpscaleService>) -> Result<ImageTaskOutput, String>;
}

pub struct JobManager {
    queue: Mutex<Queue>,
    /// Wakes the worker: a job was queued or memory should be released.
    work: Condvar,
    /// Bumped on every change, so waiters re-check their job.
    changed: watch::Sender<u64>,
    /// Taken before the queue lock is released and written after it, so rows are written in
    /// the order the states changed without readers waiting on the database.
    store: Mutex<Box<dyn JobStore>>,
    options: JobOptions,
    webhooks: Option<Webhooks>,
    stop_running: AtomicBool,
    release_model: AtomicBool,
    hashes: Mutex<HashMap<PathBuf, String>>,
    prompts: OnceLock<Arc<dyn PromptPipeline>>,
    images: OnceLock<Arc<dyn ImagePipeline>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl JobManager {
    /// Open the job database, requeue what a previous run left unfinished and start the worker.
    /// The model is loaded on the first job, as Fooocus does, so the server starts at once.
    pub fn start(options: JobOptions, webhooks: Option<Webhooks>) -> Result<Arc<Self>> {
        let mut store: Box<dyn JobStore> = Box::new(SqliteStore::open(&options.database)?);
        let (queue, requeued) = Queue::restore(store.load()?);
        for id in &requeued {
            let entry = queue.entry_of(id).expect("requeued jobs are in the queue");
            store.put(&entry.spec, &entry.info)?;
        }
        if !requeued.is_empty() {
            tracing::info!(count = requeued.len(), "requeued jobs left unfinished by the previous run");
        }
        let (changed, _) = watch::channel(0);
        let manager = Arc::new(Self {
            queue: Mutex::new(queue),
            work: Condvar::new(),
            changed,
            store: Mutex::new(store),
            options,
            webhooks,
            stop_running: AtomicBool::new(false),
            release_model: AtomicBool::new(false),
            hashes: Mutex::new(HashMap::new()),
            prompts: OnceLock::new(),
            images: OnceLock::new(),
        });
        manager.trim_history();
        let worker = manager.clone();
        std::thread::Builder::new().name("focal-engine".into()).spawn(move || worker.worker_loop())?;
        Ok(manager)
    }

    /// Run every job's image steps through `pipeline` from now on (set once, at start-up).
    pub fn set_image_pipeline(&self, pipeline: Arc<dyn ImagePipeline>) {
        let _ = self.images.set(pipeline);
    }

    /// Route every job's prompts through `pipeline` from now on (set once, at start-up).
    pub fn set_prompt_pipeline(&self, pipeline: Arc<dyn PromptPipeline>) {
        let _ = self.prompts.set(pipeline);
    }

    /// Write `entry`'s row after the queue lock is released, in the order of the changes: the
    /// store lock is taken while the queue lock is still held.
    fn persist(&self, queue: MutexGuard<'_, Queue>, id: &str) {
        let Some(entry) = queue.entry_of(id) else { return };
        let (spec, info) = (entry.spec.clone(), entry.info.clone());
        let mut store = self.store.lock().unwrap();
        drop(queue);
        if let Err(e) = store.put(&spec, &info) {
            tracing::error!(job = %id, "cannot record job: {e:#}");
        }
    }

    /// Apply `f` to a job's record, persist it when asked, and wake waiters.
    fn update(&self, id: &str, persist: bool, f: impl FnOnce(&mut Entry)) {
        let mut queue = self.queue.lock().unwrap();
        if let Some(entry) = queue.entry_mut(id) {
            f(entry);
            if persist {
                self.persist(queue, id);
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Move a job's progress to `phase` at `percent`.
    fn enter(&self, id: &str, phase: Phase, percent: u8) {
        self.update(id, false, |e| e.info.progress.enter(phase, percent));
    }

    fn finish(&self, id: &str, outcome: Result<(), String>) {
        if let Err(e) = &outcome {
            tracing::error!(job = %id, "job failed: {e}");
        }
        let mut notice = None;
        let mut queue = self.queue.lock().unwrap();
        queue.finish(id);
        if let Some(entry) = queue.entry_mut(id) {
            let info = &mut entry.info;
            info.stage = if outcome.is_ok() { JobStage::Success } else { JobStage::Error };
            info.error = outcome.err();
            info.progress.enter(Phase::Finished, 100);
            info.finish_ms = now_ms();
            entry.preview = None;
            // Input images are only needed to run the job; keep the record small.
            entry.spec = entry.spec.released();
            let url = entry.spec.webhook_url.clone().filter(|u| !u.is_empty()).or_else(|| self.options.webhook_url.clone());
            notice = url.map(|url| (url, self.webhook_body(&entry.info)));
            let (owner, info) = (entry.spec.owner.clone(), &entry.info);
            let outcome = match (info.stage, info.stopped) {
                (JobStage::Error, _) => "error",
                (_, true) => "stopped",
                _ => "success",
            };
            let tenant = tenant_label(&owner);
            crate::metrics::inc("focal_jobs_finished_total", &[("tenant", tenant), ("outcome", outcome)]);
            let seconds = info.finish_ms.saturating_sub(info.start_ms) as f64 / 1000.0;
            crate::metrics::observe("focal_job_duration_seconds", &[("tenant", tenant)], seconds);
            set_queued_gauge(&queue, &owner);
            self.persist(queue, id);
        } else {
            drop(queue);
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
            let Some(entry) = self.queue.lock().unwrap().pop_history_beyond(max) else { break };
            self.forget(&entry);
        }
    }

    /// Delete a finished job's files and record.
    fn forget(&self, entry: &Entry) {
        for img in &entry.info.images {
            self.options.outputs.remove(&entry.spec.owner, img.path.trim_start_matches("/files/"));
        }
        if let Err(e) = self.store.lock().unwrap().delete(&entry.info.id) {
            tracing::error!(job = %entry.info.id, "cannot delete job record: {e:#}");
        }
    }
}

/// An owner as a metrics label: the tenant's name, `host` for the host's own jobs.
fn tenant_label(owner: &Owner) -> &str {
    if owner.0.is_empty() {
        crate::tenants::HOST_LABEL
    } else {
        &owner.0
    }
}

fn set_queued_gauge(queue: &Queue, owner: &Owner) {
    crate::metrics::set("focal_jobs_queued", &[("tenant", tenant_label(owner))], queue.queue_info(owner).running_size as f64);
}

impl EngineService for JobManager {
    fn submit(&self, mut spec: JobSpec) -> Result<String, SubmitError> {
        // Validate before queueing so the plugin can answer 422 naming the field.
        let invalid = |e: String| SubmitError::Invalid(e);
        self.options.limits.check_job(&spec).map_err(invalid)?;
        translate::engine_params(&spec, 0).map_err(|e| invalid(e.to_string()))?.validate(8).map_err(|e| invalid(e.to_string()))?;
        if Format::from_extension(&spec.output.extension).is_none() {
            return Err(invalid(format!("save_extension '{}' is not one of png, jpg, jpeg, webp", spec.output.extension)));
        }
        if let Some(m) = spec.fooocus.as_ref().and_then(|f| f.metadata.as_ref()) {
            if !metadata::is_known_scheme(&m.scheme) {
                return Err(invalid(format!("meta_scheme '{}' is not one of fooocus, a1111", m.scheme)));
            }
        }
        let stem = &spec.output.save_name;
        if stem.contains(['/', '\\', '\0']) || stem.starts_with('.') {
            return Err(invalid(format!("save_name '{stem}' must be a plain file name")));
        }
        spec.output.extension = spec.output.extension.to_ascii_lowercase();
        let id = uuid::Uuid::new_v4().to_string();
        let info = JobInfo::waiting(id.clone(), &spec, now_ms());
        let mut queue = self.queue.lock().unwrap();
        if queue.active() >= self.options.max_queue {
            return Err(SubmitError::QueueFull);
        }
        if let Some(tenants) = &self.options.tenants {
            let p = &spec.params;
            let queued = queue.queue_info(&spec.owner).running_size as usize;
            let images = p.image_number.max(1);
            tenants.admit_job(&spec.owner, images, p.width as u64 * p.height as u64, p.steps, queued).map_err(SubmitError::OverQuota)?;
        }
        let owner = spec.owner.clone();
        queue.push(Entry { spec, info, preview: None });
        crate::metrics::inc("focal_jobs_submitted_total", &[("tenant", tenant_label(&owner))]);
        set_queued_gauge(&queue, &owner);
        self.persist(queue, &id);
        self.work.notify_one();
        self.changed.send_modify(|v| *v += 1);
        Ok(id)
    }

    fn get(&self, owner: &Owner, id: &str) -> Option<JobInfo> {
        self.queue.lock().unwrap().entry(owner, id).map(|e| e.info.clone())
    }

    fn wait(&self, owner: &Owner, id: &str, timeout: Duration) -> BoxFuture<'_, Option<JobInfo>> {
        let (owner, id) = (owner.clone(), id.to_string());
        let mut rx = self.changed.subscribe();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                rx.borrow_and_update();
                let info = self.get(&owner, &id)?;
                if info.stage.ended() || tokio::time::Instant::now() >= deadline {
                    return Some(info);
                }
                if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                    return self.get(&owner, &id);
                }
            }
        })
    }

    fn preview(&self, owner: &Owner, id: &str) -> Option<Image> {
        self.queue.lock().unwrap().entry(owner, id).and_then(|e| e.preview.clone())
    }

    fn image_file(&self, owner: &Owner, id: &str, index: u32) -> Option<Vec<u8>> {
        let path = self.get(owner, id)?.images.get(index as usize)?.path.clone();
        self.options.outputs.read_file(owner, path.trim_start_matches("/files/"))
    }

    fn stop(&self, owner: &Owner, id: Option<&str>) -> bool {
        let mut queue = self.queue.lock().unwrap();
        let running_is_mine = queue.running().is_some_and(|r| queue.entry(owner, r).is_some() && id.is_none_or(|id| id == r));
        // Only a running job is flagged (the seed's flag outlived an idle stop and cancelled
        // the next job).
        if running_is_mine {
            self.stop_running.store(true, Ordering::Relaxed);
            return true;
        }
        let Some(id) = id else { return false };
        if queue.cancel_waiting(owner, id, now_ms()).is_none() {
            return false;
        }
        crate::metrics::inc("focal_jobs_finished_total", &[("tenant", tenant_label(owner)), ("outcome", "stopped")]);
        set_queued_gauge(&queue, owner);
        self.persist(queue, id);
        self.changed.send_modify(|v| *v += 1);
        true
    }

    fn queue(&self, owner: &Owner) -> QueueInfo {
        self.queue.lock().unwrap().queue_info(owner)
    }

    fn history(&self, owner: &Owner, job_id: Option<&str>, offset: u32, limit: u32) -> (Vec<JobInfo>, Vec<JobInfo>) {
        self.queue.lock().unwrap().history(owner, job_id, offset, limit)
    }

    fn delete(&self, owner: &Owner, id: &str) -> bool {
        let removed = self.queue.lock().unwrap().remove_finished(owner, id);
        match removed {
            Some(entry) => {
                self.forget(&entry);
                true
            }
            None => false,
        }
    }

    fn release_memory(&self) {
        self.release_model.store(true, Ordering::Relaxed);
        self.work.notify_one();
    }
}
