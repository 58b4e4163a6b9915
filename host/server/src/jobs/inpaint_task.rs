//! An inpaint or outpaint job's pixels around sampling, in Fooocus-API's order
//! (`apply_image_input`, `apply_outpaint`, `InpaintWorker`): the mask read from the upload,
//! grown or shrunk, inverted; the outpaint margins added (edge pixels, mask white); the area
//! around the mask cut out, super-resolved when small and brought to shape ceil 1024; the
//! masked area filled; after sampling, the result put back into that area and blended with the
//! original through the soft mask.

use focal_core::task::InpaintOptions;
use focal_core::{Image, JobSpec};
use focal_engine::image::RgbImage;
use focal_imageops::mask::{blend, erode_or_dilate, fooocus_fill, mask_from_upload, soft_mask, threshold};
use focal_imageops::{crop, image_shape_ceil, inpaint_area, pad_constant, pad_edge, paste, resize_lanczos, set_image_shape_ceil};
use focal_imageops::{CropBox, Margins, Pixels};

use super::image_tasks::{to_pixels, to_rgb, Upscalers};
use super::JobManager;

/// Fooocus's inpaint models (`modules/config.py:downloading_inpaint_models`).
pub(super) const INPAINT_MODELS_URL: &str = "https://huggingface.co/lllyasviel/fooocus_inpaint/resolve/main/";

/// What sampling an inpaint starts from, and how its result goes back.
pub(super) struct InpaintPlan {
    /// The area sampled (cut out, super-resolved, resized): sides multiples of 64.
    pub(super) image: RgbImage,
    /// `image` with the masked area filled (the initial and known latent).
    pub(super) fill: RgbImage,
    /// 255 where `image` is repainted.
    pub(super) mask: Vec<u8>,
    pub(super) denoise: f32,
    /// The whole (outpainted) image the result is pasted into.
    original: Pixels,
    area: CropBox,
    /// Fooocus's soft mask over `original` for the final blend.
    soft: Vec<u8>,
}

impl InpaintPlan {
    /// The sampled image put back: resized into the area, pasted, blended with the original.
    pub(super) fn finish(&self, sampled: RgbImage) -> RgbImage {
        let content = resize_lanczos(&to_pixels(sampled), self.area.width(), self.area.height());
        let pasted = paste(&self.original, &content, self.area);
        to_rgb(blend(&pasted, &self.original, &self.soft))
    }
}

/// A job option's decimal as Python reads it (0.618, not 0.6179999709129333).
fn decimal(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

impl JobManager {
    /// Decode one of the task's images as Fooocus reads it (RGB, alpha over white).
    pub(super) fn decode_input(&self, what: &str, image: &Image) -> Result<RgbImage, String> {
        crate::decode::decode(&image.encoded, &self.options.limits.image).map_err(|e| format!("{what}: {e:#}"))
    }

    /// Prepare an inpaint; `None` when there is nothing to inpaint (no mask pixel above 127 and
    /// no outpaint), which Fooocus answers with a text-to-image.
    pub(super) fn prepare_inpaint(
        &self,
        id: &str,
        image: &Image,
        mask: Option<&Image>,
        options: &InpaintOptions,
        upscalers: &mut Upscalers,
    ) -> Result<Option<InpaintPlan>, String> {
        let input = to_pixels(self.decode_input("input image", image)?);
        let (w, h) = (input.width, input.height);
        let mut m = match mask {
            Some(mask) => mask_from_upload(&to_pixels(self.decode_input("input mask", mask)?), w, h),
            None => vec![0; w as usize * h as usize],
        };
        if options.mask_grow != 0 {
            m = erode_or_dilate(&m, w, h, options.mask_grow.clamp(-64, 64));
        }
        if options.invert_mask {
            m.iter_mut().for_each(|v| *v = 255 - *v);
        }
        if !(m.iter().any(|&v| v > 127) || options.extend.is_some()) {
            return Ok(None);
        }
        let (original, m, denoise, field) = match options.extend {
            Some(e) => {
                let margins = Margins { left: e.left, right: e.right, top: e.top, bottom: e.bottom };
                let (pw, ph) = (w as u64 + e.left as u64 + e.right as u64, h as u64 + e.top as u64 + e.bottom as u64);
                if pw * ph > self.options.limits.image.max_pixels {
                    return Err(format!("outpainting {w}x{h} by {e:?} makes {pw}x{ph} pixels, above this server's image limit"));
                }
                let mask = Pixels::new(w, h, 1, m).expect("one byte a pixel");
                // `apply_outpaint` forces full strength over the whole image.
                (pad_edge(&input, margins), pad_constant(&mask, margins, 255).data, 1.0, 1.0)
            }
            None => (input, m, options.denoise, decimal(options.respective_field).clamp(0.0, 1.0)),
        };
        let (w, h) = (original.width, original.height);
        let area = inpaint_area(&m, w, h, field).ok_or("the inpaint mask is empty")?;
        let mut image = crop(&original, area);
        if image_shape_ceil(&image) < 1024.0 {
            let esrgan = self.upscaler(id, "", upscalers)?;
            image = to_pixels(esrgan.upscale(&to_rgb(image), &candle_core::Device::Cpu).map_err(|e| e.to_string())?);
        }
        let image = set_image_shape_ceil(&image, 1024.0);
        let area_mask = crop(&Pixels::new(w, h, 1, m.clone()).expect("one byte a pixel"), area);
        let mask = threshold(&resize_lanczos(&area_mask, image.width, image.height).data, 127);
        let fill = if denoise > 0.99 { fooocus_fill(&image, &mask) } else { image.clone() };
        Ok(Some(InpaintPlan { image: to_rgb(image), fill: to_rgb(fill), mask, denoise, soft: soft_mask(&m, w, h), original, area }))
    }

    /// `prompt` as Fooocus runs an inpaint with an additional prompt: that prompt first.
    pub(super) fn with_additional_prompt(spec: &JobSpec, additional: &str) -> JobSpec {
        let mut spec = spec.clone();
        if !additional.is_empty() {
            let p = &mut spec.params.prompt;
            *p = if p.is_empty() { additional.to_string() } else { format!("{additional}\n{p}") };
        }
        spec
    }
}
