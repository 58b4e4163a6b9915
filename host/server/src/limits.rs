//! What one request may make the host allocate. Every size a client controls (body bytes,
//! image pixels, generation area, images per job, prompt length) is checked here before
//! anything is allocated for it, so no request can take the process down. The values are the
//! defaults of `focal serve`'s `--max-*` options.

use focal_core::{Image, InpaintOptions, JobSpec, Task};

use crate::decode::ImageLimits;

#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest request body read from a client (413 beyond).
    pub max_body_bytes: usize,
    /// Decoded input images (uploads, base64, URLs).
    pub image: ImageLimits,
    /// Width × height of the image the engine generates. The default (8 MiP, e.g. 2896²)
    /// covers Fooocus's largest diffusion pass (it skips diffusion above 2800² when upscaling).
    pub max_generation_pixels: u64,
    /// `image_number` at most (the Fooocus-API's own maximum).
    pub max_images_per_job: u32,
    /// LoRAs a job may name.
    pub max_loras_per_job: usize,
    /// Characters in each prompt text. Nothing useful needs more: CLIP reads 75-token windows
    /// and Fooocus concatenates them, so this is already hundreds of windows.
    pub max_prompt_chars: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 << 20,
            image: ImageLimits::default(),
            max_generation_pixels: 8 << 20,
            max_images_per_job: 32,
            max_loras_per_job: 32,
            max_prompt_chars: 64 << 10,
        }
    }
}

impl RequestLimits {
    /// The first limit `spec` breaks, as `field: message` (the field as the job spec names it).
    pub fn check_job(&self, spec: &JobSpec) -> Result<(), String> {
        let p = &spec.params;
        let pixels = p.width as u64 * p.height as u64;
        if pixels > self.max_generation_pixels {
            return Err(format!(
                "width × height: {}×{} is {pixels} pixels; the limit is {} pixels (--max-generation-pixels)",
                p.width, p.height, self.max_generation_pixels
            ));
        }
        if p.image_number == 0 || p.image_number > self.max_images_per_job {
            return Err(format!("image_number: {} is not between 1 and {}", p.image_number, self.max_images_per_job));
        }
        if p.loras.len() > self.max_loras_per_job {
            return Err(format!("loras: {} LoRAs; the limit is {}", p.loras.len(), self.max_loras_per_job));
        }
        for (field, text) in [("prompt", &p.prompt), ("negative_prompt", &p.negative_prompt)] {
            let chars = text.chars().count();
            if chars > self.max_prompt_chars {
                return Err(format!("{field}: {chars} characters; the limit is {} (--max-prompt-chars)", self.max_prompt_chars));
            }
        }
        if let Task::Inpaint { image, options, .. } = &spec.task {
            self.check_outpaint(image, options)?;
        }
        Ok(())
    }

    /// An outpaint's canvas (the image plus its margins) is an image like the inputs.
    pub fn check_outpaint(&self, image: &Image, options: &InpaintOptions) -> Result<(), String> {
        let Some(e) = options.extend else { return Ok(()) };
        let (w, h) = (image.width as u64 + e.left as u64 + e.right as u64, image.height as u64 + e.top as u64 + e.bottom as u64);
        if w * h <= self.image.max_pixels {
            return Ok(());
        }
        // Named by its largest margin, the one to shrink.
        let sides = [("left", e.left), ("right", e.right), ("top", e.top), ("bottom", e.bottom)];
        let side = sides.into_iter().max_by_key(|&(_, v)| v).map_or("left", |(s, _)| s);
        Err(format!(
            "extend.{side}: outpainting the {}×{} image makes {w}×{h} pixels; the limit is {} (--max-image-pixels)",
            image.width, image.height, self.image.max_pixels
        ))
    }
}
