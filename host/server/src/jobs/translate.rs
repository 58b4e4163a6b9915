//! From a job's WIT parameters to the engine's.

use focal_engine::freeu::FreeU;
use focal_engine::patches::FooocusPatches;
use focal_engine::pipeline::RefinerSwap;
use focal_engine::GenerationParams;

/// The engine's parameters for one image of a job.
pub(super) fn engine_params(p: &focal_runtime::services::GenerationParams, seed: u64) -> focal_engine::Result<GenerationParams> {
    let mut params = GenerationParams::txt2img(&p.prompt, p.width, p.height, p.steps as usize, seed);
    params.clip_skip = p.clip_skip.clamp(1, 12) as usize;
    params.negative_prompt = p.negative_prompt.clone();
    params.cfg = p.guidance_scale;
    params.sampler = p.sampler.parse()?;
    params.scheduler = p.scheduler.parse()?;
    params.patches = p.patches.map(|s| FooocusPatches {
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
