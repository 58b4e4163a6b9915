//! What a job asks the engine to do: the task (text-to-image, image-to-image, inpaint,
//! upscale), the controls on top of it, the parameters every task shares, and Fooocus's own
//! rules as an optional extension.

use serde::{Deserialize, Serialize};

use crate::image::Image;

/// A LoRA from the models folder's `loras/`, merged with this strength.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lora {
    pub name: String,
    pub weight: f32,
}

/// ComfyUI's `FreeU_V2` factors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FreeU {
    pub b1: f32,
    pub b2: f32,
    pub s1: f32,
    pub s2: f32,
}

/// A second checkpoint that takes over at `switch` (fraction of the steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refiner {
    pub model: String,
    pub switch: f32,
}

/// What every task shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub guidance_scale: f32,
    pub sampler: String,
    pub scheduler: String,
    pub seed: u64,
    pub image_number: u32,
    /// Checkpoint file name; empty or unknown means the host's default.
    pub base_model: String,
    pub clip_skip: u32,
    pub disable_seed_increment: bool,
    pub preview: bool,
    pub freeu: Option<FreeU>,
    /// A VAE in `vae/`; empty (or `Default (model)`) keeps the checkpoint's.
    pub vae: String,
    pub loras: Vec<Lora>,
    pub refiner: Option<Refiner>,
}

/// [`GenerationParams`] from a record with the same fields: a contract version's binding or a
/// stored row of an older schema (their `freeu`, `loras` and `refiner` are their own types).
/// One copy of the field list for every adapter.
#[macro_export]
macro_rules! generation_params_from {
    ($p:ident) => {{
        $crate::GenerationParams {
            prompt: $p.prompt,
            negative_prompt: $p.negative_prompt,
            width: $p.width,
            height: $p.height,
            steps: $p.steps,
            guidance_scale: $p.guidance_scale,
            sampler: $p.sampler,
            scheduler: $p.scheduler,
            seed: $p.seed,
            image_number: $p.image_number,
            base_model: $p.base_model,
            clip_skip: $p.clip_skip,
            disable_seed_increment: $p.disable_seed_increment,
            preview: $p.preview,
            freeu: $p.freeu.map(|f| $crate::task::FreeU { b1: f.b1, b2: f.b2, s1: f.s1, s2: f.s2 }),
            vae: $p.vae,
            loras: $p.loras.into_iter().map(|l| $crate::Lora { name: l.name, weight: l.weight }).collect(),
            refiner: $p.refiner.map(|r| $crate::task::Refiner { model: r.model, switch: r.switch }),
        }
    }};
}

/// Outpainting margins in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Extend {
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InpaintOptions {
    /// 0–1; an outpaint runs at 1.
    pub denoise: f32,
    /// 0–1: how much context around the mask is sampled (1 = the whole image).
    pub respective_field: f32,
    /// Grow (> 0) or shrink (< 0) the mask by this many 3×3 passes.
    pub mask_grow: i32,
    pub invert_mask: bool,
    /// The inpaint patch in `inpaint/` (Fooocus's engine; the head comes with it); `None`
    /// samples the base model alone.
    pub patch_model: Option<String>,
    pub extend: Option<Extend>,
    /// Start from noise instead of the filled image's latent (Fooocus's "Modify Content").
    #[serde(default)]
    pub disable_initial_latent: bool,
    /// Put before the prompt, as its first line, when the inpaint runs.
    #[serde(default)]
    pub additional_prompt: String,
}

/// The one thing a job makes its images from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Task {
    TextToImage,
    ImageToImage {
        image: Image,
        denoise: f32,
    },
    Inpaint {
        image: Image,
        /// White (above 127) where repainted; none: only an outpaint's margins are.
        mask: Option<Image>,
        options: InpaintOptions,
    },
    Upscale {
        image: Image,
        model: String,
        factor: f32,
        denoise: f32,
    },
    /// A contract-0.1.0 job other than plain text-to-image: its images by role, without the
    /// parameters a typed task needs (0.1.0 cannot express them). It ends with an error that
    /// says so.
    Untyped {
        label: String,
        images: Vec<(String, Image)>,
    },
}

impl Task {
    /// The images the task carries, with the field that named each (for error messages).
    pub fn images(&self) -> Vec<(String, &Image)> {
        match self {
            Task::TextToImage => vec![],
            Task::ImageToImage { image, .. } | Task::Upscale { image, .. } => vec![("image".into(), image)],
            Task::Inpaint { image, mask, .. } => {
                std::iter::once(("image".into(), image)).chain(mask.iter().map(|m| ("mask".into(), m))).collect()
            }
            Task::Untyped { images, .. } => images.iter().map(|(role, image)| (role.clone(), image)).collect(),
        }
    }

    /// The same task with its image files released (sizes kept): what an ended job keeps.
    pub fn released(&self) -> Task {
        match self {
            Task::TextToImage => Task::TextToImage,
            Task::ImageToImage { image, denoise } => Task::ImageToImage { image: image.released(), denoise: *denoise },
            Task::Inpaint { image, mask, options } => {
                Task::Inpaint { image: image.released(), mask: mask.as_ref().map(Image::released), options: options.clone() }
            }
            Task::Upscale { image, model, factor, denoise } => {
                Task::Upscale { image: image.released(), model: model.clone(), factor: *factor, denoise: *denoise }
            }
            Task::Untyped { label, .. } => Task::Untyped { label: label.clone(), images: vec![] },
        }
    }
}

/// Guidance from an image on top of the task (image prompt, ControlNet, face reference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    pub kind: String,
    pub image: Image,
    pub weight: f32,
    pub stop_at: f32,
    /// Whether the kind's preprocessing runs (off: the image is used as sent, Fooocus's
    /// "skip preprocessors").
    #[serde(default = "preprocess_by_default")]
    pub preprocess: bool,
    /// Settings of the kind's preprocessing, passed to its image step (e.g. Canny's thresholds).
    #[serde(default)]
    pub options: Vec<(String, String)>,
}

fn preprocess_by_default() -> bool {
    true
}

/// Fooocus's sampling patches (sharpness, adaptive CFG, ADM scaling until `adm_end`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingPatches {
    pub sharpness: f32,
    pub adaptive_cfg: f32,
    pub adm_positive: f32,
    pub adm_negative: f32,
    pub adm_end: f32,
}

/// Metadata embedded into each saved file: `scheme` `fooocus` or `a1111`, Fooocus log keys
/// with JSON values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMetadata {
    pub scheme: String,
    pub entries: Vec<(String, String)>,
}

/// Fooocus's own rules, set by plugins that promise Fooocus's results. Without them a job
/// samples as ComfyUI does, with no styles, no embedded metadata and the default refiner swap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FooocusOptions {
    pub patches: Option<SamplingPatches>,
    pub styles: Vec<String>,
    pub read_wildcards_in_order: bool,
    /// `joint`, `separate` or `vae` (empty: joint).
    pub refiner_swap_method: String,
    pub metadata: Option<ImageMetadata>,
    /// Fooocus's `controlnet_softness`: ControlNet residual `i` × `1 − s·(1 − i/9)`.
    #[serde(default = "default_controlnet_softness")]
    pub controlnet_softness: f32,
}

/// Fooocus's default `controlnet_softness`.
pub fn default_controlnet_softness() -> f32 {
    0.25
}
