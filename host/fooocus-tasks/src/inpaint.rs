//! "Image Inpaint or Outpaint": the inpaint settings and outpaint margins of a request, as
//! Fooocus-API's `req_to_params`, `apply_image_input` and `apply_outpaint` read them.

use serde_json::Value;

/// `modules.config.downloading_inpaint_models`: the patch of each inpaint engine version
/// (`None` for the engine `None`: the base model alone).
pub fn patch_file(engine: &str) -> Option<&'static str> {
    match engine {
        "v1" => Some("inpaint.fooocus.patch"),
        "v2.5" => Some("inpaint_v25.fooocus.patch"),
        "v2.6" => Some("inpaint_v26.fooocus.patch"),
        _ => None,
    }
}

/// Outpainting margins in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Margins {
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InpaintSettings {
    pub denoise: f32,
    pub respective_field: f32,
    pub mask_grow: i32,
    pub invert_mask: bool,
    pub patch_model: Option<&'static str>,
    pub extend: Option<Margins>,
    pub disable_initial_latent: bool,
    pub additional_prompt: String,
}

/// `apply_outpaint`'s margins: 30% of the image's height (top, bottom) or width (left,
/// right), or the request's `outpaint_distance_*` where above 0.
fn outpaint_margins(request: &Value, width: u32, height: u32) -> Option<Margins> {
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
    Some(Margins { left: side("left", width), right: side("right", width), top: side("top", height), bottom: side("bottom", height) })
}

/// The settings of an inpaint/outpaint request whose input image is `width`×`height`.
pub fn settings(request: &Value, width: u32, height: u32) -> InpaintSettings {
    let advanced = &request["advanced_params"];
    let float = |key: &str, default: f64| advanced[key].as_f64().unwrap_or(default) as f32;
    InpaintSettings {
        denoise: float("inpaint_strength", 1.0),
        respective_field: float("inpaint_respective_field", 1.0),
        mask_grow: advanced["inpaint_erode_or_dilate"].as_i64().unwrap_or(0).clamp(-64, 64) as i32,
        invert_mask: advanced["invert_mask_checkbox"].as_bool().unwrap_or(false),
        patch_model: patch_file(advanced["inpaint_engine"].as_str().unwrap_or("v2.6")),
        extend: outpaint_margins(request, width, height),
        disable_initial_latent: advanced["inpaint_disable_initial_latent"].as_bool().unwrap_or(false),
        additional_prompt: request["inpaint_additional_prompt"].as_str().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(request: Value) -> InpaintSettings {
        settings(&request, 150, 100)
    }

    #[test]
    fn fooocus_api_defaults_and_outpaint_margins() {
        let o = of(json!({}));
        assert_eq!((o.denoise, o.respective_field, o.patch_model, o.extend), (1.0, 1.0, Some("inpaint_v26.fooocus.patch"), None));
        let o = of(json!({"outpaint_selections": ["Left", "Top"], "outpaint_distance_top": 7,
            "advanced_params": {"inpaint_engine": "None", "inpaint_erode_or_dilate": 3}}));
        assert_eq!(o.extend, Some(Margins { left: 45, right: 0, top: 7, bottom: 0 }));
        assert_eq!((o.patch_model, o.mask_grow), (None, 3));
        let o = of(json!({"outpaint_selections": "Right, Bottom", "outpaint_distance_right": -1}));
        assert_eq!(o.extend, Some(Margins { left: 0, right: 45, top: 0, bottom: 30 }));
    }
}
