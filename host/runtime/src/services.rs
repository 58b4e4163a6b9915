//! What the host offers plugins beyond WASI, as traits the server implements (the runtime
//! knows nothing of queues, files or candle). The records are the WIT types themselves, so a
//! job spec is defined once, in `wit/plugin.wit`, and stored as JSON by the server.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use crate::bindings::focal::plugin::engine::{
    GenerationParams, ImageMetadata, InputImage, JobImage, JobInfo, JobSpec, JobStage, Lora, ModelFiles, OutputOptions,
    QueueInfo, SamplingPatches, SubmitError,
};
pub use crate::bindings::focal::plugin::files::File;
pub use crate::bindings::step::exports::focal::plugin::prompt_processor::PromptTask;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The `engine` capability: jobs on the one engine worker, and the model files it can use.
pub trait EngineService: Send + Sync {
    fn submit(&self, spec: JobSpec) -> Result<String, SubmitError>;
    fn get(&self, id: &str) -> Option<JobInfo>;
    /// Resolve when the job ends or `timeout` passes, whichever is first.
    fn wait(&self, id: &str, timeout: Duration) -> BoxFuture<'_, Option<JobInfo>>;
    fn preview(&self, id: &str) -> Option<Vec<u8>>;
    fn image_file(&self, id: &str, index: u32) -> Option<Vec<u8>>;
    fn stop(&self);
    fn queue(&self) -> QueueInfo;
    fn history(&self, job_id: Option<&str>, offset: u32, limit: u32) -> (Vec<JobInfo>, Vec<JobInfo>);
    fn delete(&self, id: &str) -> bool;
    fn models(&self) -> ModelFiles;
    fn release_memory(&self);
}

/// The `files` capability: read what the host wrote to its outputs folder.
pub trait FileService: Send + Sync {
    fn read(&self, path: &str, format: Option<&str>) -> Option<File>;
}

/// The `fetch` capability: outbound GET under the host's policy.
pub trait FetchService: Send + Sync {
    fn get(&self, url: String) -> BoxFuture<'_, Result<Vec<u8>, String>>;
}

/// What the loaded prompt steps offer endpoint plugins (`focal:plugin/prompts`).
pub trait PromptService: Send + Sync {
    fn styles(&self) -> BoxFuture<'_, Vec<String>>;
}

/// Fooocus V2 prompt expansion on the host's GPT-2 (`focal:plugin/expansion`).
pub trait ExpansionService: Send + Sync {
    fn expand(&self, prompt: String, seed: u64) -> BoxFuture<'_, Result<String, String>>;
}

/// The host services a plugin may be granted; each is `None` when the host has none.
#[derive(Clone, Default)]
pub struct Services {
    pub engine: Option<std::sync::Arc<dyn EngineService>>,
    pub files: Option<std::sync::Arc<dyn FileService>>,
    pub fetch: Option<std::sync::Arc<dyn FetchService>>,
    pub expansion: Option<std::sync::Arc<dyn ExpansionService>>,
    /// Always granted (read-only).
    pub prompts: Option<std::sync::Arc<dyn PromptService>>,
}
