//! "Image Upscale or Variation": what `uov_method` asks for, as Fooocus's `apply_image_input`,
//! `apply_vary` and `prepare_upscale` read it.

use serde_json::Value;

/// Fooocus's upscaler, the one every upscale runs first.
pub const FOOOCUS_UPSCALER: &str = "fooocus_upscaler_s409985e5.bin";

/// `Performance.steps_uov()`.
pub fn uov_steps(performance: &str) -> u32 {
    match performance {
        "Quality" => 36,
        "Extreme Speed" => 8,
        "Lightning" | "Hyper-SD" => 4,
        _ => 18,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum UovTask {
    /// Image-to-image at `denoise`, sampled at `width`×`height` (the image's bucket).
    Vary { denoise: f32, width: u32, height: u32 },
    /// The upscaler, then `factor`× and a re-sample at `denoise` (0: none, Fast 2×);
    /// `steps` replaces the request's steps unless `overwrite_step` set them.
    Upscale { factor: f32, denoise: f32, steps: Option<u32> },
    /// "Disabled": Fooocus ignores the image (text-to-image).
    Disabled,
}

/// The task of an upscale/vary request whose input image is `width`×`height`; `None` for an
/// unknown method.
pub fn task(request: &Value, width: u32, height: u32) -> Option<UovTask> {
    let method = request["uov_method"].as_str()?.to_lowercase();
    let advanced = &request["advanced_params"];
    let overwrite = |key: &str| advanced[key].as_f64().filter(|v| *v > 0.0).map(|v| v as f32);
    if method.contains("vary") {
        let denoise = overwrite("overwrite_vary_strength").unwrap_or(if method.contains("subtle") { 0.5 } else { 0.85 });
        // `apply_vary`: the image's shape ceil, clamped to [1024, 2048].
        let ceil = focal_imageops::shape_ceil(height as f64, width as f64).clamp(1024.0, 2048.0);
        let (width, height) = focal_imageops::shape_ceil_size(width, height, ceil);
        return Some(UovTask::Vary { denoise, width, height });
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
        let steps = (advanced["overwrite_step"].as_i64().unwrap_or(-1) <= 0)
            .then(|| uov_steps(request["performance_selection"].as_str().unwrap_or("Speed")));
        let denoise = if fast { 0.0 } else { overwrite("overwrite_upscale_strength").unwrap_or(0.382) };
        return Some(UovTask::Upscale { factor, denoise, steps });
    }
    (method == "disabled").then_some(UovTask::Disabled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(request: Value) -> Option<UovTask> {
        task(&request, 150, 100)
    }

    #[test]
    fn methods_become_fooocus_tasks() {
        // apply_vary: 150×100 → shape ceil 128 → clamped to 1024 → Fooocus's 1216×768.
        assert_eq!(of(json!({"uov_method": "Vary (Subtle)"})), Some(UovTask::Vary { denoise: 0.5, width: 1216, height: 768 }));
        let strong = of(json!({"uov_method": "Vary (Strong)", "advanced_params": {"overwrite_vary_strength": 0.6}}));
        assert!(matches!(strong, Some(UovTask::Vary { denoise, .. }) if (denoise - 0.6).abs() < 1e-6));
        let t = of(json!({"uov_method": "Upscale (1.5x)", "performance_selection": "Quality"}));
        assert!(
            matches!(t, Some(UovTask::Upscale { factor, denoise, steps: Some(36) }) if factor == 1.5 && (denoise - 0.382).abs() < 1e-6)
        );
        let t = of(json!({"uov_method": "Upscale (Custom)", "upscale_value": 7.0, "advanced_params": {"overwrite_step": 5}}));
        assert_eq!(t, Some(UovTask::Upscale { factor: 2.0, denoise: 0.382, steps: None }), "overwrite_step wins over the UOV steps");
        assert!(matches!(of(json!({"uov_method": "Upscale (Fast 2x)"})), Some(UovTask::Upscale { denoise, .. }) if denoise == 0.0));
        assert_eq!(of(json!({"uov_method": "Disabled"})), Some(UovTask::Disabled));
        assert_eq!(of(json!({"uov_method": "Something"})), None);
    }
}
