//! Fooocus's inpaint engine around sampling (`modules/inpaint_worker.py`, `core.encode_vae_inpaint`,
//! `patch.patched_KSamplerX0Inpaint_forward`):
//! * the inpaint head (`fooocus_inpaint_head.pth`, a bias-free 3×3 convolution from the latent
//!   mask and the masked image's latent to the UNet's first-block channels, replicate padding),
//!   whose output is added after the UNet's first input block on every call of the patched model;
//! * the latent blending on every model call: the known area is replaced by the fill image's
//!   latent plus fresh noise at the current σ (a CPU generator seeded with `seed + 1`) before the
//!   call and by the fill latent after it.
//!
//! All latents here are in the model's space (`process_latent_in`: VAE latent × scaling factor).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};

use crate::error::{EngineError, Result};
use crate::rng::TorchRng;
use crate::sampling::Denoiser;
use crate::torch_file;

/// `models/inpaint/fooocus_inpaint_head.pth`.
pub const HEAD_FILE: &str = "fooocus_inpaint_head.pth";

/// The inpaint head's weight `[C, 5, 3, 3]`.
pub struct InpaintHead {
    weight: Tensor,
}

impl InpaintHead {
    /// Read the head from Fooocus's torch file (a state dict with one tensor, `head`).
    pub fn load(path: &Path) -> Result<Self> {
        let mut state = torch_file::load(path)?;
        let weight = match state.take("head") {
            Some(torch_file::Value::Tensor(t)) => t,
            _ => return Err(EngineError::checkpoint(path, "no `head` tensor (not Fooocus's inpaint head)")),
        };
        match weight.dims() {
            [_, 5, 3, 3] => Ok(Self { weight: weight.to_dtype(DType::F32)? }),
            other => Err(EngineError::checkpoint(path, format!("`head` is {other:?}, expected [channels, 5, 3, 3]"))),
        }
    }

    /// Channels it adds to (the UNet's first block must have as many).
    pub fn channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The feature added after the UNet's first input block: the head over
    /// `cat[latent_mask, latent_inpaint]` with replicate padding.
    pub fn feature(&self, latent_inpaint: &Tensor, latent_mask: &Tensor, dtype: DType) -> Result<Tensor> {
        let device = latent_inpaint.device();
        let feed = Tensor::cat(&[&latent_mask.to_dtype(DType::F32)?, &latent_inpaint.to_dtype(DType::F32)?], 1)?;
        let feed = feed.pad_with_same(2, 1, 1)?.pad_with_same(3, 1, 1)?;
        let conv = crate::nn::Conv2d::new(self.weight.to_device(device)?, None, 1, 0)?;
        Ok(conv.forward(&feed)?.to_dtype(dtype)?)
    }
}

/// `encode_vae_inpaint`'s latent mask: the pixel mask (0/255, `H×W`, sides multiples of 8)
/// rounded to 0/1, max-pooled over 8×8 blocks: `[1, 1, H/8, W/8]`.
pub fn latent_mask(mask: &[u8], width: usize, height: usize, device: &Device) -> Result<Tensor> {
    let ones: Vec<f32> = mask.iter().map(|&m| (m as f32 / 255.0).round()).collect();
    let t = Tensor::from_vec(ones, (1, 1, height, width), &Device::Cpu)?;
    Ok(t.max_pool2d(8)?.to_device(device)?)
}

/// What sampling an inpaint needs besides the usual parameters.
#[derive(Clone, Debug)]
pub struct Inpainting {
    /// The fill image's latent: the known area, and the initial latent unless disabled.
    pub fill: Tensor,
    /// 1 where the latent is repainted `[1, 1, h, w]`.
    pub mask: Tensor,
    /// The inpaint head's feature (`None`: no inpaint engine).
    pub head_feature: Option<Tensor>,
}

/// A denoiser with Fooocus's latent blending around every call (one per sampler run, as
/// ComfyUI makes one `KSamplerX0Inpaint` per run).
pub struct Blended<'a> {
    inner: &'a mut dyn Denoiser,
    fill: Tensor,
    mask: Tensor,
    keep: Tensor,
    energy: TorchRng,
}

impl<'a> Blended<'a> {
    pub fn new(inner: &'a mut dyn Denoiser, inpainting: &Inpainting, seed: u64) -> Result<Self> {
        let mask = inpainting.mask.to_dtype(DType::F32)?;
        let keep = (1.0 - &mask)?;
        // Fooocus: `(seed + 1) % MAX_SEED` ("avoid bad results by using different seeds").
        const MAX_SEED: u64 = (1 << 63) - 1;
        let energy = TorchRng::new(seed.wrapping_add(1) % MAX_SEED);
        Ok(Self { inner, fill: inpainting.fill.to_dtype(DType::F32)?, mask, keep, energy })
    }
}

impl Denoiser for Blended<'_> {
    fn denoise(&mut self, x: &Tensor, sigma: f32) -> Result<Tensor> {
        let noise = Tensor::from_vec(self.energy.randn(x.elem_count()), x.shape(), &Device::Cpu)?.to_device(x.device())?;
        let known = (&self.fill + (noise * sigma as f64)?)?;
        let x = (x.broadcast_mul(&self.mask)? + known.broadcast_mul(&self.keep)?)?;
        let out = self.inner.denoise(&x, sigma)?;
        Ok((out.broadcast_mul(&self.mask)? + self.fill.broadcast_mul(&self.keep)?)?)
    }

    fn first_eval_done(&mut self, step: usize) {
        self.inner.first_eval_done(step)
    }
}

impl crate::SdxlModel {
    /// `core.encode_vae_inpaint`: `image` with the pixels under the (rounded) mask set to grey,
    /// VAE-encoded (the posterior sampled from torch's global generator when the host carries
    /// one, as [`encode_init`](Self::encode_init) does), and the latent mask.
    #[tracing::instrument(name = "engine.vae_encode_inpaint", skip_all, fields(width = image.width, height = image.height))]
    pub fn encode_inpaint(
        &self,
        image: &crate::image::RgbImage,
        mask: &[u8],
        global: Option<&crate::rng::TorchGlobal>,
    ) -> Result<(Tensor, Tensor)> {
        let (w, h) = (image.width as usize, image.height as usize);
        if mask.len() != w * h || w % 8 != 0 || h % 8 != 0 {
            return Err(EngineError::invalid("input_mask", format!("a {w}x{h} inpaint needs a mask of that size, sides multiples of 8")));
        }
        let keep: Vec<f32> = mask.iter().map(|&m| 1.0 - (m as f32 / 255.0).round()).collect();
        let keep = Tensor::from_vec(keep, (1, 1, h, w), &Device::Cpu)?.to_device(&self.device)?;
        // In [-1, 1], grey (0.5) is 0.
        let x = ((image.to_tensor(&self.device)? * 2.0)? - 1.0)?.broadcast_mul(&keep)?;
        let latent = self.encode_pixels(&x, false, global)?;
        Ok((latent, latent_mask(mask, w, h, &self.device)?))
    }
}
