//! focal's SDXL engine on candle.
pub mod checkpoint;
pub mod clip;
pub mod error;
pub mod nn;
pub mod rng;
pub mod schedule;
pub mod sdxl;
pub mod tokenizer;
pub mod unet;
pub mod vae;

pub use error::{EngineError, Result};
