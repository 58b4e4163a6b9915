//! A job: what was asked (`JobSpec`), by whom (`Owner`), and where it stands (`JobInfo`).

use serde::{Deserialize, Serialize};

use crate::task::{Control, FooocusOptions, GenerationParams, Task};

/// Whose job it is: every query a plugin makes is scoped to its request's owner. The empty
/// owner is the host's own (no tenant bound); tenancy binds requests to other owners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Owner(pub String);

/// An image-step plugin run on every image the job saves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCall {
    pub plugin: String,
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputOptions {
    /// `png`, `jpg`, `jpeg` or `webp`.
    pub extension: String,
    /// File stem: files are `<stem>-<index>.<extension>`; empty means the job id.
    pub save_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    #[serde(default)]
    pub owner: Owner,
    /// Label kept with the job, e.g. `Text to Image`.
    pub label: String,
    pub task: Task,
    pub controls: Vec<Control>,
    pub params: GenerationParams,
    pub fooocus: Option<FooocusOptions>,
    pub output: OutputOptions,
    pub post_steps: Vec<StepCall>,
    /// Called when the job ends (the host's global webhook applies when none).
    pub webhook_url: Option<String>,
    /// The request as the client sent it (JSON).
    pub request: String,
}

impl JobSpec {
    /// The spec with its input image files released: what an ended job keeps.
    pub fn released(&self) -> JobSpec {
        JobSpec {
            task: self.task.released(),
            controls: self.controls.iter().map(|c| Control { image: c.image.released(), ..c.clone() }).collect(),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobStage {
    Waiting,
    Running,
    Success,
    Error,
}

impl JobStage {
    pub fn ended(self) -> bool {
        matches!(self, JobStage::Success | JobStage::Error)
    }
}

/// What the worker is doing for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Waiting,
    LoadingModels,
    Downloading,
    ProcessingPrompts,
    EncodingPrompts,
    Sampling,
    Saving,
    Finished,
}

/// A model file being fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Download {
    pub file: String,
    /// 0–100 of this file.
    pub percent: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// 0–100 over the whole job.
    pub percent: u8,
    /// Image being made (0-based) and how many the job makes.
    pub image: u32,
    pub images: u32,
    /// Sampling step of this image (1-based; 0 before sampling) and its steps.
    pub step: u32,
    pub steps: u32,
    /// Set in phase `Downloading`.
    pub download: Option<Download>,
}

impl Progress {
    pub const WAITING: Progress = Progress { phase: Phase::Waiting, percent: 0, image: 0, images: 0, step: 0, steps: 0, download: None };

    /// Move to `phase` at `percent` (the image and step counters kept).
    pub fn enter(&mut self, phase: Phase, percent: u8) {
        self.phase = phase;
        self.percent = percent;
        self.download = None;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobImage {
    pub seed: u64,
    /// Where the saved file is served: `/files/<date>/<name>`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: String,
    #[serde(default)]
    pub owner: Owner,
    pub label: String,
    pub stage: JobStage,
    pub progress: Progress,
    /// Why the job failed (stage `error`).
    pub error: Option<String>,
    /// Set when the job was stopped before all its images were made.
    pub stopped: bool,
    /// Epoch milliseconds; 0 when not reached yet.
    pub in_queue_ms: u64,
    pub start_ms: u64,
    pub finish_ms: u64,
    pub images: Vec<JobImage>,
    pub request: String,
}

impl JobInfo {
    /// The record of `spec`, just queued as `id` at `in_queue_ms`.
    pub fn waiting(id: String, spec: &JobSpec, in_queue_ms: u64) -> Self {
        Self {
            id,
            owner: spec.owner.clone(),
            label: spec.label.clone(),
            stage: JobStage::Waiting,
            progress: Progress::WAITING,
            error: None,
            stopped: false,
            in_queue_ms,
            start_ms: 0,
            finish_ms: 0,
            images: vec![],
            request: spec.request.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// Waiting plus running jobs.
    pub running_size: u32,
    pub finished_size: u32,
    pub last_job_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue holds as many jobs as the host allows.
    QueueFull,
    /// The request cannot run; the message names the field.
    Invalid(String),
    /// The owner's quota does not allow it now (the HTTP answer is a 429, whatever the plugin says).
    OverQuota(QuotaExceeded),
}

/// Which quota a request went over, and when it can succeed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaExceeded {
    /// The quota's name, e.g. `images_per_day`.
    pub limit: String,
    pub message: String,
    /// Seconds until the limit resets (0: when the owner's queue drains, or never for a size limit).
    pub retry_after_s: u64,
}
