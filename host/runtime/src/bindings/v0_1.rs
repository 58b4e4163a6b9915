//! Contract `focal:plugin@0.1.0` (frozen): its generated bindings, the host side of its
//! imports, and the conversions between its records and the host's domain types.
//!
//! 0.1.0 speaks Fooocus: its generation parameters carry Fooocus's patches, styles and swap
//! method (they become the job's `FooocusOptions`), its progress is Fooocus's status text
//! (rendered here from the structured progress), and its input images carry a free-form role
//! (plain text-to-image and Fooocus-API upscale/vary, inpaint/outpaint and image-prompt jobs
//! run, see `fooocus_jobs`; other jobs become `Task::Untyped` and end with an error).

use focal_core::services::Catalog;
use focal_core::{self as core, Phase, Progress};

use crate::host::State;

mod fooocus_jobs;

mod generated {
    wasmtime::component::bindgen!({
        world: "endpoint",
        path: "../../wit/focal-plugin@0.1.0",
        imports: { default: async | trappable },
        exports: { default: async },
    });

    pub mod step {
        wasmtime::component::bindgen!({
            world: "prompt-step",
            path: "../../wit/focal-plugin@0.1.0",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "focal:plugin/log": super::focal::plugin::log,
                "focal:plugin/config": super::focal::plugin::config,
            },
        });
    }
}

pub use generated::exports::focal::plugin::handler::{Request, Response};
use generated::focal::plugin::{config, engine, fetch, files, log, prompts, types};
use generated::step::exports::focal::plugin::prompt_processor::PromptTask;
use generated::step::focal::plugin::{expansion, random};
pub use generated::step::PromptStepPre;
pub use generated::EndpointPre;

/// Link every 0.1.0 import against the host's `State`.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<State>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    generated::Endpoint::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    // The prompt-step world adds `random` and `expansion` to what the endpoint world links.
    random::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    expansion::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// Fooocus's status text for a job's progress (what 0.1.0 promised, e.g.
/// `Step 7/30 in the 1-th Sampling`); none while waiting.
pub fn fooocus_status(progress: &Progress, stopped: bool) -> Option<String> {
    use focal_fooocus_tasks::status::{self, JobProgress, Phase as Fooocus};
    let phase = match progress.phase {
        Phase::Waiting => Fooocus::Waiting,
        Phase::LoadingModels => Fooocus::LoadingModels,
        Phase::Downloading => Fooocus::Downloading,
        Phase::ProcessingPrompts => Fooocus::ProcessingPrompts,
        Phase::EncodingPrompts => Fooocus::EncodingPrompts,
        Phase::Sampling => Fooocus::Sampling,
        Phase::Saving => Fooocus::Saving,
        Phase::Finished => Fooocus::Finished,
    };
    status::text(&JobProgress {
        phase,
        image: progress.image,
        images: progress.images,
        step: progress.step,
        steps: progress.steps,
        download: progress.download.as_ref().map(|d| (d.file.as_str(), d.percent)),
        stopped,
    })
}

impl State {
    /// A 0.1.0 job spec as the host's, owned by this request's owner. Input images are checked
    /// here (the error names the role); Fooocus's rules become the job's `FooocusOptions`.
    fn job_spec_v0_1(&self, spec: engine::JobSpec) -> Result<core::JobSpec, core::SubmitError> {
        let p = spec.params;
        let swap_method = p.refiner.as_ref().map(|r| r.swap_method.clone()).unwrap_or_default();
        let (patches, styles, read_wildcards_in_order) = (p.patches, p.styles.clone(), p.read_wildcards_in_order);
        let mut params = focal_core::generation_params_from!(p);
        // The request record, read once for Fooocus-API's task rules (null when it is not JSON).
        let request: serde_json::Value = serde_json::from_str(&spec.request).unwrap_or_default();
        let (task, controls) = if spec.job_type == focal_fooocus_tasks::TEXT_TO_IMAGE && spec.inputs.is_empty() {
            (core::Task::TextToImage, vec![])
        } else {
            let images = self.images_service().map_err(|e| core::SubmitError::Invalid(e.to_string()))?;
            let mut decoded = Vec::with_capacity(spec.inputs.len());
            for input in spec.inputs {
                let image = images.decode(&input.data).map_err(|e| core::SubmitError::Invalid(format!("{}: {e}", input.role)))?;
                decoded.push((input.role, image));
            }
            fooocus_jobs::task_and_controls(&spec.job_type, decoded, &request, &mut params).map_err(core::SubmitError::Invalid)?
        };
        let fooocus = core::FooocusOptions {
            patches: patches.map(|s| core::task::SamplingPatches {
                sharpness: s.sharpness,
                adaptive_cfg: s.adaptive_cfg,
                adm_positive: s.adm_positive,
                adm_negative: s.adm_negative,
                adm_end: s.adm_end,
            }),
            styles,
            read_wildcards_in_order,
            refiner_swap_method: swap_method,
            controlnet_softness: focal_fooocus_tasks::image_prompts::softness(&request),
            metadata: spec.output.metadata.map(|m| core::ImageMetadata { scheme: m.scheme, entries: m.entries }),
        };
        Ok(core::JobSpec {
            owner: self.owner.clone(),
            label: spec.job_type,
            task,
            controls,
            params,
            fooocus: Some(fooocus),
            output: core::job::OutputOptions { extension: spec.output.extension, save_name: spec.output.save_name },
            post_steps: vec![],
            webhook_url: spec.webhook_url,
            request: spec.request,
        })
    }
}

fn job_info(info: core::JobInfo) -> engine::JobInfo {
    engine::JobInfo {
        status: fooocus_status(&info.progress, info.stopped),
        id: info.id,
        job_type: info.label,
        stage: match info.stage {
            core::JobStage::Waiting => engine::JobStage::Waiting,
            core::JobStage::Running => engine::JobStage::Running,
            core::JobStage::Success => engine::JobStage::Success,
            core::JobStage::Error => engine::JobStage::Error,
        },
        progress: info.progress.percent,
        error: info.error,
        stopped: info.stopped,
        in_queue_ms: info.in_queue_ms,
        start_ms: info.start_ms,
        finish_ms: info.finish_ms,
        images: info.images.into_iter().map(|i| engine::JobImage { seed: i.seed, path: i.path }).collect(),
        request: info.request,
    }
}

impl State {
    /// A submit error as 0.1.0 says it; an over-quota refusal reads as a full queue to the plugin
    /// and is kept for the host's 429.
    fn submit_error(&mut self, e: core::SubmitError) -> engine::SubmitError {
        match e {
            core::SubmitError::QueueFull => engine::SubmitError::QueueFull,
            core::SubmitError::Invalid(m) => engine::SubmitError::Invalid(m),
            core::SubmitError::OverQuota(q) => {
                self.over_quota = Some(q);
                engine::SubmitError::QueueFull
            }
        }
    }
}

super::prompt_task_conversions!(PromptTask);
super::unchanged_interfaces!();

impl engine::Host for State {
    super::engine_queries!();

    async fn submit(&mut self, spec: engine::JobSpec) -> wasmtime::Result<Result<String, engine::SubmitError>> {
        let engine = self.engine()?;
        let submitted = self.job_spec_v0_1(spec).and_then(|spec| engine.submit(spec));
        Ok(submitted.map_err(|e| self.submit_error(e)))
    }

    async fn preview(&mut self, id: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.engine()?.preview(&self.owner, &id).map(|png| png.encoded.to_vec()))
    }

    async fn stop(&mut self) -> wasmtime::Result<()> {
        self.engine()?.stop(&self.owner, None);
        Ok(())
    }

    async fn models(&mut self) -> wasmtime::Result<engine::ModelFiles> {
        let catalog = self.catalog()?;
        Ok(engine::ModelFiles { checkpoints: catalog.list(Catalog::Checkpoints), loras: catalog.list(Catalog::Loras) })
    }
}
