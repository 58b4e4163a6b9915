//! The `image-task` world of 0.2.0: the host side of its `upscaler` import and one call of its
//! `image-task` export, converted from and to the host's `focal_core::image_task` types.

use std::time::Instant;

use focal_core::image_task::{Area, ImageTaskCall, ImageTaskOutput, InpaintPlan, Mask};
use focal_core::Image;
use wasmtime::component::Resource;
use wasmtime::Store;

use super::generated::image_task::exports::focal::plugin::image_task_processor as export;
use super::generated::image_task::focal::plugin::upscaler;
pub use super::generated::image_task::ImageTaskPre;
use crate::host::State;

pub fn add_to_linker(linker: &mut wasmtime::component::Linker<State>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    upscaler::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

impl upscaler::Host for State {
    async fn super_resolve(&mut self, image: Resource<Image>) -> wasmtime::Result<Result<Resource<Image>, String>> {
        let Some(service) = self.services.upscaler.clone() else {
            return Ok(Err("no upscaler is bound to this call".into()));
        };
        let image = self.image(&image)?;
        let started = Instant::now();
        let result = service.super_resolve(&image);
        // The network's time is the host's, not the component's: the budget moves with it.
        self.deadline += started.elapsed();
        match result {
            Ok(image) => self.new_image(image),
            Err(e) => Ok(Err(e)),
        }
    }
}

fn mask_in(m: Mask) -> export::Mask {
    export::Mask { width: m.width, height: m.height, pixels: m.pixels }
}

fn mask_out(m: export::Mask) -> Result<Mask, String> {
    if m.pixels.len() as u64 != m.width as u64 * m.height as u64 {
        return Err(format!("a {}×{} mask needs {} bytes, got {}", m.width, m.height, m.width as u64 * m.height as u64, m.pixels.len()));
    }
    Ok(Mask { width: m.width, height: m.height, pixels: m.pixels })
}

fn area_in(a: Area) -> export::Area {
    export::Area { left: a.left, top: a.top, right: a.right, bottom: a.bottom }
}

fn area_out(a: export::Area) -> Area {
    Area { left: a.left, top: a.top, right: a.right, bottom: a.bottom }
}

/// Run `call` on a fresh instance. The outer error is a failed plugin (trap, time, memory); the
/// inner one what the component answered, or an answer the host cannot use.
pub(crate) async fn run(
    pre: &ImageTaskPre<State>,
    store: &mut Store<State>,
    call: ImageTaskCall,
) -> wasmtime::Result<Result<ImageTaskOutput, String>> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let task = instance.focal_plugin_image_task_processor();
    let handle = |store: &mut Store<State>, image: Image| -> wasmtime::Result<Resource<Image>> {
        store.data_mut().new_image(image)?.map_err(wasmtime::Error::msg)
    };
    Ok(match call {
        ImageTaskCall::Vary { image, width, height } => {
            let image = handle(store, image)?;
            match task.call_vary(&mut *store, image, width, height).await? {
                Ok(out) => Ok(ImageTaskOutput::Image(store.data_mut().take_image(out)?)),
                Err(e) => Err(e),
            }
        }
        ImageTaskCall::Upscale { image, factor } => {
            let image = handle(store, image)?;
            match task.call_upscale(&mut *store, image, factor).await? {
                Ok(out) => Ok(ImageTaskOutput::Upscaled { image: store.data_mut().take_image(out.image)?, diffuse: out.diffuse }),
                Err(e) => Err(e),
            }
        }
        ImageTaskCall::PrepareInpaint(r) => {
            let request = export::InpaintRequest {
                image: handle(store, r.image)?,
                mask: r.mask.map(|m| handle(store, m)).transpose()?,
                denoise: r.denoise,
                respective_field: r.respective_field,
                mask_grow: r.mask_grow,
                invert_mask: r.invert_mask,
                extend: r.extend.map(|e| export::Margins { left: e.left, right: e.right, top: e.top, bottom: e.bottom }),
            };
            match task.call_prepare_inpaint(&mut *store, request).await? {
                Ok(None) => Ok(ImageTaskOutput::Inpaint(None)),
                Ok(Some(p)) => {
                    let state = store.data_mut();
                    let (image, fill, original) = (state.take_image(p.image)?, state.take_image(p.fill)?, state.take_image(p.original)?);
                    match (mask_out(p.mask), mask_out(p.blend_mask)) {
                        (Ok(mask), Ok(blend_mask)) => Ok(ImageTaskOutput::Inpaint(Some(InpaintPlan {
                            image,
                            fill,
                            mask,
                            denoise: p.denoise,
                            original,
                            area: area_out(p.area),
                            blend_mask,
                        }))),
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        }
        ImageTaskCall::FinishInpaint { sampled, original, area, blend_mask } => {
            let result = export::InpaintResult {
                sampled: handle(store, sampled)?,
                original: handle(store, original)?,
                area: area_in(area),
                blend_mask: mask_in(blend_mask),
            };
            match task.call_finish_inpaint(&mut *store, &result).await? {
                Ok(out) => Ok(ImageTaskOutput::Image(store.data_mut().take_image(out)?)),
                Err(e) => Err(e),
            }
        }
    })
}
