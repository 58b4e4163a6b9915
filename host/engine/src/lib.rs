//! focal's SDXL engine on candle.
pub mod rng;
