//! An inpaint or outpaint job around sampling: the image-task component prepares what is
//! sampled (Fooocus-API's `apply_image_input`, `apply_outpaint`, `InpaintWorker`: mask,
//! margins, area, fill) and puts the result back; the host bounds the outpainted size first and
//! decodes what the engine needs.

use std::sync::{Arc, Mutex};

use focal_core::image_task::{Area, ImageTaskCall, ImageTaskOutput, InpaintRequest, Mask};
use focal_core::task::InpaintOptions;
use focal_core::{Image, JobSpec};
use focal_engine::image::RgbImage;

use super::upscaler::Upscalers;
use super::JobManager;
use crate::images::image_from_rgb;

/// Fooocus's inpaint models (`modules/config.py:downloading_inpaint_models`).
pub(super) const INPAINT_MODELS_URL: &str = "https://huggingface.co/lllyasviel/fooocus_inpaint/resolve/main/";

/// What sampling an inpaint starts from, and how its result goes back.
pub(super) struct InpaintPlan {
    /// The area sampled, at the size sampled at.
    pub(super) image: RgbImage,
    /// `image` with the masked area filled (the initial and known latent).
    pub(super) fill: RgbImage,
    /// 255 where `image` is repainted.
    pub(super) mask: Vec<u8>,
    pub(super) denoise: f32,
    /// The whole (outpainted) image the result is pasted into, where, and the blend's mask.
    original: Image,
    area: Area,
    blend_mask: Mask,
}

impl JobManager {
    /// Prepare an inpaint; `None` when there is nothing to inpaint (no mask pixel above 127 and
    /// no outpaint), which Fooocus answers with a text-to-image.
    pub(super) fn prepare_inpaint(
        self: &Arc<Self>,
        id: &str,
        image: &Image,
        mask: Option<&Image>,
        options: &InpaintOptions,
        upscalers: &Arc<Mutex<Upscalers>>,
    ) -> Result<Option<InpaintPlan>, String> {
        // Bounded at submit too; jobs queued before a lower limit are checked again here.
        self.options.limits.check_outpaint(image, options)?;
        let request = InpaintRequest {
            image: image.clone(),
            mask: mask.cloned(),
            denoise: options.denoise,
            respective_field: options.respective_field,
            mask_grow: options.mask_grow,
            invert_mask: options.invert_mask,
            extend: options.extend,
        };
        let ImageTaskOutput::Inpaint(plan) = self.image_task(id, ImageTaskCall::PrepareInpaint(request), "", upscalers)? else {
            return Err("the image-task component answered an inpaint with something else".into());
        };
        let Some(plan) = plan else { return Ok(None) };
        let sampled = self.decode_input("the inpaint area", &plan.image)?;
        let fill = self.decode_input("the inpaint fill", &plan.fill)?;
        if (plan.mask.width, plan.mask.height) != (sampled.width, sampled.height)
            || fill.width != sampled.width
            || fill.height != sampled.height
        {
            return Err("the image-task component's inpaint area, fill and mask differ in size".into());
        }
        if sampled.width % 8 != 0 || sampled.height % 8 != 0 {
            let (w, h) = (sampled.width, sampled.height);
            return Err(format!("the image-task component's inpaint area is {w}×{h}: its sides must be multiples of 8"));
        }
        Ok(Some(InpaintPlan {
            image: sampled,
            fill,
            mask: plan.mask.pixels,
            denoise: plan.denoise,
            original: plan.original,
            area: plan.area,
            blend_mask: plan.blend_mask,
        }))
    }

    /// The sampled image put back into the original by the image-task component.
    pub(super) fn finish_inpaint(
        self: &Arc<Self>,
        id: &str,
        plan: &InpaintPlan,
        sampled: &RgbImage,
        upscalers: &Arc<Mutex<Upscalers>>,
    ) -> Result<RgbImage, String> {
        let call = ImageTaskCall::FinishInpaint {
            sampled: image_from_rgb(sampled)?,
            original: plan.original.clone(),
            area: plan.area,
            blend_mask: plan.blend_mask.clone(),
        };
        let ImageTaskOutput::Image(out) = self.image_task(id, call, "", upscalers)? else {
            return Err("the image-task component answered an inpaint's finish with something else".into());
        };
        self.decode_input("the finished inpaint", &out)
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
