//! Rows of schema 1: what focal 0.1 wrote (the `focal:plugin@0.1.0` records serialised as they
//! were). Frozen here so the host's own types can change; read, converted and never written.

use focal_core::job::OutputOptions;
use focal_core::task::{FreeU, SamplingPatches};
use focal_core::{FooocusOptions, ImageMetadata, JobImage, JobInfo, JobSpec, JobStage, Lora, Owner, Phase, Progress, Task};
use serde::Deserialize;

use crate::decode::{self, ImageLimits};

#[derive(Deserialize)]
pub(super) struct SpecV1 {
    job_type: String,
    params: ParamsV1,
    output: OutputV1,
    #[serde(default)]
    inputs: Vec<InputV1>,
    webhook_url: Option<String>,
    request: String,
}

#[derive(Deserialize)]
struct ParamsV1 {
    prompt: String,
    negative_prompt: String,
    width: u32,
    height: u32,
    steps: u32,
    guidance_scale: f32,
    sampler: String,
    scheduler: String,
    seed: u64,
    image_number: u32,
    base_model: String,
    clip_skip: u32,
    disable_seed_increment: bool,
    preview: bool,
    patches: Option<SamplingPatches>,
    freeu: Option<FreeU>,
    vae: String,
    loras: Vec<Lora>,
    refiner: Option<RefinerV1>,
    styles: Vec<String>,
    #[serde(default)]
    read_wildcards_in_order: bool,
}

#[derive(Deserialize)]
struct RefinerV1 {
    model: String,
    switch: f32,
    swap_method: String,
}

#[derive(Deserialize)]
struct OutputV1 {
    extension: String,
    save_name: String,
    metadata: Option<ImageMetadata>,
}

#[derive(Deserialize)]
struct InputV1 {
    role: String,
    data: Vec<u8>,
}

#[derive(Deserialize)]
pub(super) struct InfoV1 {
    id: String,
    job_type: String,
    stage: StageV1,
    progress: u8,
    error: Option<String>,
    stopped: bool,
    in_queue_ms: u64,
    start_ms: u64,
    finish_ms: u64,
    images: Vec<JobImage>,
    request: String,
}

#[derive(Deserialize)]
enum StageV1 {
    Waiting,
    Running,
    Success,
    Error,
}

impl SpecV1 {
    /// The job as the host's types say it: Fooocus's rules as `FooocusOptions` (0.1.0 always
    /// meant them), input images (kept only while a job is unfinished) as an untyped task.
    pub(super) fn into_domain(self) -> Result<JobSpec, String> {
        let p = self.params;
        let task = if self.inputs.is_empty() && self.job_type == crate::jobs::TEXT_TO_IMAGE {
            Task::TextToImage
        } else {
            let mut images = Vec::new();
            for input in self.inputs {
                let decoded = decode::decode(&input.data, &ImageLimits::default()).map_err(|e| format!("{}: {e}", input.role))?;
                images.push((input.role, crate::images::image_from_encoded(input.data, decoded.width, decoded.height)));
            }
            Task::Untyped { label: self.job_type.clone(), images }
        };
        Ok(JobSpec {
            owner: Owner::default(),
            label: self.job_type,
            task,
            controls: vec![],
            fooocus: Some(FooocusOptions {
                patches: p.patches,
                styles: p.styles,
                read_wildcards_in_order: p.read_wildcards_in_order,
                refiner_swap_method: p.refiner.as_ref().map(|r| r.swap_method.clone()).unwrap_or_default(),
                controlnet_softness: focal_core::task::default_controlnet_softness(),
                metadata: self.output.metadata,
            }),
            params: focal_core::generation_params_from!(p),
            output: OutputOptions { extension: self.output.extension, save_name: self.output.save_name },
            post_steps: vec![],
            webhook_url: self.webhook_url,
            request: self.request,
        })
    }
}

impl InfoV1 {
    /// Schema 1 kept Fooocus's status text; an unfinished job is requeued from the start on
    /// load, so only "ended or not" matters for the structured progress.
    pub(super) fn into_domain(self) -> JobInfo {
        let stage = match self.stage {
            StageV1::Waiting => JobStage::Waiting,
            StageV1::Running => JobStage::Running,
            StageV1::Success => JobStage::Success,
            StageV1::Error => JobStage::Error,
        };
        let phase = if stage.ended() { Phase::Finished } else { Phase::Waiting };
        JobInfo {
            id: self.id,
            owner: Owner::default(),
            label: self.job_type,
            stage,
            progress: Progress { phase, percent: self.progress, ..Progress::WAITING },
            error: self.error,
            stopped: self.stopped,
            in_queue_ms: self.in_queue_ms,
            start_ms: self.start_ms,
            finish_ms: self.finish_ms,
            images: self.images,
            request: self.request,
        }
    }
}
