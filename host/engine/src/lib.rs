//! focal's SDXL engine on candle: checkpoint loading, CLIP text encoders, UNet, VAE and
//! k-diffusion samplers with ComfyUI/Fooocus semantics. A plain library: no HTTP, WASM or jobs.
pub mod bpe;
pub mod checkpoint;
pub mod clip;
pub mod embeddings;
pub mod error;
pub mod expansion;
pub mod freeu;
pub mod gpt2;
pub mod gpt2_tokenizer;
pub mod guidance;
pub mod image;
pub mod interposer;
pub mod keymap;
pub mod lora;
pub mod nn;
pub mod patches;
pub mod pipeline;
pub mod refiner;
pub mod rng;
pub mod sampler;
pub mod sampling;
pub mod schedule;
pub mod sdxl;
pub mod solvers;
pub mod synthetic;
pub mod tokenizer;
mod torch_math;
pub mod unet;
pub mod vae;

pub use error::{EngineError, Result};
pub use pipeline::{Generated, GenerationParams, Progress};
pub use sampler::Sampler;
pub use schedule::Scheduler;
pub use sdxl::{LoadOptions, SdxlModel};
