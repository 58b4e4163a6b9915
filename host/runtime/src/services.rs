//! What the host offers plugins beyond WASI, as traits the server implements (the runtime
//! knows nothing of queues or candle).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A generation request as a plugin submits it.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub guidance_scale: f32,
    pub sampler: String,
    pub scheduler: String,
    pub seed: u64,
    pub image_number: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Queued,
    Running,
    Finished,
    Failed(String),
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobProgress {
    pub state: JobState,
    pub step: u32,
    pub total_steps: u32,
}

/// A finished image kept in the host; plugins get a handle and copy bytes only on request.
#[derive(Debug)]
pub struct JobImage {
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub png: Vec<u8>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Job: Send + Sync {
    fn id(&self) -> String;
    fn progress(&self) -> JobProgress;
    /// Resolve when the job ends or `timeout` passes, whichever is first.
    fn wait(&self, timeout: Duration) -> BoxFuture<'_, JobProgress>;
    fn cancel(&self);
    fn images(&self) -> Result<Vec<Arc<JobImage>>, String>;
}

pub trait EngineService: Send + Sync {
    /// Validate and queue; the error names the offending field.
    fn submit(&self, request: GenerationRequest) -> Result<Arc<dyn Job>, String>;
}

/// Resource representations behind the WIT `task` and `image` handles.
pub type TaskRef = Arc<dyn Job>;
pub type ImageRef = Arc<JobImage>;
