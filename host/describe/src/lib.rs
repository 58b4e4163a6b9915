//! Fooocus's describe-image models. `Photo` is BLIP's captioner (`blip/`): a ViT and a BERT decoder
//! on candle, sampling as transformers does. `Anime` is the WD14 MOAT tagger (`wd14.rs`): an ONNX
//! graph run with tract (pure Rust, no native runtime to install) and Fooocus's rules for turning
//! its probabilities into a tag line (`tags.rs`).
pub mod blip;
pub mod tags;
pub mod wd14;

pub use blip::BlipCaptioner;
pub use tags::TagList;
pub use wd14::Wd14Tagger;
