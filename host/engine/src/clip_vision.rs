//! The CLIP vision tower image prompts encode with (`models/clip_vision/clip_vision_vit_h.safetensors`,
//! Hugging Face `CLIPVisionModelWithProjection` keys, as Fooocus runs it through transformers): 14-pixel
//! patches plus a class token, position embeddings, `pre_layrnorm`, pre-norm layers with exact GELU.
//! Sizes come from the weights; the head count from the width (see [`heads_for_width`]).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::clip::{Activation, EncoderLayer};
use crate::error::{EngineError, Result};
use crate::nn::{conv2d, layer_norm, Conv2d, LayerNorm};

/// The file Fooocus downloads on first use (`modules/config.py:downloading_ip_adapters`), and where from.
pub const FILE_NAME: &str = "clip_vision_vit_h.safetensors";
pub const URL: &str = "https://huggingface.co/lllyasviel/misc/resolve/main/clip_vision_vit_h.safetensors";

/// The side of the square input (OpenAI/OpenCLIP ViT-*/14 at 224).
pub const IMAGE_SIZE: usize = 224;

/// CLIP's pixel normalisation (`clip_preprocess`), written as published.
#[allow(clippy::excessive_precision)]
const MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
const STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Heads of the published CLIP vision towers: ViT-B 768/12, ViT-L 1024/16, ViT-H 1280/16, ViT-bigG
/// 1664/16 — 16 from 1024 up, 64-wide heads below (the test fixtures' tiny towers follow that).
fn heads_for_width(width: usize) -> usize {
    if width >= 1024 {
        16
    } else {
        (width / 64).max(1)
    }
}

pub struct ClipVision {
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layernorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    pub width: usize,
    device: Device,
}

impl ClipVision {
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| EngineError::checkpoint(path, e.to_string()))?;
        if !tensors.contains_key("vision_model.embeddings.class_embedding") {
            return Err(EngineError::checkpoint(
                path,
                "not a CLIP vision model with Hugging Face keys (vision_model.embeddings.class_embedding is missing)",
            ));
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(vb.pp("vision_model"), device).map_err(|e| EngineError::checkpoint(path, e.to_string()))
    }

    fn new(vb: VarBuilder, device: &Device) -> candle_core::Result<Self> {
        let class_embedding = vb.get_unchecked("embeddings.class_embedding")?;
        let width = class_embedding.dim(0)?;
        let patch = vb.pp("embeddings.patch_embedding").get_unchecked("weight")?.dim(3)?;
        let layers = (0..).take_while(|i| vb.contains_tensor(&format!("encoder.layers.{i}.layer_norm1.weight"))).count();
        let heads = heads_for_width(width);
        Ok(Self {
            patch_embedding: conv2d(&vb.pp("embeddings.patch_embedding"), patch, 0)?,
            position_embedding: vb.get_unchecked("embeddings.position_embedding.weight")?,
            class_embedding,
            pre_layernorm: layer_norm(&vb.pp("pre_layrnorm"), 1e-5)?,
            layers: (0..layers)
                .map(|i| EncoderLayer::new(vb.pp(format!("encoder.layers.{i}")), Activation::Gelu, Some(heads)))
                .collect::<candle_core::Result<_>>()?,
            width,
            device: device.clone(),
        })
    }

    /// `[1, 3, 224, 224]` CLIP input from 224×224 RGB bytes: `(x/255 − mean)/std`.
    pub fn pixels(&self, rgb: &[u8]) -> Result<Tensor> {
        let n = IMAGE_SIZE * IMAGE_SIZE;
        if rgb.len() != 3 * n {
            return Err(EngineError::invalid("image", format!("CLIP vision takes {IMAGE_SIZE}×{IMAGE_SIZE} RGB pixels")));
        }
        let mut planes = vec![0f32; 3 * n];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planes[c * n + i] = (px[c] as f32 / 255.0 - MEAN[c]) / STD[c];
            }
        }
        Ok(Tensor::from_vec(planes, (1, 3, IMAGE_SIZE, IMAGE_SIZE), &self.device)?)
    }

    /// The hidden states after all layers but the last (`hidden_states[-2]`), `[B, 1 + patches, width]`.
    pub fn penultimate(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let patches = self.patch_embedding.forward(pixels)?.flatten_from(2)?.transpose(1, 2)?;
        let class = self.class_embedding.reshape((1, 1, self.width))?.broadcast_as((b, 1, self.width))?;
        let tokens = Tensor::cat(&[&class, &patches.contiguous()?], 1)?;
        let positions = self.position_embedding.narrow(0, 0, tokens.dim(1)?)?;
        let mut x = self.pre_layernorm.forward(&tokens.broadcast_add(&positions)?)?;
        for layer in &self.layers[..self.layers.len().saturating_sub(1)] {
            x = layer.forward(&x, None)?;
        }
        Ok(x)
    }
}
