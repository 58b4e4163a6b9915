//! The one engine worker: a FIFO queue of generation jobs run on a dedicated thread that owns
//! the SDXL model, exposed to plugins as the `engine` capability.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use focal_engine::{GenerationParams, LoadOptions, SdxlModel};
use focal_runtime::services::{BoxFuture, EngineService, GenerationRequest, Job, JobImage, JobProgress, JobState};
use tokio::sync::watch;

struct GenerationJob {
    id: String,
    request: GenerationRequest,
    progress: watch::Sender<JobProgress>,
    cancelled: AtomicBool,
    images: Mutex<Vec<Arc<JobImage>>>,
}

impl Job for GenerationJob {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn progress(&self) -> JobProgress {
        self.progress.borrow().clone()
    }

    fn wait(&self, timeout: Duration) -> BoxFuture<'_, JobProgress> {
        let mut rx = self.progress.subscribe();
        Box::pin(async move {
            let ended = |p: &JobProgress| matches!(p.state, JobState::Finished | JobState::Failed(_) | JobState::Cancelled);
            let _ = tokio::time::timeout(timeout, rx.wait_for(ended)).await;
            let p = rx.borrow().clone();
            p
        })
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        // A job still in the queue ends now; a running one stops at its next step.
        self.progress.send_if_modified(|p| {
            if p.state == JobState::Queued {
                p.state = JobState::Cancelled;
                true
            } else {
                false
            }
        });
    }

    fn images(&self) -> Result<Vec<Arc<JobImage>>, String> {
        match self.progress().state {
            JobState::Finished => Ok(self.images.lock().unwrap().clone()),
            JobState::Failed(e) => Err(e),
            other => Err(format!("the task is {other:?}, not finished")),
        }
    }
}

/// Queue shared by the service (producers) and the worker thread (consumer).
#[derive(Default)]
struct Queue {
    jobs: Mutex<VecDeque<Arc<GenerationJob>>>,
    ready: Condvar,
}

pub struct EngineWorker {
    queue: Arc<Queue>,
    next_id: AtomicU64,
    max_queue: usize,
}

impl EngineWorker {
    /// Start the worker thread; the model is loaded on the first job (as Fooocus does), so the
    /// server starts at once and a missing checkpoint fails jobs with a clear message.
    pub fn start(checkpoint: PathBuf, max_queue: usize) -> Arc<Self> {
        let queue = Arc::new(Queue::default());
        let q = queue.clone();
        std::thread::Builder::new()
            .name("focal-engine".into())
            .spawn(move || worker_loop(q, checkpoint))
            .expect("spawning the engine thread");
        Arc::new(Self { queue, next_id: AtomicU64::new(1), max_queue })
    }
}

impl EngineService for EngineWorker {
    fn submit(&self, request: GenerationRequest) -> Result<Arc<dyn Job>, String> {
        // Validate before queueing so the caller can answer 422 naming the field.
        to_params(&request, 0).map_err(|e| e.to_string())?.validate(8).map_err(|e| e.to_string())?;
        let mut jobs = self.queue.jobs.lock().unwrap();
        if jobs.len() >= self.max_queue {
            return Err("QUEUE_IS_FULL".into());
        }
        let total = request.steps * request.image_number.max(1);
        let (tx, _) = watch::channel(JobProgress { state: JobState::Queued, step: 0, total_steps: total });
        let job = Arc::new(GenerationJob {
            id: format!("{:016x}", self.next_id.fetch_add(1, Ordering::Relaxed)),
            request,
            progress: tx,
            cancelled: AtomicBool::new(false),
            images: Mutex::new(Vec::new()),
        });
        jobs.push_back(job.clone());
        self.queue.ready.notify_one();
        Ok(job)
    }
}

fn to_params(r: &GenerationRequest, index: u32) -> focal_engine::Result<GenerationParams> {
    let mut p = GenerationParams::txt2img(&r.prompt, r.width, r.height, r.steps as usize, r.seed.wrapping_add(index as u64));
    p.negative_prompt = r.negative_prompt.clone();
    p.cfg = r.guidance_scale;
    p.sampler = r.sampler.parse()?;
    p.scheduler = r.scheduler.parse()?;
    Ok(p)
}

fn worker_loop(queue: Arc<Queue>, checkpoint: PathBuf) {
    let mut model: Option<SdxlModel> = None;
    loop {
        let job = {
            let mut jobs = queue.jobs.lock().unwrap();
            loop {
                if let Some(j) = jobs.pop_front() {
                    break j;
                }
                jobs = queue.ready.wait(jobs).unwrap();
            }
        };
        if job.cancelled.load(Ordering::Relaxed) {
            continue;
        }
        let result = (|| -> Result<(), String> {
            if model.is_none() {
                tracing::info!(checkpoint = %checkpoint.display(), "loading model");
                model = Some(SdxlModel::load(&checkpoint, &LoadOptions::default()).map_err(|e| e.to_string())?);
            }
            run_job(model.as_ref().unwrap(), &job)
        })();
        job.progress.send_modify(|p| {
            p.state = match result {
                Ok(()) => JobState::Finished,
                Err(e) if e == "cancelled" => JobState::Cancelled,
                Err(e) => JobState::Failed(e),
            }
        });
    }
}

fn run_job(model: &SdxlModel, job: &GenerationJob) -> Result<(), String> {
    let r = &job.request;
    job.progress.send_modify(|p| p.state = JobState::Running);
    let cond = model.encode_prompt(&r.prompt, 2).map_err(|e| e.to_string())?;
    let uncond = model.encode_prompt(&r.negative_prompt, 2).map_err(|e| e.to_string())?;
    for i in 0..r.image_number.max(1) {
        let params = to_params(r, i).map_err(|e| e.to_string())?;
        let done_before = i * r.steps;
        let out = model.generate_with(&params, &cond, &uncond, false, &mut |pr| {
            job.progress.send_modify(|p| p.step = done_before + pr.step as u32);
            !job.cancelled.load(Ordering::Relaxed)
        });
        let out = match out {
            Ok(o) => o,
            Err(focal_engine::EngineError::Cancelled) => return Err("cancelled".into()),
            Err(e) => return Err(e.to_string()),
        };
        let png = out.image.encode_png().map_err(|e| e.to_string())?;
        job.images.lock().unwrap().push(Arc::new(JobImage { width: out.image.width, height: out.image.height, seed: out.seed, png }));
    }
    Ok(())
}
