//! Fooocus's pixel work around the engine, as an image-task component (`focal:plugin@0.2.0`,
//! world `image-task`). The order is Fooocus-API's (`apply_vary`, `apply_upscale`,
//! `apply_image_input`, `apply_outpaint`, `InpaintWorker`):
//! - vary: the input LANCZOS-resized to the size sampled at;
//! - upscale: the host's super-resolution, then f× the input (or shape ceil 1024 when that is
//!   smaller); above shape ceil 2800 it is returned without diffusion;
//! - inpaint: the mask read from the upload, grown or shrunk, inverted; outpaint margins added
//!   (edge pixels, mask white, full strength); the area around the mask cut out,
//!   super-resolved when small and brought to shape ceil 1024; the masked area filled; after
//!   sampling, the result put back into that area and blended through the soft mask.
//!
//! Every operation is `focal-imageops`, checked bit for bit against PIL and Fooocus.

wit_bindgen::generate!({ world: "image-task", path: "../../wit/focal-plugin@0.2.0" });

use exports::focal::plugin::image_task_processor::{Area, Guest, InpaintPlan, InpaintRequest, InpaintResult, Mask, Upscaled};
use focal::plugin::images::Image;
use focal::plugin::upscaler::super_resolve;
use focal_imageops::mask::{blend, erode_or_dilate, fooocus_fill, mask_from_upload, soft_mask, threshold};
use focal_imageops::{crop, image_shape_ceil, inpaint_area, pad_constant, pad_edge, paste, resize_lanczos};
use focal_imageops::{set_image_shape_ceil, shape_ceil, CropBox, Margins, Pixels};

/// Above this shape ceil an upscale is returned without diffusion (`image_is_super_large`).
const LARGEST_DIFFUSED_UPSCALE: f64 = 2800.0;

/// The shape ceil Fooocus samples inpaint areas and small upscales at.
const SAMPLED_CEIL: f64 = 1024.0;

fn pixels(image: &Image) -> Pixels {
    Pixels::rgb(image.width(), image.height(), image.rgb()).expect("the host hands out 3 bytes a pixel")
}

fn image(p: &Pixels) -> Result<Image, String> {
    Image::from_rgb(p.width, p.height, &p.data)
}

fn gray(width: u32, height: u32, data: Vec<u8>) -> Pixels {
    Pixels::new(width, height, 1, data).expect("one byte a pixel")
}

/// A job option's decimal as Python reads it (0.618, not 0.6179999709129333).
fn decimal(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

fn crop_box(a: &Area) -> CropBox {
    CropBox { top: a.top, bottom: a.bottom, left: a.left, right: a.right }
}

struct FooocusImageTasks;

impl Guest for FooocusImageTasks {
    fn vary(input: &Image, width: u32, height: u32) -> Result<Image, String> {
        image(&resize_lanczos(&pixels(input), width, height))
    }

    fn upscale(input: &Image, factor: f32) -> Result<Upscaled, String> {
        let sr = pixels(&super_resolve(input)?);
        let (w, h, f) = (input.width() as f64, input.height() as f64, factor as f64);
        let ceil = shape_ceil(h * f, w * f);
        let (out, ceil) = if ceil < SAMPLED_CEIL {
            (set_image_shape_ceil(&sr, SAMPLED_CEIL), SAMPLED_CEIL)
        } else {
            (resize_lanczos(&sr, (w * f) as u32, (h * f) as u32), ceil)
        };
        Ok(Upscaled { image: image(&out)?, diffuse: ceil <= LARGEST_DIFFUSED_UPSCALE })
    }

    fn prepare_inpaint(r: InpaintRequest) -> Result<Option<InpaintPlan>, String> {
        let input = pixels(r.image);
        let (w, h) = (input.width, input.height);
        let mut m = match r.mask {
            Some(mask) => mask_from_upload(&pixels(mask), w, h),
            None => vec![0; w as usize * h as usize],
        };
        if r.mask_grow != 0 {
            m = erode_or_dilate(&m, w, h, r.mask_grow.clamp(-64, 64));
        }
        if r.invert_mask {
            m.iter_mut().for_each(|v| *v = 255 - *v);
        }
        if !(m.iter().any(|&v| v > 127) || r.extend.is_some()) {
            return Ok(None);
        }
        let (original, m, denoise, field) = match r.extend {
            Some(e) => {
                let margins = Margins { left: e.left, right: e.right, top: e.top, bottom: e.bottom };
                // `apply_outpaint` forces full strength over the whole image.
                (pad_edge(&input, margins), pad_constant(&gray(w, h, m), margins, 255).data, 1.0, 1.0)
            }
            None => (input, m, r.denoise, decimal(r.respective_field).clamp(0.0, 1.0)),
        };
        let (w, h) = (original.width, original.height);
        let area = inpaint_area(&m, w, h, field).ok_or("the inpaint mask is empty")?;
        let mut sampled = crop(&original, area);
        if image_shape_ceil(&sampled) < SAMPLED_CEIL {
            sampled = pixels(&super_resolve(&image(&sampled)?)?);
        }
        let sampled = set_image_shape_ceil(&sampled, SAMPLED_CEIL);
        let area_mask = crop(&gray(w, h, m.clone()), area);
        let mask = threshold(&resize_lanczos(&area_mask, sampled.width, sampled.height).data, 127);
        let fill = if denoise > 0.99 { fooocus_fill(&sampled, &mask) } else { sampled.clone() };
        Ok(Some(InpaintPlan {
            image: image(&sampled)?,
            fill: image(&fill)?,
            mask: Mask { width: sampled.width, height: sampled.height, pixels: mask },
            denoise,
            blend_mask: Mask { width: w, height: h, pixels: soft_mask(&m, w, h) },
            original: image(&original)?,
            area: Area { left: area.left, top: area.top, right: area.right, bottom: area.bottom },
        }))
    }

    fn finish_inpaint(r: InpaintResult) -> Result<Image, String> {
        let area = crop_box(&r.area);
        let original = pixels(r.original);
        let fits = area.left < area.right && area.top < area.bottom && area.right <= original.width && area.bottom <= original.height;
        let blend_size = r.blend_mask.width == original.width && r.blend_mask.height == original.height;
        if !fits || !blend_size {
            return Err(format!("the area {:?} or blend mask does not fit the {}×{} original", r.area, original.width, original.height));
        }
        let content = resize_lanczos(&pixels(r.sampled), area.width(), area.height());
        image(&blend(&paste(&original, &content, area), &original, &r.blend_mask.pixels))
    }
}

export!(FooocusImageTasks);
