//! focal's domain: what a job is (its task, parameters, owner, outputs, progress), what an
//! image is, and the services the host offers plugins. The server, the job store and the
//! engine adapter speak these types; each plugin-contract version (`focal:plugin@0.1.0`,
//! `@0.2.0`) has bindings of its own in the runtime that convert to and from them, so a new
//! contract version changes neither storage nor the server.
pub mod image;
pub mod image_task;
pub mod job;
pub mod prompt;
pub mod services;
pub mod task;

pub use image::Image;
pub use job::{Download, JobImage, JobInfo, JobSpec, JobStage, Owner, Phase, Progress, QueueInfo, QuotaExceeded, StepCall, SubmitError};
pub use prompt::PromptTask;
pub use services::Face;
pub use task::{Control, FooocusOptions, GenerationParams, ImageMetadata, InpaintOptions, Lora, Task};
