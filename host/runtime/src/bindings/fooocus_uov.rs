//! Contract 0.1.0 cannot name an image task: a Fooocus-API "Image Upscale or Variation" job
//! arrives as its label, an `input_image` and the request record. This reads what the task is
//! from that record as Fooocus's `apply_image_input`/`prepare_upscale` do, so the jobs of 0.1.0
//! plugins (the shipped Fooocus-API plugin among them) run as typed tasks. A 0.2.0 plugin says
//! the same thing with `task::image-to-image` / `task::upscale`.

use focal_core::{GenerationParams, Image, Task};
use serde_json::Value;

/// The 0.1.0 job type of the upscale/vary routes.
pub const UOV_JOB_TYPE: &str = "Image Upscale or Variation";

/// Fooocus's upscaler, the one every upscale runs first.
const FOOOCUS_UPSCALER: &str = "fooocus_upscaler_s409985e5.bin";

/// `Performance.steps_uov()`.
fn uov_steps(performance: &str) -> u32 {
    match performance {
        "Quality" => 36,
        "Extreme Speed" => 8,
        "Lightning" | "Hyper-SD" => 4,
        _ => 18,
    }
}

/// The typed task of a 0.1.0 upscale/vary job, adjusting `params` as Fooocus does (vary's size
/// from the image, upscale's UOV steps); `None` when the job is not one or its method is unknown.
pub fn typed_task(job_type: &str, images: &[(String, Image)], request: &str, params: &mut GenerationParams) -> Option<Task> {
    if job_type != UOV_JOB_TYPE {
        return None;
    }
    let request: Value = serde_json::from_str(request).ok()?;
    let image = images.iter().find(|(role, _)| role == "input_image")?.1.clone();
    let method = request["uov_method"].as_str()?.to_lowercase();
    let advanced = &request["advanced_params"];
    let overwrite = |key: &str| advanced[key].as_f64().filter(|v| *v > 0.0).map(|v| v as f32);
    if method.contains("vary") {
        let denoise = overwrite("overwrite_vary_strength").unwrap_or(if method.contains("subtle") { 0.5 } else { 0.85 });
        // `apply_vary`: the image's shape ceil, clamped to [1024, 2048].
        let ceil = focal_imageops::shape_ceil(image.height as f64, image.width as f64).clamp(1024.0, 2048.0);
        (params.width, params.height) = focal_imageops::shape_ceil_size(image.width, image.height, ceil);
        return Some(Task::ImageToImage { image, denoise });
    }
    if method.contains("upscale") {
        let fast = method.contains("fast");
        let factor = if method.contains("1.5x") {
            1.5
        } else if method.contains("2x") {
            2.0
        } else {
            // `Upscale (Custom)` with 0 < upscale_value < 5, else 2.
            request["upscale_value"].as_f64().filter(|v| *v > 0.0 && *v < 5.0).unwrap_or(2.0) as f32
        };
        if advanced["overwrite_step"].as_i64().unwrap_or(-1) <= 0 {
            params.steps = uov_steps(request["performance_selection"].as_str().unwrap_or("Speed"));
        }
        let denoise = if fast { 0.0 } else { overwrite("overwrite_upscale_strength").unwrap_or(0.382) };
        return Some(Task::Upscale { image, model: FOOOCUS_UPSCALER.into(), factor, denoise });
    }
    // "Disabled": Fooocus ignores the image.
    (method == "disabled").then_some(Task::TextToImage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GenerationParams {
        GenerationParams {
            prompt: String::new(),
            negative_prompt: String::new(),
            width: 1152,
            height: 896,
            steps: 30,
            guidance_scale: 4.0,
            sampler: "euler".into(),
            scheduler: "karras".into(),
            seed: 1,
            image_number: 1,
            base_model: String::new(),
            clip_skip: 2,
            disable_seed_increment: false,
            preview: false,
            freeu: None,
            vae: String::new(),
            loras: vec![],
            refiner: None,
        }
    }

    fn task(request: serde_json::Value) -> (Option<Task>, GenerationParams) {
        let image = Image { width: 150, height: 100, encoded: std::sync::Arc::from(vec![1u8]) };
        let mut p = params();
        (typed_task(UOV_JOB_TYPE, &[("input_image".into(), image)], &request.to_string(), &mut p), p)
    }

    #[test]
    fn methods_become_fooocus_tasks() {
        let (t, p) = task(serde_json::json!({"uov_method": "Vary (Subtle)"}));
        assert!(matches!(t, Some(Task::ImageToImage { denoise, .. }) if denoise == 0.5));
        // apply_vary: 150×100 → shape ceil 128 → clamped to 1024 → Fooocus's 1216×768.
        assert_eq!((p.width, p.height, p.steps), (1216, 768, 30));
        let (t, _) = task(serde_json::json!({"uov_method": "Vary (Strong)", "advanced_params": {"overwrite_vary_strength": 0.6}}));
        assert!(matches!(t, Some(Task::ImageToImage { denoise, .. }) if (denoise - 0.6).abs() < 1e-6));
        let (t, p) = task(serde_json::json!({"uov_method": "Upscale (1.5x)", "performance_selection": "Quality"}));
        assert!(matches!(t, Some(Task::Upscale { factor, denoise, .. }) if factor == 1.5 && (denoise - 0.382).abs() < 1e-6));
        assert_eq!(p.steps, 36);
        let (t, p) =
            task(serde_json::json!({"uov_method": "Upscale (Custom)", "upscale_value": 7.0, "advanced_params": {"overwrite_step": 5}}));
        assert!(matches!(t, Some(Task::Upscale { factor, .. }) if factor == 2.0));
        assert_eq!(p.steps, 30, "overwrite_step wins over the UOV steps");
        let (t, _) = task(serde_json::json!({"uov_method": "Upscale (Fast 2x)"}));
        assert!(matches!(t, Some(Task::Upscale { denoise, .. }) if denoise == 0.0));
        assert_eq!(task(serde_json::json!({"uov_method": "Disabled"})).0, Some(Task::TextToImage));
        assert_eq!(task(serde_json::json!({"uov_method": "Something"})).0, None);
    }
}
