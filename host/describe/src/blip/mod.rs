//! Fooocus's photo captioner (`extras/interrogate.py`): BLIP's `model_base_caption_capfilt_large.pth`,
//! a ViT image encoder and a BERT decoder that continues the prompt "a picture of " by nucleus
//! sampling, as `BLIP_Decoder.generate(image, sample=True, num_beams=1, max_length=75)` runs
//! transformers 4.42's `generate`: min length 10, repetition penalty 1.1, top-k 50 (the generation
//! config's default), top-p 0.9, one `torch.multinomial` draw per token, `[SEP]` ends it. The caption
//! is the decoded text after the prompt.
//!
//! Fooocus draws from torch's global generator, whatever state earlier work left it in; focal draws
//! from a generator seeded by the caller (the server passes 0: one image, one caption). With the
//! same seed as `torch.manual_seed`, the draws are torch's.

mod input;
mod text_decoder;
mod vision;
mod wordpiece;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use focal_engine::logits::{repetition_penalty, softmax, top_k_filter, top_p_filter};
use focal_engine::rng::TorchRng;
use focal_imageops::Pixels;

use text_decoder::TextDecoder;
use vision::VisionTransformer;
pub use wordpiece::WordPiece;

/// The file Fooocus downloads on first use into `models/clip_vision/` (from lllyasviel/misc).
pub const FILE_NAME: &str = "model_base_caption_capfilt_large.pth";

/// `blip_image_eval_size`.
const IMAGE_SIZE: usize = 384;
const PROMPT: &str = "a picture of ";
/// `generate(...)` as `BLIP_Decoder.generate(sample=True)` calls it.
const MAX_LENGTH: usize = 75;
const MIN_LENGTH: usize = 10;
const TOP_K: usize = 50;
const TOP_P: f64 = 0.9;
const REPETITION_PENALTY: f32 = 1.1;

pub struct BlipCaptioner {
    vision: VisionTransformer,
    decoder: TextDecoder,
    vocab: WordPiece,
    prompt: Vec<u32>,
    device: Device,
}

impl BlipCaptioner {
    /// Reads the checkpoint (`{"model": state_dict}` as BLIP saves it, read without running the
    /// pickle; or the same keys in a `.safetensors`).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors = focal_engine::torch_file::state_dict(path, &["model"])?;
        Self::from_tensors(tensors, device)
    }

    /// From the checkpoint's tensors (`visual_encoder.…`, `text_decoder.…`; others are ignored).
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, Tensor)>, device: &Device) -> Result<Self> {
        let mut vision = HashMap::new();
        let mut text = HashMap::new();
        for (name, tensor) in tensors {
            if let Some(n) = name.strip_prefix("visual_encoder.") {
                vision.insert(n.to_string(), tensor);
            } else if let Some(n) = name.strip_prefix("text_decoder.") {
                text.insert(n.to_string(), tensor);
            }
        }
        let vision = VisionTransformer::new(VarBuilder::from_tensors(vision, DType::F32, device)).context("visual_encoder")?;
        let decoder = TextDecoder::new(VarBuilder::from_tensors(text, DType::F32, device)).context("text_decoder")?;
        let vocab = WordPiece::bert_uncased();
        if vision.image_size != IMAGE_SIZE {
            bail!("visual_encoder.pos_embed is for {} px images; Fooocus runs BLIP at {IMAGE_SIZE}", vision.image_size);
        }
        if decoder.vocab_size != vocab.model_vocab_size() {
            bail!("the decoder scores {} tokens; BLIP's tokenizer has {}", decoder.vocab_size, vocab.model_vocab_size());
        }
        if decoder.max_positions() < MAX_LENGTH {
            bail!("the decoder has {} positions; captions take up to {MAX_LENGTH}", decoder.max_positions());
        }
        let prompt = vocab.prompt_ids(PROMPT)?;
        Ok(BlipCaptioner { vision, decoder, vocab, prompt, device: device.clone() })
    }

    /// The caption of an RGB image, drawing with torch's generator seeded with `seed`.
    pub fn caption(&self, image: &Pixels, seed: u64) -> Result<String> {
        let ids = self.caption_ids(image, seed)?;
        Ok(self.vocab.decode(&ids).chars().skip(PROMPT.chars().count()).collect())
    }

    /// The whole sequence: the prompt's ids, then the sampled ones (ending with `[SEP]` unless the
    /// length ran out).
    pub fn caption_ids(&self, image: &Pixels, seed: u64) -> Result<Vec<u32>> {
        self.sample(image, seed, MIN_LENGTH)
    }

    /// A caption that never ends before the longest length (`[SEP]` barred throughout): the most
    /// work one caption can be, for benchmarks.
    pub fn longest_caption_ids(&self, image: &Pixels, seed: u64) -> Result<Vec<u32>> {
        self.sample(image, seed, MAX_LENGTH)
    }

    fn sample(&self, image: &Pixels, seed: u64, min_length: usize) -> Result<Vec<u32>> {
        let embeds = self.image_embeddings(image)?;
        let mut state = self.decoder.start(&embeds)?;
        let mut ids = self.prompt.clone();
        let mut scores = Vec::new();
        for &id in &ids {
            scores = self.decoder.next_scores(&mut state, id)?;
        }
        let mut rng = TorchRng::new(seed);
        loop {
            let next = pick(&mut scores, &ids, min_length, &mut rng);
            ids.push(next);
            if next == wordpiece::SEP || ids.len() >= MAX_LENGTH {
                return Ok(ids);
            }
            scores = self.decoder.next_scores(&mut state, next)?;
        }
    }

    /// `visual_encoder(image)`: `[1, 1 + 24², width]` for a 384 px input.
    pub fn image_embeddings(&self, image: &Pixels) -> Result<Tensor> {
        if image.channels != 3 || image.width == 0 || image.height == 0 {
            bail!("the captioner takes an RGB image");
        }
        Ok(self.vision.forward(&input::image_tensor(image, IMAGE_SIZE, &self.device)?)?)
    }

    /// The decoder's scores after the prompt alone (the first caption token's), for checks.
    pub fn first_scores(&self, image: &Pixels) -> Result<Vec<f32>> {
        let mut state = self.decoder.start(&self.image_embeddings(image)?)?;
        let mut scores = Vec::new();
        for &id in &self.prompt {
            scores = self.decoder.next_scores(&mut state, id)?;
        }
        Ok(scores)
    }
}

/// One step of transformers' sampling: processors (repetition penalty, minimum length), warpers
/// (top-k, top-p), softmax, one multinomial draw.
fn pick(scores: &mut [f32], ids: &[u32], min_length: usize, rng: &mut TorchRng) -> u32 {
    repetition_penalty(scores, ids, REPETITION_PENALTY);
    if ids.len() < min_length {
        scores[wordpiece::SEP as usize] = f32::NEG_INFINITY;
    }
    top_k_filter(scores, TOP_K);
    top_p_filter(scores, TOP_P);
    rng.multinomial_one(&softmax(scores))
}
