//! focal's SDXL engine on candle: checkpoint loading, CLIP text encoders, UNet, VAE and
//! k-diffusion samplers with ComfyUI/Fooocus semantics. A plain library: no HTTP, WASM or jobs.
pub mod attention;
#[cfg(feature = "cuda")]
mod attention_flash;
pub mod blas;
pub mod bpe;
pub mod checkpoint;
pub mod clip;
pub mod clip_vision;
pub mod controlnet;
pub mod conv;
mod conv_direct;
mod conv_winograd;
pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda_support;
pub mod embeddings;
pub mod error;
pub mod esrgan;
pub mod expansion;
pub mod fastmath;
pub mod freeu;
pub mod geglu;
#[cfg(feature = "cuda")]
mod geglu_cuda;
pub mod gpt2;
pub mod gpt2_tokenizer;
#[cfg(feature = "cuda")]
mod group_norm_cuda;
pub mod guidance;
pub mod image;
pub mod inpaint;
pub mod interposer;
pub mod ip_adapter;
pub mod keymap;
pub mod linear;
pub mod logits;
pub mod lora;
pub mod nn;
pub mod norm;
pub mod patches;
pub mod pipeline;
pub mod precision;
pub mod profile;
pub mod refiner;
pub mod resampler;
pub mod rng;
pub mod sampler;
pub mod sampling;
pub mod schedule;
pub mod sdxl;
pub mod solvers;
pub mod synthetic;
pub mod tiles;
pub mod tokenizer;
pub mod torch_file;
mod torch_math;
pub mod unet;
pub mod vae;

pub use error::{EngineError, Result};
pub use pipeline::{Generated, GenerationParams, Progress};
pub use sampler::Sampler;
pub use schedule::Scheduler;
pub use sdxl::{LoadOptions, SdxlModel};
