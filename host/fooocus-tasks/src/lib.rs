//! Fooocus-API's rules for what a request asks of the engine, on the request as JSON and the
//! input images' sizes, in plain types of this crate. Two users convert them to their own types:
//! the Fooocus-API plugin (to contract 0.2.0's typed tasks and controls) and the host's adapter
//! for contract-0.1.0 plugins (whose jobs carry only the request record and images by role).

pub mod image_prompts;
pub mod inpaint;
pub mod status;
pub mod uov;

/// The job types (Fooocus-API's `task_type`) of the generation routes.
pub const TEXT_TO_IMAGE: &str = "Text to Image";
pub const UPSCALE_VARY: &str = "Image Upscale or Variation";
pub const INPAINT_OUTPAINT: &str = "Image Inpaint or Outpaint";
pub const IMAGE_PROMPT: &str = "Image Prompt";
pub const ENHANCE: &str = "Image Enhancement";
