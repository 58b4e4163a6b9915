//! A refiner as Fooocus loads one (`default_pipeline.refresh_refiner_model`): only the UNet is
//! kept, since the base model's text encoders and VAE serve both; the base's conditioning is
//! adapted to it (`sample_hijack.clip_separate`).
//!
//! * An SDXL-architecture refiner takes the base's context and ADM vector unchanged.
//! * An SDXL refiner (`sd_xl_refiner_1.0`) attends to the bigG part of the context only (its
//!   last channels) and embeds, after the pooled vector, the image size, a zero crop and an
//!   aesthetic score: 6.0 for the positive prompt, 2.5 for the negative (ComfyUI's defaults,
//!   which Fooocus keeps).
//! * An SD1.5 model keeps its own VAE (its latent space differs): it attends to the CLIP-L part
//!   of the context (its first channels), renormalised per 77-token window by the base's CLIP-L
//!   final layer norm, has no ADM input, and is reached through the latent interposer.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{Architecture, Checkpoint};
use crate::error::{EngineError, Result};
use crate::interposer::Interposer;
use crate::lora::LoraReport;
use crate::sdxl::{Conditioning, LoadOptions, SdxlModel};
use crate::tokenizer::CHUNK_LEN;
use crate::unet::UNet;
use crate::vae::{AutoEncoder, SD15_SCALING_FACTOR};

/// ComfyUI `SDXLRefiner.encode_adm`'s aesthetic scores.
pub const POSITIVE_AESTHETIC_SCORE: f32 = 6.0;
pub const NEGATIVE_AESTHETIC_SCORE: f32 = 2.5;

pub struct RefinerModel {
    pub unet: UNet,
    pub architecture: Architecture,
    /// An SD1.5 refiner's own VAE, which decodes (and encodes) in its place.
    pub vae: Option<AutoEncoder>,
    /// The SDXL → SD1.5 latent interposer an SD1.5 refiner needs (see [`with_interposer`](Self::with_interposer)).
    pub interposer: Option<Interposer>,
    pub dtype: DType,
    pub device: Device,
    /// What merging `LoadOptions::loras` did; Fooocus gives the refiner the user's LoRAs too.
    pub lora_report: LoraReport,
}

impl RefinerModel {
    /// Load the UNet of an SDXL or SDXL-refiner checkpoint (single file or diffusers folder).
    /// `opts.vae` and `opts.embeddings_dir` do not apply: the base encodes and decodes.
    #[tracing::instrument(name = "engine.load_refiner", skip_all, fields(path = %path.display()))]
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        opts.check_supported()?;
        let ckpt = Checkpoint::open_any(path)?;
        let architecture = ckpt.architecture()?;
        let (ckpt, lora_report) = ckpt.with_loras(&opts.loras)?;
        let ckpt = Arc::new(ckpt);
        let vb = ckpt.var_builder(opts.dtype, &opts.device);
        let unet = UNet::new(vb.pp("unet")).map_err(|e| EngineError::checkpoint(path, format!("cannot build the refiner's UNet: {e}")))?;
        let vae = match architecture {
            Architecture::Sd15 => {
                let mut vae = AutoEncoder::new(ckpt.var_builder(opts.vae_dtype(), &opts.device).pp("vae"))
                    .map_err(|e| EngineError::checkpoint(path, format!("cannot build the SD1.5 VAE: {e}")))?;
                vae.scaling_factor = SD15_SCALING_FACTOR;
                Some(vae)
            }
            _ => None,
        };
        Ok(Self { unet, architecture, vae, interposer: None, dtype: opts.dtype, device: opts.device.clone(), lora_report })
    }

    /// Give an SD1.5 refiner the latent interposer it samples from.
    pub fn with_interposer(mut self, interposer: Interposer) -> Self {
        self.interposer = Some(interposer);
        self
    }

    /// Whether it works in its own latent space (SD1.5), which makes Fooocus force the "vae"
    /// swap at full denoise.
    pub fn has_own_vae(&self) -> bool {
        self.vae.is_some()
    }

    /// The base's conditioning as this refiner takes it (Fooocus `clip_separate`; the base
    /// model's CLIP-L final norm renormalises it for SD1.5).
    pub fn conditioning(&self, base: &Conditioning, base_model: &SdxlModel) -> Result<Conditioning> {
        match self.architecture {
            Architecture::Sdxl => Ok(base.clone()),
            Architecture::Sd15 => {
                let width = self.unet.context_dim.ok_or_else(|| EngineError::invalid("refiner", "its UNet has no cross-attention"))?;
                let tokens = base.context.dim(1)?;
                let windows = (0..tokens.div_ceil(CHUNK_LEN))
                    .map(|i| {
                        let window = base.context.narrow(1, i * CHUNK_LEN, CHUNK_LEN.min(tokens - i * CHUNK_LEN))?.narrow(2, 0, width)?;
                        base_model.clip_l.final_norm(&window.to_dtype(DType::F32)?)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok(Conditioning { context: Tensor::cat(&windows, 1)?, pooled: base.pooled.clone() })
            }
            Architecture::SdxlRefiner => {
                let width = self.unet.context_dim.ok_or_else(|| EngineError::invalid("refiner", "its UNet has no cross-attention"))?;
                let full = base.context.dim(2)?;
                if width > full {
                    return Err(EngineError::invalid(
                        "refiner",
                        format!("it attends to {width} channels; the base model's context has {full}"),
                    ));
                }
                Ok(Conditioning { context: base.context.narrow(2, full - width, width)?.contiguous()?, pooled: base.pooled.clone() })
            }
        }
    }

    /// Check that this refiner can follow `base_context_width` / `pooled_width` conditioning.
    pub fn check_fits(&self, base_context_width: usize, pooled_width: usize) -> Result<()> {
        let context = self.unet.context_dim.unwrap_or(0);
        let (want_context, want_adm) = match self.architecture {
            Architecture::Sdxl => (base_context_width, pooled_width + 6 * 256),
            Architecture::SdxlRefiner => (context.min(base_context_width), pooled_width + 5 * 256),
            Architecture::Sd15 => (context.min(base_context_width), 0),
        };
        if context != want_context || self.unet.adm_in_channels != want_adm {
            return Err(EngineError::invalid(
                "refiner_model_name",
                format!(
                    "this refiner (context {context}, ADM {}) does not fit the base model's text encoders (context {base_context_width}, pooled {pooled_width})",
                    self.unet.adm_in_channels
                ),
            ));
        }
        Ok(())
    }
}

/// The refiner's ADM vector for one prompt.
pub fn refiner_adm(model: &RefinerModel, pooled: &Tensor, width: u32, height: u32, negative: bool) -> Result<Tensor> {
    let score = if negative { NEGATIVE_AESTHETIC_SCORE } else { POSITIVE_AESTHETIC_SCORE };
    crate::sdxl::aesthetic_adm(model.unet.adm_in_channels, pooled, width, height, score, &model.device)
}
