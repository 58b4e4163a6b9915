//! The image tasks around sampling, in Fooocus's order (`async_worker.py`: `apply_vary`,
//! `apply_upscale`, the inpaint flow): the pixel work is the image-task component's
//! (`fooocus-image-tasks` unless the operator replaced it), the networks are the host's — the
//! upscaler it calls back into, the one VAE encode per job (sampling the posterior from the
//! carried torch generator) — and an upscale may return without diffusion.

use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use focal_core::image_task::{ImageTaskCall, ImageTaskOutput};
use focal_core::{Image, JobSpec, Task};
use focal_engine::image::RgbImage;
use focal_engine::inpaint::{InpaintHead, Inpainting};
use focal_engine::rng::TorchGlobal;
use focal_engine::{GenerationParams, SdxlModel};

use super::inpaint_task::InpaintPlan;
use super::upscaler::{JobUpscaler, Upscalers};
use super::JobManager;

/// What an image task makes of its input before sampling.
pub(super) enum Prepared {
    /// Sample from this image at this size (`width`×`height` of the image) with `denoise`;
    /// `tiled`: Fooocus's tiled VAE (upscale).
    Diffuse { image: RgbImage, denoise: f32, tiled: bool },
    /// The result without diffusion (fast upscale, or too large to diffuse).
    Direct(RgbImage),
    /// An inpaint or outpaint.
    Inpaint(InpaintPlan),
}

impl JobManager {
    /// Decode one of the task's images as Fooocus reads it (RGB, alpha over white).
    pub(super) fn decode_input(&self, what: &str, image: &Image) -> Result<RgbImage, String> {
        crate::decode::decode(&image.encoded, &self.options.limits.image).map_err(|e| format!("{what}: {e:#}"))
    }

    /// One call of the image-task component, its upscaler bound to job `id` and `model`.
    pub(super) fn image_task(
        self: &Arc<Self>,
        id: &str,
        call: ImageTaskCall,
        model: &str,
        upscalers: &Arc<Mutex<Upscalers>>,
    ) -> Result<ImageTaskOutput, String> {
        let pipeline = self.images.get().ok_or("this host runs no image-task component")?;
        let upscaler = JobUpscaler { jobs: self.clone(), id: id.to_string(), model: model.to_string(), upscalers: upscalers.clone() };
        pipeline.task(call, Arc::new(upscaler))
    }

    /// Prepare an image task; `None` for text-to-image (and for an inpaint with nothing to
    /// repaint, which Fooocus answers with a text-to-image).
    pub(super) fn prepare_image_task(
        self: &Arc<Self>,
        id: &str,
        spec: &JobSpec,
        upscalers: &Arc<Mutex<Upscalers>>,
    ) -> Result<Option<Prepared>, String> {
        let p = &spec.params;
        match &spec.task {
            Task::Inpaint { image, mask, options } => {
                Ok(self.prepare_inpaint(id, image, mask.as_ref(), options, upscalers)?.map(Prepared::Inpaint))
            }
            Task::ImageToImage { image, denoise } => {
                // The size the plugin chose (Fooocus's vary picks it from the image).
                let call = ImageTaskCall::Vary { image: image.clone(), width: p.width, height: p.height };
                let ImageTaskOutput::Image(out) = self.image_task(id, call, "", upscalers)? else {
                    return Err("the image-task component answered a vary with something else".into());
                };
                let image = self.decode_input("the varied image", &out)?;
                Ok(Some(Prepared::Diffuse { image, denoise: *denoise, tiled: false }))
            }
            Task::Upscale { image, model, factor, denoise } => {
                if !(*factor > 0.0 && *factor <= 8.0) {
                    return Err(format!("upscale factor {factor} must be in (0, 8]"));
                }
                let call = ImageTaskCall::Upscale { image: image.clone(), factor: *factor };
                let ImageTaskOutput::Upscaled { image, diffuse } = self.image_task(id, call, model, upscalers)? else {
                    return Err("the image-task component answered an upscale with something else".into());
                };
                let image = self.decode_input("the upscaled image", &image)?;
                if *denoise <= 0.0 || !diffuse {
                    return Ok(Some(Prepared::Direct(image)));
                }
                Ok(Some(Prepared::Diffuse { image, denoise: *denoise, tiled: true }))
            }
            _ => Ok(None),
        }
    }
}

/// What every image of a job samples from: the job's one encode, as Fooocus makes it before
/// the first image's noise.
pub(super) struct Encoded {
    /// The initial latent (`None`: pure noise).
    latent: Option<Tensor>,
    width: u32,
    height: u32,
    denoise: f32,
    tiled: bool,
    inpainting: Option<Inpainting>,
}

impl Encoded {
    /// The size sampled at.
    pub(super) fn width(&self) -> u32 {
        self.width
    }
    pub(super) fn height(&self) -> u32 {
        self.height
    }

    /// Set one image's parameters to sample from it.
    pub(super) fn apply(&self, params: &mut GenerationParams) {
        (params.init_latent, params.width, params.height) = (self.latent.clone(), self.width, self.height);
        (params.denoise, params.tiled_decode, params.inpaint) = (self.denoise, self.tiled, self.inpainting.clone());
    }
}

/// Encode the job's input (the posterior sampled from the carried torch generator). An inpaint
/// encodes the masked image, then the filled one (Fooocus's order), and feeds the head.
pub(super) fn encode_input(
    model: &SdxlModel,
    prepared: &Prepared,
    global: &TorchGlobal,
    head: Option<&InpaintHead>,
    disable_initial_latent: bool,
) -> Result<Option<Encoded>, String> {
    let e = |e: focal_engine::EngineError| e.to_string();
    Ok(match prepared {
        Prepared::Direct(_) => None,
        Prepared::Diffuse { image, denoise, tiled } => Some(Encoded {
            latent: Some(model.encode_init(image, *tiled, Some(global)).map_err(e)?),
            width: image.width,
            height: image.height,
            denoise: *denoise,
            tiled: *tiled,
            inpainting: None,
        }),
        Prepared::Inpaint(plan) => {
            let (masked, mask) = model.encode_inpaint(&plan.image, &plan.mask, Some(global)).map_err(e)?;
            let fill = model.encode_init(&plan.fill, false, Some(global)).map_err(e)?;
            let head_feature = match head {
                Some(head) if head.channels() != model.unet.model_channels() => {
                    return Err(format!(
                        "the inpaint head has {} channels, this model's UNet {}: they are for different models",
                        head.channels(),
                        model.unet.model_channels()
                    ))
                }
                Some(head) => Some(head.feature(&masked, &mask, model.dtype).map_err(e)?),
                None => None,
            };
            Some(Encoded {
                latent: (!disable_initial_latent).then(|| fill.clone()),
                width: plan.image.width,
                height: plan.image.height,
                denoise: plan.denoise,
                tiled: false,
                inpainting: Some(Inpainting { fill, mask, head_feature }),
            })
        }
    })
}
