//! Contract 0.1.0 cannot name an inpaint task: a Fooocus-API "Image Inpaint or Outpaint" job
//! arrives as its label, an `input_image` (and maybe an `input_mask`) and the request record.
//! This reads the task from that record as Fooocus-API's `req_to_params`, `apply_image_input`
//! and `apply_outpaint` do, so the shipped Fooocus-API plugin's inpaint jobs run as typed tasks.

use focal_core::task::{Extend, InpaintOptions};
use focal_core::{Image, Task};
use serde_json::Value;

/// The 0.1.0 job type of the inpaint/outpaint routes.
pub const INPAINT_JOB_TYPE: &str = "Image Inpaint or Outpaint";

/// `modules.config.downloading_inpaint_models`: the patch of each inpaint engine version.
pub fn inpaint_patch_file(engine: &str) -> Option<&'static str> {
    match engine {
        "v1" => Some("inpaint.fooocus.patch"),
        "v2.5" => Some("inpaint_v25.fooocus.patch"),
        "v2.6" => Some("inpaint_v26.fooocus.patch"),
        _ => None,
    }
}

/// `apply_outpaint`'s margins: 30% of the image's height (top, bottom) or width (left,
/// right), or the request's `outpaint_distance_*` where above 0.
fn outpaint_margins(request: &Value, width: u32, height: u32) -> Option<Extend> {
    let selections: Vec<String> = match &request["outpaint_selections"] {
        Value::Array(items) => items.iter().filter_map(|v| v.as_str()).map(str::to_lowercase).collect(),
        Value::String(s) => s.split(',').map(|p| p.trim().to_lowercase()).filter(|p| !p.is_empty()).collect(),
        _ => vec![],
    };
    if selections.is_empty() {
        return None;
    }
    let side = |name: &str, size: u32| -> u32 {
        if !selections.iter().any(|s| s == name) {
            return 0;
        }
        match request[format!("outpaint_distance_{name}")].as_i64() {
            Some(d) if d > 0 => u32::try_from(d).unwrap_or(u32::MAX),
            _ => (size as f64 * 0.3) as u32,
        }
    };
    Some(Extend { left: side("left", width), right: side("right", width), top: side("top", height), bottom: side("bottom", height) })
}

/// The typed task of a 0.1.0 inpaint/outpaint job; `None` when the job is not one.
pub fn typed_task(job_type: &str, images: &[(String, Image)], request: &str) -> Option<Task> {
    if job_type != INPAINT_JOB_TYPE {
        return None;
    }
    let request: Value = serde_json::from_str(request).ok()?;
    let find = |role: &str| images.iter().find(|(r, _)| r == role).map(|(_, i)| i.clone());
    let image = find("input_image")?;
    let advanced = &request["advanced_params"];
    let float = |key: &str, default: f64| advanced[key].as_f64().unwrap_or(default) as f32;
    let engine = advanced["inpaint_engine"].as_str().unwrap_or("v2.6");
    let options = InpaintOptions {
        denoise: float("inpaint_strength", 1.0),
        respective_field: float("inpaint_respective_field", 1.0),
        mask_grow: advanced["inpaint_erode_or_dilate"].as_i64().unwrap_or(0).clamp(-64, 64) as i32,
        invert_mask: advanced["invert_mask_checkbox"].as_bool().unwrap_or(false),
        patch_model: inpaint_patch_file(engine).map(str::to_string),
        extend: outpaint_margins(&request, image.width, image.height),
        disable_initial_latent: advanced["inpaint_disable_initial_latent"].as_bool().unwrap_or(false),
        additional_prompt: request["inpaint_additional_prompt"].as_str().unwrap_or_default().to_string(),
    };
    Some(Task::Inpaint { image, mask: find("input_mask"), options })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(request: serde_json::Value) -> Task {
        let image = Image { width: 150, height: 100, encoded: std::sync::Arc::from(vec![1u8]) };
        typed_task(INPAINT_JOB_TYPE, &[("input_image".into(), image)], &request.to_string()).unwrap()
    }

    fn options(t: Task) -> InpaintOptions {
        match t {
            Task::Inpaint { options, .. } => options,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fooocus_api_defaults_and_outpaint_margins() {
        let o = options(task(serde_json::json!({})));
        assert_eq!(
            (o.denoise, o.respective_field, o.patch_model.as_deref(), o.extend),
            (1.0, 1.0, Some("inpaint_v26.fooocus.patch"), None)
        );
        let o = options(task(serde_json::json!({"outpaint_selections": ["Left", "Top"], "outpaint_distance_top": 7,
            "advanced_params": {"inpaint_engine": "None", "inpaint_erode_or_dilate": 3}})));
        assert_eq!(o.extend, Some(Extend { left: 45, right: 0, top: 7, bottom: 0 }));
        assert_eq!((o.patch_model, o.mask_grow), (None, 3));
        let o = options(task(serde_json::json!({"outpaint_selections": "Right, Bottom", "outpaint_distance_right": -1})));
        assert_eq!(o.extend, Some(Extend { left: 0, right: 45, top: 0, bottom: 30 }));
    }
}
