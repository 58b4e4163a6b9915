//! Contract `focal:plugin@0.2.0`: its generated bindings, the host side of its imports, and the
//! conversions between its records and the host's domain types. Images are host resources
//! (`focal_core::Image` in the store's table): decoded once, then passed by handle.

use focal_core::services::Catalog;
use focal_core::{self as core, Image};
use wasmtime::component::Resource;

use crate::host::State;

mod faces;
pub mod image_task;

mod generated {
    wasmtime::component::bindgen!({
        world: "endpoint",
        path: "../../wit/focal-plugin@0.2.0",
        imports: { default: async | trappable },
        exports: { default: async },
        with: { "focal:plugin/images.image": focal_core::Image },
    });

    pub mod step {
        wasmtime::component::bindgen!({
            world: "prompt-step",
            path: "../../wit/focal-plugin@0.2.0",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "focal:plugin/log": super::focal::plugin::log,
                "focal:plugin/config": super::focal::plugin::config,
            },
        });
    }

    pub mod image_task {
        wasmtime::component::bindgen!({
            world: "image-task",
            path: "../../wit/focal-plugin@0.2.0",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "focal:plugin/log": super::focal::plugin::log,
                "focal:plugin/config": super::focal::plugin::config,
                "focal:plugin/images": super::focal::plugin::images,
            },
        });
    }

    pub mod image_step {
        wasmtime::component::bindgen!({
            world: "image-step",
            path: "../../wit/focal-plugin@0.2.0",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "focal:plugin/log": super::focal::plugin::log,
                "focal:plugin/config": super::focal::plugin::config,
                "focal:plugin/images": super::focal::plugin::images,
            },
        });
    }
}

pub use generated::exports::focal::plugin::handler::{Request, Response};
use generated::focal::plugin::{catalog, config, describe, engine, fetch, files, images, log, prompts, types};
pub use generated::image_step::ImageStepPre;
use generated::step::exports::focal::plugin::prompt_processor::PromptTask;
use generated::step::focal::plugin::{expansion, random};
pub use generated::step::PromptStepPre;
pub use generated::EndpointPre;

/// Images one request may hold at once (each is a host-side copy of its file).
const MAX_LIVE_IMAGES: usize = 64;

/// Link every 0.2.0 import against the host's `State`.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<State>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    generated::Endpoint::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    random::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    expansion::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    image_task::add_to_linker(linker)?;
    faces::add_to_linker(linker)
}

impl State {
    pub(crate) fn image(&self, handle: &Resource<Image>) -> wasmtime::Result<Image> {
        Ok(self.table.get(handle)?.clone())
    }

    /// Hand `image` to the plugin as a new resource, within the request's image budget.
    pub(crate) fn new_image(&mut self, image: Image) -> wasmtime::Result<Result<Resource<Image>, String>> {
        if self.live_images >= MAX_LIVE_IMAGES {
            return Ok(Err(format!("a request may hold at most {MAX_LIVE_IMAGES} images at once")));
        }
        self.live_images += 1;
        Ok(Ok(self.table.push(image)?))
    }

    pub(crate) fn take_image(&mut self, handle: Resource<Image>) -> wasmtime::Result<Image> {
        self.live_images = self.live_images.saturating_sub(1);
        Ok(self.table.delete(handle)?)
    }

    /// A 0.2.0 job spec as the host's, owned by this request's owner.
    fn job_spec_v0_2(&self, spec: engine::JobSpec) -> wasmtime::Result<core::JobSpec> {
        let p = spec.params;
        let task = match spec.task {
            engine::Task::TextToImage => core::Task::TextToImage,
            engine::Task::ImageToImage(t) => core::Task::ImageToImage { image: self.image(&t.image)?, denoise: t.denoise },
            engine::Task::Inpaint(t) => core::Task::Inpaint {
                image: self.image(&t.image)?,
                mask: t.mask.as_ref().map(|m| self.image(m)).transpose()?,
                options: core::InpaintOptions {
                    denoise: t.options.denoise,
                    respective_field: t.options.respective_field,
                    mask_grow: t.options.mask_grow,
                    invert_mask: t.options.invert_mask,
                    patch_model: t.options.patch_model,
                    extend: t.options.extend.map(|e| core::task::Extend { left: e.left, right: e.right, top: e.top, bottom: e.bottom }),
                    disable_initial_latent: t.options.disable_initial_latent,
                    additional_prompt: t.options.additional_prompt,
                },
            },
            engine::Task::Upscale(t) => {
                core::Task::Upscale { image: self.image(&t.image)?, model: t.model, factor: t.factor, denoise: t.denoise }
            }
        };
        let mut controls = Vec::with_capacity(spec.controls.len());
        for c in spec.controls {
            controls.push(core::Control {
                kind: c.kind,
                image: self.image(&c.image)?,
                weight: c.weight,
                stop_at: c.stop_at,
                preprocess: c.preprocess,
                options: c.options,
            });
        }
        let fooocus = spec.fooocus.map(|f| core::FooocusOptions {
            patches: f.patches.map(|s| core::task::SamplingPatches {
                sharpness: s.sharpness,
                adaptive_cfg: s.adaptive_cfg,
                adm_positive: s.adm_positive,
                adm_negative: s.adm_negative,
                adm_end: s.adm_end,
            }),
            styles: f.styles,
            read_wildcards_in_order: f.read_wildcards_in_order,
            refiner_swap_method: f.refiner_swap_method,
            controlnet_softness: f.controlnet_softness,
            metadata: f.metadata.map(|m| core::ImageMetadata { scheme: m.scheme, entries: m.entries }),
        });
        Ok(core::JobSpec {
            owner: self.owner.clone(),
            label: spec.label,
            task,
            controls,
            params: focal_core::generation_params_from!(p),
            fooocus,
            output: core::job::OutputOptions { extension: spec.output.extension, save_name: spec.output.save_name },
            post_steps: spec.post_steps.into_iter().map(|s| core::StepCall { plugin: s.plugin, options: s.options }).collect(),
            webhook_url: spec.webhook_url,
            request: spec.request,
        })
    }
}

fn job_info(info: core::JobInfo) -> engine::JobInfo {
    let p = info.progress;
    engine::JobInfo {
        id: info.id,
        label: info.label,
        stage: match info.stage {
            core::JobStage::Waiting => engine::JobStage::Waiting,
            core::JobStage::Running => engine::JobStage::Running,
            core::JobStage::Success => engine::JobStage::Success,
            core::JobStage::Error => engine::JobStage::Error,
        },
        progress: engine::Progress {
            phase: match p.phase {
                core::Phase::Waiting => engine::Phase::Waiting,
                core::Phase::LoadingModels => engine::Phase::LoadingModels,
                core::Phase::Downloading => engine::Phase::Downloading,
                core::Phase::ProcessingPrompts => engine::Phase::ProcessingPrompts,
                core::Phase::EncodingPrompts => engine::Phase::EncodingPrompts,
                core::Phase::Sampling => engine::Phase::Sampling,
                core::Phase::Saving => engine::Phase::Saving,
                core::Phase::Finished => engine::Phase::Finished,
            },
            percent: p.percent,
            image: p.image,
            images: p.images,
            step: p.step,
            steps: p.steps,
            download: p.download.map(|d| engine::Download { file: d.file, percent: d.percent }),
        },
        error: info.error,
        stopped: info.stopped,
        in_queue_ms: info.in_queue_ms,
        start_ms: info.start_ms,
        finish_ms: info.finish_ms,
        images: info.images.into_iter().map(|i| engine::JobImage { seed: i.seed, path: i.path }).collect(),
        request: info.request,
    }
}

super::prompt_task_conversions!(PromptTask);
super::unchanged_interfaces!();

impl images::Host for State {}

impl images::HostImage for State {
    async fn decode(&mut self, encoded: Vec<u8>) -> wasmtime::Result<Result<Resource<Image>, String>> {
        match self.images_service()?.decode(&encoded) {
            Ok(image) => self.new_image(image),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn from_rgb(&mut self, width: u32, height: u32, pixels: Vec<u8>) -> wasmtime::Result<Result<Resource<Image>, String>> {
        match self.images_service()?.encode_rgb(width, height, pixels) {
            Ok(image) => self.new_image(image),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn width(&mut self, image: Resource<Image>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&image)?.width)
    }

    async fn height(&mut self, image: Resource<Image>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&image)?.height)
    }

    async fn rgb(&mut self, image: Resource<Image>) -> wasmtime::Result<Vec<u8>> {
        let image = self.image(&image)?;
        self.images_service()?.rgb(&image).map_err(wasmtime::Error::msg)
    }

    async fn png(&mut self, image: Resource<Image>) -> wasmtime::Result<Vec<u8>> {
        let image = self.image(&image)?;
        self.images_service()?.png(&image).map_err(wasmtime::Error::msg)
    }

    async fn drop(&mut self, image: Resource<Image>) -> wasmtime::Result<()> {
        self.take_image(image)?;
        Ok(())
    }
}

impl engine::Host for State {
    super::engine_queries!();

    async fn submit(&mut self, spec: engine::JobSpec) -> wasmtime::Result<Result<String, engine::SubmitError>> {
        let engine = self.engine()?;
        let spec = self.job_spec_v0_2(spec)?;
        Ok(engine.submit(spec).map_err(|e| match e {
            core::SubmitError::QueueFull => engine::SubmitError::QueueFull,
            core::SubmitError::Invalid(m) => engine::SubmitError::Invalid(m),
            // Read as a full queue by the plugin; the host answers 429.
            core::SubmitError::OverQuota(q) => {
                self.over_quota = Some(q);
                engine::SubmitError::QueueFull
            }
        }))
    }

    async fn preview(&mut self, id: String) -> wasmtime::Result<Option<Resource<Image>>> {
        match self.engine()?.preview(&self.owner, &id) {
            Some(image) => Ok(self.new_image(image)?.ok()),
            None => Ok(None),
        }
    }

    async fn stop(&mut self, id: String) -> wasmtime::Result<bool> {
        Ok(self.engine()?.stop(&self.owner, Some(&id)))
    }
}

impl describe::Host for State {
    async fn describe(&mut self, image: Resource<Image>, style: describe::Style) -> wasmtime::Result<Result<String, String>> {
        let service = self.describer()?;
        let image = self.image(&image)?;
        let style = match style {
            describe::Style::Photo => core::services::DescribeStyle::Photo,
            describe::Style::Anime => core::services::DescribeStyle::Anime,
        };
        let started = std::time::Instant::now();
        let result = service.describe(image, style).await;
        // The model's time is the host's, not the plugin's: the budget moves with it.
        self.deadline += started.elapsed();
        Ok(result)
    }
}

impl catalog::Host for State {
    async fn samplers(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.catalog()?.list(Catalog::Samplers))
    }
    async fn schedulers(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.catalog()?.list(Catalog::Schedulers))
    }
    async fn checkpoints(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.catalog()?.list(Catalog::Checkpoints))
    }
    async fn loras(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.catalog()?.list(Catalog::Loras))
    }
    async fn vaes(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.catalog()?.list(Catalog::Vaes))
    }
    async fn upscalers(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.catalog()?.list(Catalog::Upscalers))
    }
    async fn inpaint_models(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.catalog()?.list(Catalog::InpaintModels))
    }
    async fn controls(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.catalog()?.list(Catalog::Controls))
    }
    async fn image_steps(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.catalog()?.list(Catalog::ImageSteps))
    }
}
