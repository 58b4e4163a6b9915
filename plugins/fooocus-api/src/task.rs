//! What a Fooocus-API job makes from its input images, as contract 0.2.0's typed task and
//! controls: the images decoded by the host (under its image limits), then Fooocus-API's rules
//! (`focal_fooocus_tasks`) for upscale/vary, inpaint/outpaint and image prompts.

use focal_fooocus_tasks::uov::{UovTask, FOOOCUS_UPSCALER};
use focal_fooocus_tasks::{image_prompts, inpaint, uov, IMAGE_PROMPT, INPAINT_OUTPAINT, TEXT_TO_IMAGE, UPSCALE_VARY};
use serde_json::Value;

use crate::focal::plugin::engine::{Control, Extend, GenerationParams, ImageToImage, Inpaint, InpaintOptions, Task, Upscale};
use crate::focal::plugin::images::Image;

/// A request problem: the input role or field it concerns (`input_image`,
/// `image_prompts.0.cn_img`, `cn_img2`) and what is wrong.
pub type RoleError = (String, String);

/// The input images (role, encoded bytes) as host images; the error names the role.
pub fn decode(inputs: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, Image)>, RoleError> {
    inputs
        .into_iter()
        .map(|(role, data)| match Image::decode(&data) {
            Ok(image) => Ok((role, image)),
            Err(why) => Err((role.clone(), format!("{role}: {why}"))),
        })
        .collect()
}

fn find<'a>(images: &'a [(String, Image)], role: &str) -> Option<&'a Image> {
    images.iter().find(|(r, _)| r == role).map(|(_, i)| i)
}

fn required<'a>(images: &'a [(String, Image)], role: &str, why: &str) -> Result<&'a Image, RoleError> {
    find(images, role).ok_or_else(|| (role.to_string(), format!("Field required: {why}")))
}

fn inpaint_task<'a>(images: &'a [(String, Image)], request: &Value) -> Result<Task<'a>, RoleError> {
    let image = required(images, "input_image", "inpaint and outpaint repaint an input image")?;
    let s = inpaint::settings(request, image.width(), image.height());
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
    Ok(Task::Inpaint(Inpaint { image, mask: find(images, "input_mask"), options }))
}

fn uov_task<'a>(images: &'a [(String, Image)], request: &Value, params: &mut GenerationParams) -> Result<Task<'a>, RoleError> {
    let image = required(images, "input_image", "upscale and vary start from an input image")?;
    let method = request["uov_method"].as_str().unwrap_or_default();
    let unknown = || ("uov_method".to_string(), format!("uov_method '{method}' is not one Fooocus runs"));
    Ok(match uov::task(request, image.width(), image.height()).ok_or_else(unknown)? {
        UovTask::Vary { denoise, width, height } => {
            (params.width, params.height) = (width, height);
            Task::ImageToImage(ImageToImage { image, denoise })
        }
        UovTask::Upscale { factor, denoise, steps } => {
            params.steps = steps.unwrap_or(params.steps);
            Task::Upscale(Upscale { image, model: FOOOCUS_UPSCALER.into(), factor, denoise })
        }
        UovTask::Disabled => Task::TextToImage,
    })
}

/// The job's task and controls for `job_type` (the route's), adjusting `params` as Fooocus
/// does (vary's size, upscale's steps). Image prompts become controls, in input order.
pub fn task_and_controls<'a>(
    job_type: &str,
    images: &'a [(String, Image)],
    request: &Value,
    params: &mut GenerationParams,
) -> Result<(Task<'a>, Vec<Control<'a>>), RoleError> {
    let mut controls = Vec::new();
    let mut task_images = Vec::new();
    for (role, image) in images {
        if !image_prompts::is_image_prompt(role) {
            task_images.push(role.as_str());
            continue;
        }
        let c = image_prompts::control(role, request).map_err(|why| (role.clone(), why))?;
        controls.push(Control {
            kind: c.kind.into(),
            image,
            weight: c.weight,
            stop_at: c.stop_at,
            preprocess: c.preprocess,
            options: c.options,
        });
    }
    let task = match job_type {
        TEXT_TO_IMAGE | IMAGE_PROMPT if task_images.is_empty() => Task::TextToImage,
        // Fooocus-API mixes image prompts with an inpaint when the route also has an input image.
        IMAGE_PROMPT | INPAINT_OUTPAINT => inpaint_task(images, request)?,
        UPSCALE_VARY => uov_task(images, request, params)?,
        other => {
            let role = task_images.first().copied().unwrap_or("body").to_string();
            return Err((role, format!("'{other}' jobs with input images are not a task Fooocus-API defines")));
        }
    };
    Ok((task, controls))
}
