//! The pixel work of the engine's image jobs as the host asks an image-task component for it
//! (`focal:plugin/image-task`): the calls, what they answer, and the host's super-resolution
//! network the component may call back into.

use crate::image::Image;
use crate::task::Extend;

/// One byte a pixel, row-major; 255 marks pixels to repaint.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// A box in pixels: `left`/`top` inclusive, `right`/`bottom` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InpaintRequest {
    pub image: Image,
    pub mask: Option<Image>,
    pub denoise: f32,
    pub respective_field: f32,
    pub mask_grow: i32,
    pub invert_mask: bool,
    pub extend: Option<Extend>,
}

/// What the engine samples for an inpaint, and what goes back to `FinishInpaint`.
#[derive(Debug, Clone, PartialEq)]
pub struct InpaintPlan {
    /// The area to sample, at the size sampled at.
    pub image: Image,
    /// `image` with the repainted area filled (the initial latent and the known pixels).
    pub fill: Image,
    /// Over `image`: 255 where it is repainted.
    pub mask: Mask,
    pub denoise: f32,
    /// The whole (outpainted) image the result goes back into.
    pub original: Image,
    pub area: Area,
    /// Over `original`: how much of the result each pixel takes.
    pub blend_mask: Mask,
}

/// One call into an image-task component.
#[derive(Debug, Clone)]
pub enum ImageTaskCall {
    /// The input at the size sampled at.
    Vary {
        image: Image,
        width: u32,
        height: u32,
    },
    /// Super-resolution, then the size sampled at.
    Upscale {
        image: Image,
        factor: f32,
    },
    PrepareInpaint(InpaintRequest),
    /// The sampled image put back as the plan says.
    FinishInpaint {
        sampled: Image,
        original: Image,
        area: Area,
        blend_mask: Mask,
    },
}

/// What an image-task call answers (the variant follows the call's).
#[derive(Debug, Clone)]
pub enum ImageTaskOutput {
    Image(Image),
    /// An upscale; `diffuse` false: the image is the job's result as it is.
    Upscaled {
        image: Image,
        diffuse: bool,
    },
    /// `None`: nothing to repaint (the job runs as a text-to-image, as Fooocus does).
    Inpaint(Option<InpaintPlan>),
}

/// The host's super-resolution network, bound to one job (its upscaler choice and progress).
/// Called on the engine worker's thread; it may take minutes on a CPU.
pub trait UpscaleService: Send + Sync {
    fn super_resolve(&self, image: &Image) -> Result<Image, String>;
}
