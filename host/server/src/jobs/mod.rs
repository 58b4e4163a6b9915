//! The job manager behind the `engine` capability: the queue (job records, their states and
//! their SQLite rows), what clients may ask of it (`EngineService`), and the end of a job
//! (history, webhooks). The worker that runs jobs is `worker`, the models it holds `models`,
//! and the mapping of a job's parameters onto the engine `translate`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use focal_models::ModelsDir;
use focal_runtime::prompts::{PromptInput, PromptOutput};
use focal_runtime::services::{BoxFuture, EngineService, JobInfo, JobSpec, JobStage, ModelFiles, QueueInfo, SubmitError};
use serde_json::json;
use tokio::sync::watch;

use crate::decode;
use crate::limits::RequestLimits;
use crate::metadata;
use crate::outputs::{Format, Outputs};
use crate::store::Store;
use crate::webhook::Webhooks;

mod models;
mod translate;
mod worker;

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

impl EngineService for JobManager {
    fn submit(&self, mut spec: JobSpec) -> Result<String, SubmitError> {
        // Validate before queueing so the plugin can answer 422 naming the field.
        let invalid = |e: String| SubmitError::Invalid(e);
        self.options.limits.check_job(&spec).map_err(invalid)?;
        translate::engine_params(&spec.params, 0).map_err(|e| invalid(e.to_string()))?.validate(8).map_err(|e| invalid(e.to_string()))?;
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
