//! focal's SDXL engine on candle.
pub mod error;
pub mod rng;
pub mod schedule;
pub mod tokenizer;

pub use error::{EngineError, Result};
