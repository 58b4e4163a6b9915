//! Contract 0.1.0 cannot name a task or a control: a Fooocus-API job arrives as its job type,
//! its input images by role and the request record. This reads the typed task and the controls
//! from them with Fooocus-API's own rules (`focal_fooocus_tasks`, the code the 0.2.0
//! Fooocus-API plugin runs), so the jobs of 0.1.0 plugins keep running as typed tasks.

use focal_core::task::{Extend, InpaintOptions};
use focal_core::{Control, GenerationParams, Image, Task};
use focal_fooocus_tasks::uov::{UovTask, FOOOCUS_UPSCALER};
use focal_fooocus_tasks::{image_prompts, inpaint, uov, IMAGE_PROMPT, INPAINT_OUTPAINT, TEXT_TO_IMAGE, UPSCALE_VARY};
use serde_json::Value;

fn find(images: &[(String, Image)], role: &str) -> Option<Image> {
    images.iter().find(|(r, _)| r == role).map(|(_, i)| i.clone())
}

fn inpaint_task(images: &[(String, Image)], request: &Value) -> Option<Task> {
    let image = find(images, "input_image")?;
    let s = inpaint::settings(request, image.width, image.height);
    let options = InpaintOptions {
        denoise: s.denoise,
        respective_field: s.respective_field,
        mask_grow: s.mask_grow,
        invert_mask: s.invert_mask,
        patch_model: s.patch_model.map(str::to_string),
        extend: s.extend.map(|m| Extend { left: m.left, right: m.right, top: m.top, bottom: m.bottom }),
        disable_initial_latent: s.disable_initial_latent,
        additional_prompt: s.additional_prompt,
    };
    Some(Task::Inpaint { image, mask: find(images, "input_mask"), options })
}

fn uov_task(images: &[(String, Image)], request: &Value, params: &mut GenerationParams) -> Option<Task> {
    let image = find(images, "input_image")?;
    Some(match uov::task(request, image.width, image.height)? {
        UovTask::Vary { denoise, width, height } => {
            (params.width, params.height) = (width, height);
            Task::ImageToImage { image, denoise }
        }
        UovTask::Upscale { factor, denoise, steps } => {
            params.steps = steps.unwrap_or(params.steps);
            Task::Upscale { image, model: FOOOCUS_UPSCALER.into(), factor, denoise }
        }
        UovTask::Disabled => Task::TextToImage,
    })
}

/// The typed task of a 0.1.0 job and its controls. `images` are the job's decoded inputs
/// (image prompts among them); a job none of Fooocus-API's rules types becomes `Untyped`.
pub fn task_and_controls(
    job_type: &str,
    mut images: Vec<(String, Image)>,
    request: &Value,
    params: &mut GenerationParams,
) -> Result<(Task, Vec<Control>), String> {
    let mut controls = Vec::new();
    for (role, image) in images.iter().filter(|(role, _)| image_prompts::is_image_prompt(role)) {
        let c = image_prompts::control(role, request)?;
        controls.push(Control {
            kind: c.kind.into(),
            image: image.clone(),
            weight: c.weight,
            stop_at: c.stop_at,
            preprocess: c.preprocess,
            options: c.options,
        });
    }
    images.retain(|(role, _)| !image_prompts::is_image_prompt(role));
    let typed = match job_type {
        TEXT_TO_IMAGE | IMAGE_PROMPT if images.is_empty() => Some(Task::TextToImage),
        // Fooocus-API mixes image prompts with an inpaint when the route also has an input image.
        IMAGE_PROMPT | INPAINT_OUTPAINT => inpaint_task(&images, request),
        UPSCALE_VARY => uov_task(&images, request, params),
        _ => None,
    };
    let task = typed.unwrap_or_else(|| Task::Untyped { label: job_type.to_string(), images });
    Ok((task, controls))
}
