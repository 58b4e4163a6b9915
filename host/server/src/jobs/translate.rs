//! From a job's parameters (the host's types) to the engine's.

use focal_core::{JobSpec, Task};
use focal_engine::freeu::FreeU;
use focal_engine::patches::FooocusPatches;
use focal_engine::pipeline::RefinerSwap;
use focal_engine::GenerationParams;

use super::controlnets::CONTROLNET_KINDS;
use super::image_prompts::IMAGE_PROMPT_KINDS;
use super::TEXT_TO_IMAGE;

/// The engine's parameters for one image of a job.
pub(super) fn engine_params(spec: &JobSpec, seed: u64) -> focal_engine::Result<GenerationParams> {
    let p = &spec.params;
    let mut params = GenerationParams::txt2img(&p.prompt, p.width, p.height, p.steps as usize, seed);
    params.clip_skip = p.clip_skip.clamp(1, 12) as usize;
    params.negative_prompt = p.negative_prompt.clone();
    params.cfg = p.guidance_scale;
    params.sampler = p.sampler.parse()?;
    params.scheduler = p.scheduler.parse()?;
    params.patches = spec.fooocus.as_ref().and_then(|f| f.patches).map(|s| FooocusPatches {
        sharpness: s.sharpness,
        adaptive_cfg: s.adaptive_cfg,
        adm_positive: s.adm_positive,
        adm_negative: s.adm_negative,
        adm_end: s.adm_end,
    });
    // The request's decimal, not the f32's binary expansion (1.01, not 1.0099999904632568).
    let decimal = |v: f32| v.to_string().parse::<f64>().unwrap_or(v as f64);
    params.freeu = p.freeu.map(|f| FreeU { b1: decimal(f.b1), b2: decimal(f.b2), s1: decimal(f.s1), s2: decimal(f.s2) });
    Ok(params)
}

/// Fooocus's `refiner_swap_method` (empty: its default, joint).
pub(super) fn swap_method(name: &str) -> Result<RefinerSwap, String> {
    match name {
        "" | "joint" => Ok(RefinerSwap::Joint),
        "separate" => Ok(RefinerSwap::Separate),
        "vae" => Ok(RefinerSwap::Vae),
        other => Err(format!("refiner_swap_method '{other}' is not one of joint, separate, vae")),
    }
}

/// Whether this engine can run the job's task; the error says what is missing. Never answer an
/// image task with an unrelated text-to-image result.
pub(super) fn check_runnable(spec: &JobSpec) -> Result<(), String> {
    let all = || IMAGE_PROMPT_KINDS.iter().chain(&CONTROLNET_KINDS).map(|(k, _)| *k);
    let runs = |kind: &str| all().any(|k| k == kind);
    let kinds = || all().collect::<Vec<_>>().join(", ");
    if let Some(c) = spec.controls.iter().find(|c| !runs(&c.kind)) {
        return Err(format!("the '{}' control does not run on this focal engine yet (it runs {})", c.kind, kinds()));
    }
    match &spec.task {
        Task::Untyped { label, images } => {
            let roles: Vec<&str> = images.iter().map(|(role, _)| role.as_str()).collect();
            Err(format!(
                "'{label}' jobs with input images [{}] are not a task this focal engine runs yet (it runs '{TEXT_TO_IMAGE}', \
                 upscale/vary, inpaint/outpaint and image prompts)",
                roles.join(", ")
            ))
        }
        Task::ImageToImage { .. } | Task::Upscale { .. } | Task::Inpaint { .. } | Task::TextToImage => Ok(()),
    }
}
