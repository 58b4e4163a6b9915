//! What the host offers plugins beyond WASI, as traits the server implements. The runtime's
//! contract bindings call these with domain types, whatever contract version the plugin speaks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::image::Image;
use crate::job::{JobInfo, JobSpec, Owner, QueueInfo, SubmitError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The `engine` capability: jobs on the one engine worker. Every call but `submit` (whose spec
/// names its owner) and `release_memory` sees only `owner`'s jobs.
pub trait EngineService: Send + Sync {
    fn submit(&self, spec: JobSpec) -> Result<String, SubmitError>;
    fn get(&self, owner: &Owner, id: &str) -> Option<JobInfo>;
    /// Resolve when the job ends or `timeout` passes, whichever is first.
    fn wait(&self, owner: &Owner, id: &str, timeout: Duration) -> BoxFuture<'_, Option<JobInfo>>;
    /// The latest step preview of a running job (a PNG).
    fn preview(&self, owner: &Owner, id: &str) -> Option<Image>;
    fn image_file(&self, owner: &Owner, id: &str, index: u32) -> Option<Vec<u8>>;
    /// Stop job `id` (or, without one, the owner's running job): a running job between steps,
    /// a waiting one before it starts. False when there was nothing to stop.
    fn stop(&self, owner: &Owner, id: Option<&str>) -> bool;
    fn queue(&self, owner: &Owner) -> QueueInfo;
    fn history(&self, owner: &Owner, job_id: Option<&str>, offset: u32, limit: u32) -> (Vec<JobInfo>, Vec<JobInfo>);
    fn delete(&self, owner: &Owner, id: &str) -> bool;
    fn release_memory(&self);
}

/// Lists of names the engine accepts (`focal:plugin/catalog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalog {
    Samplers,
    Schedulers,
    Checkpoints,
    Loras,
    Vaes,
    Upscalers,
    InpaintModels,
    Controls,
    ImageSteps,
}

pub trait CatalogService: Send + Sync {
    fn list(&self, catalog: Catalog) -> Vec<String>;
}

/// What `describe` makes of an image: Fooocus's "Photo" (a caption) or "Anime" (tags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescribeStyle {
    Photo,
    Anime,
}

/// Fooocus's describe-image (`focal:plugin/describe`), run in the request, off the async runtime.
pub trait DescribeService: Send + Sync {
    fn describe(&self, image: Image, style: DescribeStyle) -> BoxFuture<'_, Result<String, String>>;
}

/// A face the host's detector found, in the image's pixels: its box, the detector's confidence,
/// and five landmarks (the eyes, the nose, the mouth's corners, as the person's left/right appear
/// in the image: left eye first).
#[derive(Clone, Debug, PartialEq)]
pub struct Face {
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
    pub score: f32,
    pub landmarks: [(f32, f32); 5],
}

/// Fooocus's face detector (`focal:plugin/faces`), run off the async runtime.
pub trait FaceService: Send + Sync {
    /// Faces scoring over `min_score`, best first, overlapping ones removed.
    fn detect(&self, image: Image, min_score: f32) -> BoxFuture<'_, Result<Vec<Face>, String>>;
}

/// Images under the host's limits (`focal:plugin/images`).
pub trait ImageService: Send + Sync {
    /// A PNG, JPEG or WebP checked against the image limits.
    fn decode(&self, encoded: &[u8]) -> Result<Image, String>;
    fn encode_rgb(&self, width: u32, height: u32, pixels: Vec<u8>) -> Result<Image, String>;
    fn rgb(&self, image: &Image) -> Result<Vec<u8>, String>;
    fn png(&self, image: &Image) -> Result<Vec<u8>, String>;
}

/// A file the host wrote, as served.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub content_type: String,
    pub body: Vec<u8>,
}

/// The `files` capability: read what the host wrote to its outputs folder.
pub trait FileService: Send + Sync {
    /// `owner`'s file at `path`: another owner's file is `None`, like a missing one.
    fn read(&self, owner: &Owner, path: &str, format: Option<&str>) -> Option<File>;
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
    pub engine: Option<Arc<dyn EngineService>>,
    /// Granted with `engine`.
    pub catalog: Option<Arc<dyn CatalogService>>,
    /// Always granted.
    pub images: Option<Arc<dyn ImageService>>,
    pub files: Option<Arc<dyn FileService>>,
    pub fetch: Option<Arc<dyn FetchService>>,
    pub expansion: Option<Arc<dyn ExpansionService>>,
    /// Always granted (read-only).
    pub prompts: Option<Arc<dyn PromptService>>,
    /// Granted with `engine`.
    pub describe: Option<Arc<dyn DescribeService>>,
    /// Always granted to image steps (read-only; its time is the host's, not the step's).
    pub faces: Option<Arc<dyn FaceService>>,
    /// Bound per call to image-task components, for the job they work on.
    pub upscaler: Option<Arc<dyn crate::image_task::UpscaleService>>,
}
