//! The image tasks' steps around sampling, in Fooocus's order (`async_worker.py`: `apply_vary`,
//! `apply_upscale`): the input brought to its size with PIL's LANCZOS, the upscaler, the one
//! VAE encode per job (sampling the posterior from the carried torch generator), and when an
//! upscale returns without diffusion.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use focal_core::{JobSpec, Task};
use focal_engine::esrgan::{Esrgan, FOOOCUS_UPSCALER};
use focal_engine::image::RgbImage;
use focal_engine::inpaint::{InpaintHead, Inpainting};
use focal_engine::rng::TorchGlobal;
use focal_engine::{GenerationParams, SdxlModel};
use focal_imageops::{resize_lanczos, set_image_shape_ceil, shape_ceil, Pixels};

use super::inpaint_task::InpaintPlan;
use super::JobManager;

/// Fooocus's upscaler download (`modules/config.py:downloading_upscale_model`).
const UPSCALER_URL: &str = "https://huggingface.co/lllyasviel/misc/resolve/main/fooocus_upscaler_s409985e5.bin";

/// The largest super-resolved image (pixels) an upscale makes: 8192² (a 2048² input at ×4); the
/// blended f32 output alone is 12 bytes a pixel.
const LARGEST_UPSCALER_OUTPUT: u64 = 8192 * 8192;

/// Above this shape ceil an upscale returns the super-resolved image without diffusion.
const LARGEST_DIFFUSED_UPSCALE: f64 = 2800.0;

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

pub(super) fn to_pixels(img: RgbImage) -> Pixels {
    Pixels::rgb(img.width, img.height, img.data).expect("an RgbImage holds 3 bytes per pixel")
}

pub(super) fn to_rgb(p: Pixels) -> RgbImage {
    RgbImage { width: p.width, height: p.height, data: p.data }
}

/// The upscaler loaded by this worker, kept while jobs name the same file.
#[derive(Default)]
pub(super) struct Upscalers {
    loaded: Option<(PathBuf, Esrgan)>,
}

impl JobManager {
    /// The task's input, decoded as Fooocus reads it (RGB, alpha over white).
    fn task_input(&self, spec: &JobSpec) -> Result<Option<RgbImage>, String> {
        let image = match &spec.task {
            Task::ImageToImage { image, .. } | Task::Upscale { image, .. } => image,
            _ => return Ok(None),
        };
        self.decode_input("input image", image).map(Some)
    }

    /// Prepare an image-to-image or upscale task; `None` for text-to-image.
    pub(super) fn prepare_image_task(&self, id: &str, spec: &JobSpec, upscalers: &mut Upscalers) -> Result<Option<Prepared>, String> {
        if let Task::Inpaint { image, mask, options } = &spec.task {
            return Ok(self.prepare_inpaint(id, image, mask.as_ref(), options, upscalers)?.map(Prepared::Inpaint));
        }
        let Some(input) = self.task_input(spec)? else { return Ok(None) };
        let p = &spec.params;
        match &spec.task {
            Task::ImageToImage { denoise, .. } => {
                // The size the plugin chose (Fooocus's vary picks it from the image).
                let image = if (input.width, input.height) == (p.width, p.height) {
                    input
                } else {
                    to_rgb(resize_lanczos(&to_pixels(input), p.width, p.height))
                };
                Ok(Some(Prepared::Diffuse { image, denoise: *denoise, tiled: false }))
            }
            Task::Upscale { model, factor, denoise, .. } => {
                let (w, h) = (input.width as f64, input.height as f64);
                let f = *factor as f64;
                if !(f > 0.0 && f <= 8.0) {
                    return Err(format!("upscale factor {f} must be in (0, 8]"));
                }
                let esrgan = self.upscaler(id, model, upscalers)?;
                let s = esrgan.scale as u64;
                if input.width as u64 * s * input.height as u64 * s > LARGEST_UPSCALER_OUTPUT {
                    return Err(format!(
                        "input image {}x{} is too large to upscale: the upscaler (×{s}) would make more than 8192² pixels",
                        input.width, input.height
                    ));
                }
                let sr = to_pixels(esrgan.upscale(&input, &candle_core::Device::Cpu).map_err(|e| e.to_string())?);
                // `apply_upscale`: to f × the input, or to shape ceil 1024 when that is smaller.
                let ceil = shape_ceil(h * f, w * f);
                let (image, ceil) = if ceil < 1024.0 {
                    (set_image_shape_ceil(&sr, 1024.0), 1024.0)
                } else {
                    (resize_lanczos(&sr, (w * f) as u32, (h * f) as u32), ceil)
                };
                let image = to_rgb(image);
                if *denoise <= 0.0 || ceil > LARGEST_DIFFUSED_UPSCALE {
                    return Ok(Some(Prepared::Direct(image)));
                }
                Ok(Some(Prepared::Diffuse { image, denoise: *denoise, tiled: true }))
            }
            _ => Ok(None),
        }
    }

    /// The upscaler file `name` from `upscale_models/` (Fooocus's own is fetched on first use).
    pub(super) fn upscaler<'a>(&self, id: &str, name: &str, upscalers: &'a mut Upscalers) -> Result<&'a Esrgan, String> {
        let name = if name.is_empty() { FOOOCUS_UPSCALER } else { name };
        if Path::new(name).components().count() != 1 {
            return Err(format!("upscale model '{name}' must be a file name in upscale_models/"));
        }
        let path = self.options.models.folder("upscale_models").join(name);
        if upscalers.loaded.as_ref().is_none_or(|(p, _)| p != &path) {
            upscalers.loaded = None;
            if !path.is_file() {
                if name != FOOOCUS_UPSCALER {
                    return Err(format!("upscale model '{name}' is not in the models folder's upscale_models/"));
                }
                self.download(id, UPSCALER_URL, &path)
                    .map_err(|e| format!("upscaling needs models/upscale_models/{FOOOCUS_UPSCALER}: {e}"))?;
            }
            let model = Esrgan::load(&path, &candle_core::Device::Cpu).map_err(|e| format!("cannot load the upscaler: {e}"))?;
            upscalers.loaded = Some((path, model));
        }
        Ok(&upscalers.loaded.as_ref().expect("loaded above").1)
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
