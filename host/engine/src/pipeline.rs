//! One generation: text conditioning, initial latent, sampling with CFG, decoding.
//! The same API serves the CLI, the server's worker and the benchmarks.

use candle_core::{DType, Device, Tensor};

use crate::controlnet::Control;
use crate::error::{EngineError, Result};
use crate::freeu::FreeU;
pub use crate::guidance::CfgDenoiser;
use crate::image::{latent_preview, RgbImage};
use crate::inpaint::{Blended, Inpainting};
use crate::ip_adapter::ImagePrompt;
use crate::patches::FooocusPatches;
use crate::refiner::RefinerModel;
use crate::rng::{TorchGlobal, TorchRng};
use crate::sampler::{sample, NoiseSource, Sampler};
use crate::schedule::{sampling_sigmas, ModelSampling, Prediction, Scheduler};
use crate::sdxl::{Conditioning, SdxlModel, SizeIds};
use crate::vae::{AutoEncoder, Posterior, Tiling};

/// Latents larger than this (in latent pixels; 128² is a 1024² image) go through the VAE in
/// tiles: its mid-block attention grows with the square of the pixel count.
const LARGEST_UNTILED_LATENT: usize = 128 * 128;

#[derive(Clone, Debug)]
pub struct GenerationParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub cfg: f32,
    pub sampler: Sampler,
    pub scheduler: Scheduler,
    pub seed: u64,
    /// 1.0 for txt2img; below 1 with `init_image` (or `init_latent`) for img2img.
    pub denoise: f32,
    pub init_image: Option<RgbImage>,
    /// An init image already encoded (scaled SDXL VAE latent, see [`SdxlModel::encode_init`]):
    /// Fooocus encodes once per job, before the first image's noise; takes `init_image`'s place.
    pub init_latent: Option<Tensor>,
    /// Decode with Fooocus's three-pass tiled VAE (its upscale does).
    pub tiled_decode: bool,
    /// torch's global generator carried between jobs (see [`TorchGlobal`]); `None` draws the
    /// noise from a fresh generator and leaves no state behind.
    pub torch_global: Option<TorchGlobal>,
    /// 1 = last CLIP layer, 2 = penultimate (SDXL default).
    pub clip_skip: usize,
    /// Fooocus's sampling patches; `None` samples plain ComfyUI CFG (what the fixtures use).
    pub patches: Option<FooocusPatches>,
    /// FreeU on the base model's UNet (Fooocus leaves the refiner unpatched).
    pub freeu: Option<FreeU>,
    /// Fooocus's inpaint engine: latent blending on every call, the head on the base model.
    /// Its initial latent (the fill's, unless disabled) comes as `init_latent`.
    pub inpaint: Option<Inpainting>,
    /// Image prompts (IP-Adapter tokens) on the base model's cross-attentions.
    pub image_prompts: Vec<ImagePrompt>,
    /// ControlNets on the base model, and Fooocus's softness for them (0: ComfyUI's plain sum).
    pub controls: Vec<Control>,
    pub control_softness: f64,
}

impl GenerationParams {
    pub fn txt2img(prompt: &str, width: u32, height: u32, steps: usize, seed: u64) -> Self {
        Self {
            prompt: prompt.to_string(),
            negative_prompt: String::new(),
            width,
            height,
            steps,
            cfg: 7.0,
            sampler: Sampler::Euler,
            scheduler: Scheduler::Karras,
            seed,
            denoise: 1.0,
            init_image: None,
            init_latent: None,
            tiled_decode: false,
            torch_global: None,
            clip_skip: 2,
            patches: None,
            freeu: None,
            inpaint: None,
            image_prompts: Vec::new(),
            controls: Vec::new(),
            control_softness: 0.0,
        }
    }

    pub fn validate(&self, downscale: usize) -> Result<()> {
        let multiple = downscale as u32;
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 || v % multiple != 0 || v > 8192 {
                return Err(EngineError::invalid(field, format!("{v} must be a positive multiple of {multiple} up to 8192")));
            }
        }
        if self.steps == 0 || self.steps > 1000 {
            return Err(EngineError::invalid("steps", format!("{} must be between 1 and 1000", self.steps)));
        }
        if !(self.denoise > 0.0 && self.denoise <= 1.0) {
            return Err(EngineError::invalid("denoise", format!("{} must be in (0, 1]", self.denoise)));
        }
        if self.denoise < 1.0 && self.init_image.is_none() && self.init_latent.is_none() {
            return Err(EngineError::invalid("denoise", "denoise below 1 needs an input image"));
        }
        if !self.cfg.is_finite() {
            return Err(EngineError::invalid("cfg", "must be a finite number"));
        }
        self.sampler.check_compatible(&ModelSampling::for_scheduler(self.scheduler))
    }
}

/// Reported after every sampling step.
pub struct Progress {
    pub step: usize,
    pub total: usize,
    /// A cheap preview from the current denoised latent, when previews are requested.
    pub preview: Option<RgbImage>,
}

pub struct Generated {
    pub image: RgbImage,
    /// Final latent `[1, 4, h, w]` (scaled latent units).
    pub latent: Tensor,
    pub seed: u64,
}

/// How the refiner takes over (Fooocus `refiner_swap_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefinerSwap {
    /// One sampler run; the model is swapped after the model call at the switch step.
    Joint,
    /// The base samples steps `[0, switch)` without the final denoise, then a second run on the
    /// refiner continues from that latent over the remaining sigmas with no added noise.
    Separate,
    /// The base denoises fully over steps `[0, switch)`; the refiner re-noises that image with
    /// fresh noise (seed + 1) whose per-pixel channel mean is the base's last noise prediction,
    /// and samples the remaining sigmas × 1.4 (Fooocus's "vae" swap; with an SDXL-class refiner
    /// both share the latent space, so no interposer is needed).
    Vae,
}

/// Fooocus's `k_sigmas` for the "vae" swap's second run.
const VAE_SWAP_SIGMA_SCALE: f64 = 1.4;

/// A refiner for one generation.
#[derive(Clone, Copy)]
pub struct Refiner<'a> {
    pub model: &'a RefinerModel,
    pub switch: usize,
    pub swap: RefinerSwap,
}

/// Fooocus's switch step: `round(steps · refiner_switch)` with Python's half-to-even rounding.
pub fn refiner_switch_step(steps: usize, refiner_switch: f32) -> usize {
    let switch: f64 = refiner_switch.to_string().parse().unwrap_or(refiner_switch as f64);
    let v = steps as f64 * switch;
    let r = v.round();
    let r = if (v - v.trunc() - 0.5).abs() < 1e-9 && r as u64 % 2 == 1 { r - 1.0 } else { r };
    r.max(0.0) as usize
}

/// Playground v2.5's latent space (ComfyUI `SDXL_Playground_2_5`): SDXL-VAE latents normalised
/// per channel, scale 0.5. Fooocus switches to it together with the `edm_playground_v2.5`
/// scheduler.
const PLAYGROUND_MEAN: [f32; 4] = [-1.6574, 1.886, -1.383, 2.5155];
const PLAYGROUND_STD: [f32; 4] = [8.4927, 5.9022, 6.5498, 5.2299];

fn channel_vector(v: [f32; 4], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(v.to_vec(), (1, 4, 1, 1), like.device())?.to_dtype(like.dtype())?)
}

/// Playground latent → the SDXL VAE's scaled latent (what `Vae::decode` takes).
fn playground_to_vae(latent: &Tensor) -> Result<Tensor> {
    let raw = latent
        .broadcast_mul(&(channel_vector(PLAYGROUND_STD, latent)? / 0.5)?)?
        .broadcast_add(&channel_vector(PLAYGROUND_MEAN, latent)?)?;
    Ok((raw * crate::vae::SDXL_SCALING_FACTOR)?)
}

/// The SDXL VAE's scaled latent (what `Vae::encode` gives) → Playground latent.
fn vae_to_playground(latent: &Tensor) -> Result<Tensor> {
    let raw = (latent / crate::vae::SDXL_SCALING_FACTOR)?;
    Ok((raw.broadcast_sub(&channel_vector(PLAYGROUND_MEAN, latent)?)? * 0.5)?.broadcast_div(&channel_vector(PLAYGROUND_STD, latent)?)?)
}

/// ComfyUI's `KSAMPLER.sample`: noise enters at σ₀, or as `sqrt(1 + σ₀²)` when σ₀ is the
/// model's largest σ or beyond ("max_denoise").
fn first_noise_scale(sigma0: f32, sampling: &ModelSampling) -> f64 {
    let (s0, max) = (sigma0 as f64, sampling.sigma_max() as f64);
    if (s0 - max).abs() <= 1e-5 * s0.abs().max(max.abs()) || s0 > max {
        (1.0 + s0 * s0).sqrt()
    } else {
        s0
    }
}

/// One sampler run; an inpaint blends the latents around every model call, with a fresh
/// blend per run (ComfyUI makes one `KSamplerX0Inpaint` per run).
fn sample_run(
    params: &GenerationParams,
    model: &mut dyn crate::sampling::Denoiser,
    x: Tensor,
    sigmas: &[f32],
    sampling: &ModelSampling,
    noise: &mut NoiseSource,
    on_step: &mut crate::sampler::StepCallback,
) -> Result<Tensor> {
    match &params.inpaint {
        Some(inpainting) => sample(params.sampler, &mut Blended::new(model, inpainting, params.seed)?, x, sigmas, sampling, noise, on_step),
        None => sample(params.sampler, model, x, sigmas, sampling, noise, on_step),
    }
}

/// Initial noise exactly as ComfyUI's `prepare_noise`: CPU `torch.randn` seeded by `seed`.
pub fn initial_noise(seed: u64, shape: (usize, usize, usize, usize)) -> Result<Tensor> {
    initial_noise_from(None, seed, shape)
}

/// [`initial_noise`] drawn through torch's global generator when the host carries one.
fn initial_noise_from(global: Option<&TorchGlobal>, seed: u64, shape: (usize, usize, usize, usize)) -> Result<Tensor> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let data = match global {
        Some(g) => g.reseed_randn(seed, n),
        None => TorchRng::new(seed).randn(n),
    };
    Ok(Tensor::from_vec(data, shape, &candle_core::Device::Cpu)?)
}

impl SdxlModel {
    /// Run one generation. `on_progress` is called after each step; returning `false` cancels.
    pub fn generate(
        &self,
        params: &GenerationParams,
        want_previews: bool,
        on_progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Generated> {
        params.validate(self.vae.downscale)?;
        let cond = self.encode_prompt(&params.prompt, params.clip_skip)?;
        let uncond = self.encode_prompt(&params.negative_prompt, params.clip_skip)?;
        self.generate_with(params, &cond, &uncond, want_previews, on_progress)
    }

    /// Like [`generate`](Self::generate) with conditioning computed by the caller.
    pub fn generate_with(
        &self,
        params: &GenerationParams,
        cond: &Conditioning,
        uncond: &Conditioning,
        want_previews: bool,
        on_progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Generated> {
        self.generate_with_refiner(params, cond, uncond, None, want_previews, on_progress)
    }

    /// Like [`generate_with`](Self::generate_with), handing over to `refiner` at its switch step
    /// (see [`refiner_switch_step`], [`RefinerSwap`]). The base's VAE decodes.
    #[tracing::instrument(name = "engine.sample", skip_all, fields(width = params.width, height = params.height, steps = params.steps, sampler = ?params.sampler, refiner = refiner.is_some()))]
    pub fn generate_with_refiner(
        &self,
        params: &GenerationParams,
        cond: &Conditioning,
        uncond: &Conditioning,
        refiner: Option<Refiner<'_>>,
        want_previews: bool,
        on_progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Generated> {
        params.validate(self.vae.downscale)?;
        if params.inpaint.is_some() && refiner.is_some_and(|r| r.swap == RefinerSwap::Vae || r.model.has_own_vae()) {
            // Fooocus swaps the inpaint latents into the refiner's space there; focal does not yet.
            return Err(EngineError::invalid("refiner_swap_method", "inpainting runs with the joint or separate refiner swap only"));
        }
        let mut refiner = refiner;
        // The model that samples alone when an SD1.5 refiner takes a partial denoise over.
        let mut refiner_alone: Option<&RefinerModel> = None;
        if let Some(r) = refiner {
            r.model.check_fits(cond.context.dim(2)?, cond.pooled.dim(1)?)?;
            if r.model.has_own_vae() {
                // Fooocus's process_diffusion: a refiner in another latent space forces the vae
                // swap at full denoise; below 0.9 only one of the two models runs.
                if params.denoise > 0.9 {
                    refiner = Some(Refiner { swap: RefinerSwap::Vae, ..r });
                } else {
                    let refiner_share = ((params.steps as f64 - r.switch as f64) / params.steps as f64).max(0.0).powf(0.834);
                    if params.denoise as f64 <= refiner_share {
                        refiner_alone = Some(r.model);
                    }
                    refiner = None;
                }
            }
        }
        let own_vae = |m: &'_ RefinerModel| -> Result<()> {
            if m.vae.is_none() {
                return Err(EngineError::invalid("refiner_model_name", "an SD1.5 refiner needs its VAE"));
            }
            Ok(())
        };
        let sampling = ModelSampling::for_scheduler(params.scheduler);
        let playground = sampling.prediction == Prediction::Edm;
        let sigmas =
            sampling_sigmas(&sampling, params.scheduler, params.steps, params.denoise, params.sampler.discards_penultimate_sigma());
        let (lh, lw) = (params.height as usize / self.vae.downscale, params.width as usize / self.vae.downscale);
        // Fooocus encodes the init image before `prepare_noise` reseeds the global generator.
        let init = match (&params.init_latent, &params.init_image) {
            // ComfyUI adds a given latent at any denoise (an inpaint's fill at 1.0).
            (Some(latent), _) => Some(latent.to_device(&self.device)?),
            _ if params.denoise >= 1.0 => None,
            // Fooocus's get_candidate_vae: the model that samples encodes.
            (None, Some(img)) => Some(match refiner_alone {
                Some(m) => {
                    own_vae(m)?;
                    encode_with(m.vae.as_ref().expect("checked"), img, params.width, params.height, &self.device)?
                }
                None => self.encode_image(img, params.width, params.height)?,
            }),
            (None, None) => None,
        };
        let noise = initial_noise_from(params.torch_global.as_ref(), params.seed, (1, 4, lh, lw))?.to_device(&self.device)?;
        let x = match init {
            Some(latent) => {
                let (_, _, h, w) = latent.dims4()?;
                if (h, w) != (lh, lw) {
                    return Err(EngineError::invalid("input_image", format!("its latent is {w}x{h}, the generation's {lw}x{lh}")));
                }
                let latent = if playground { vae_to_playground(&latent)? } else { latent };
                (latent + (noise * first_noise_scale(sigmas[0], &sampling))?)?
            }
            None => (noise * first_noise_scale(sigmas[0], &sampling))?,
        };
        let size = SizeIds::plain(params.width, params.height);
        let mut denoiser = match refiner_alone {
            Some(m) => CfgDenoiser::for_refiner(self, m, &sampling, cond, uncond, size, params.cfg, params.patches)?,
            None => CfgDenoiser::with_patches(self, &sampling, cond, uncond, size, params.cfg, params.patches)?
                .with_freeu(params.freeu)
                .with_inpaint_feature(params.inpaint.as_ref().and_then(|i| i.head_feature.clone()))
                .with_image_prompts(params.image_prompts.clone())
                .with_controls(params.controls.clone(), params.control_softness),
        };
        // Which VAE decodes: the refiner's own after it sampled in its latent space.
        let mut decoder = refiner_alone.and_then(|m| m.vae.as_ref()).unwrap_or(&self.vae);
        let total = sigmas.len() - 1;
        // Steps count across both runs of a separate or vae swap.
        let mut report = |step: usize, denoised: &Tensor| -> Result<()> {
            let preview = match (want_previews, playground) {
                (false, _) => None,
                (true, false) => Some(latent_preview(denoised)?),
                (true, true) => Some(latent_preview(&playground_to_vae(denoised)?)?),
            };
            if on_progress(Progress { step, total, preview }) {
                Ok(())
            } else {
                Err(EngineError::Cancelled)
            }
        };
        // Noise the sampler adds along the way (ancestral/SDE steps), per sampler run.
        let noise = |seed: u64| NoiseSource::new(seed.wrapping_add(1));
        let latent = match refiner {
            Some(r) if r.swap == RefinerSwap::Separate && r.switch > 0 && r.switch < total => {
                let x =
                    sample_run(params, &mut denoiser, x, &sigmas[..=r.switch], &sampling, &mut noise(params.seed), &mut |i, _, _, d| {
                        report(i + 1, d)
                    })?;
                let mut refined = CfgDenoiser::for_refiner(self, r.model, &sampling, cond, uncond, size, params.cfg, params.patches)?;
                sample_run(params, &mut refined, x, &sigmas[r.switch..], &sampling, &mut noise(params.seed), &mut |i, _, _, d| {
                    report(r.switch + i + 1, d)
                })?
            }
            Some(r) if r.swap == RefinerSwap::Vae && r.switch > 0 && r.switch < total => {
                // Base: steps [0, switch) down to σ = 0 (Fooocus's force_full_denoise).
                let mut head = sigmas[..=r.switch].to_vec();
                *head.last_mut().expect("switch > 0") = 0.0;
                let mut denoiser = denoiser.recording_eps();
                let x0 =
                    sample_run(params, &mut denoiser, x, &head, &sampling, &mut noise(params.seed), &mut |i, _, _, d| report(i + 1, d))?;
                let eps = denoiser.last_eps().ok_or_else(|| EngineError::invalid("refiner_swap_method", "the base made no model call"))?;
                // Refiner: fresh noise from seed + 1, its channel mean replaced by the base's last ε.
                let tail: Vec<f32> = sigmas[r.switch..].iter().map(|&s| (s as f64 * VAE_SWAP_SIGMA_SCALE) as f32).collect();
                // Into the refiner's latent space through the interposer (Fooocus's vae_parse).
                let x0 = match &r.model.vae {
                    None => x0,
                    Some(vae) => {
                        let interposer = r.model.interposer.as_ref().ok_or_else(|| {
                            EngineError::invalid(
                                "refiner_model_name",
                                format!("an SD1.5 refiner needs the latent interposer models/vae_approx/{}", crate::interposer::FILE_NAME),
                            )
                        })?;
                        decoder = vae;
                        (interposer.forward(&(x0 / self.vae.scaling_factor)?)? * vae.scaling_factor)?
                    }
                };
                let seed = params.seed.wrapping_add(1);
                let fresh = initial_noise(seed, (1, 4, lh, lw))?.to_device(&self.device)?;
                let fresh = fresh.broadcast_add(&(eps.mean_keepdim(1)? - fresh.mean_keepdim(1)?)?)?;
                let x = (x0 + (fresh * first_noise_scale(tail[0], &sampling))?)?;
                let mut refined = CfgDenoiser::for_refiner(self, r.model, &sampling, cond, uncond, size, params.cfg, params.patches)?;
                sample_run(params, &mut refined, x, &tail, &sampling, &mut noise(seed), &mut |i, _, _, d| report(r.switch + i + 1, d))?
            }
            _ => {
                if let Some(r) = refiner {
                    denoiser = denoiser.with_refiner(self, r.model, r.switch, cond, uncond)?;
                }
                sample_run(params, &mut denoiser, x, &sigmas, &sampling, &mut noise(params.seed), &mut |i, _, _, d| report(i + 1, d))?
            }
        };
        let vae_latent = if playground { playground_to_vae(&latent)? } else { latent.clone() };
        let image = if params.tiled_decode {
            let decoded = decoder.decode_tiled_fooocus(&vae_latent)?;
            RgbImage::from_tensor(&((decoded + 1.0)? / 2.0)?.clamp(0f32, 1f32)?.get(0)?)?
        } else {
            decode_with(decoder, &vae_latent)?
        };
        Ok(Generated { image, latent, seed: params.seed })
    }

    /// VAE-decode a latent into an RGB image.
    pub fn decode_latent(&self, latent: &Tensor) -> Result<RgbImage> {
        decode_with(&self.vae, latent)
    }

    /// Encode an image job's input once, as Fooocus does (`core.encode_vae`): the posterior
    /// sampled from torch's global generator when the host carries one (its mean otherwise),
    /// through Fooocus's three-pass tiled VAE when `tiled` (upscale).
    #[tracing::instrument(name = "engine.vae_encode", skip_all, fields(width = img.width, height = img.height, tiled))]
    pub fn encode_init(&self, img: &RgbImage, tiled: bool, global: Option<&TorchGlobal>) -> Result<Tensor> {
        let x = ((img.to_tensor(&self.device)? * 2.0)? - 1.0)?;
        self.encode_pixels(&x, tiled, global)
    }

    /// Encode pixels in [-1, 1] `[1, 3, H, W]` (see [`encode_init`](Self::encode_init)).
    pub(crate) fn encode_pixels(&self, x: &Tensor, tiled: bool, global: Option<&TorchGlobal>) -> Result<Tensor> {
        let run = |posterior: &mut Posterior<'_>| -> Result<Tensor> {
            Ok(if tiled { self.vae.encode_tiled_fooocus(x, posterior)? } else { self.vae.encode_with(x, posterior)? })
        };
        let latent = match global {
            Some(g) => g.with(|rng| run(&mut Posterior::Sample(rng)))?,
            None => run(&mut Posterior::Mean)?,
        };
        Ok(latent.to_dtype(DType::F32)?)
    }

    /// VAE-encode an image (posterior mean) into a scaled latent at the requested size.
    pub fn encode_image(&self, img: &RgbImage, width: u32, height: u32) -> Result<Tensor> {
        encode_with(&self.vae, img, width, height, &self.device)
    }
}

/// Decode a scaled latent with `vae` (tiled when large).
#[tracing::instrument(name = "engine.vae_decode", skip_all)]
fn decode_with(vae: &AutoEncoder, latent: &Tensor) -> Result<RgbImage> {
    let (_, _, h, w) = latent.dims4()?;
    let decoded = if h * w > LARGEST_UNTILED_LATENT { vae.decode_tiled(latent, Tiling::default())? } else { vae.decode(latent)? }
        .to_dtype(DType::F32)?;
    let img = ((decoded + 1.0)? / 2.0)?.clamp(0f32, 1f32)?;
    RgbImage::from_tensor(&img.get(0)?)
}

/// Encode an image (posterior mean) into `vae`'s scaled latent; the image must be `width`×`height`.
#[tracing::instrument(name = "engine.vae_encode", skip_all)]
fn encode_with(vae: &AutoEncoder, img: &RgbImage, width: u32, height: u32, device: &Device) -> Result<Tensor> {
    if img.width != width || img.height != height {
        return Err(EngineError::invalid("input_image", format!("is {}x{}, expected {width}x{height}", img.width, img.height)));
    }
    let pixels = img.to_tensor(device)?;
    let x = ((pixels * 2.0)? - 1.0)?;
    let latent_area = (width as usize / vae.downscale) * (height as usize / vae.downscale);
    let latent = if latent_area > LARGEST_UNTILED_LATENT { vae.encode_tiled(&x, Tiling::default())? } else { vae.encode(&x)? };
    Ok(latent.to_dtype(DType::F32)?)
}
