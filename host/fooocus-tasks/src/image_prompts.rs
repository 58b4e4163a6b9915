//! Image prompts: each one's `cn_type`, `cn_stop` and `cn_weight` as Fooocus-API's
//! `req_to_params` reads them (a stop or weight of 0 or null takes the type's default), the
//! Canny thresholds and `controlnet_softness`. Image prompts come from the v2 JSON routes'
//! `image_prompts` list (input role `image_prompts.N.cn_img`) or the v1 multipart routes'
//! numbered fields (role `cn_imgN`).

use serde_json::Value;

/// A control as Fooocus runs it: the engine's control kind and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSettings {
    /// `image-prompt`, `face`, `canny` or `cpds`.
    pub kind: &'static str,
    pub weight: f32,
    pub stop_at: f32,
    /// Off with `skipping_cn_preprocessor`: the image is used as sent.
    pub preprocess: bool,
    /// The preprocessor's settings (Canny's `low`/`high` thresholds).
    pub options: Vec<(String, String)>,
}

/// Fooocus's `cn_type` as a control kind, with `flags.default_parameters` (stop, weight).
fn kind_of(cn_type: &str) -> Option<(&'static str, f32, f32)> {
    match cn_type {
        "ImagePrompt" => Some(("image-prompt", 0.5, 0.6)),
        "FaceSwap" => Some(("face", 0.9, 0.75)),
        "PyraCanny" => Some(("canny", 0.5, 1.0)),
        "CPDS" => Some(("cpds", 0.5, 1.0)),
        _ => None,
    }
}

/// Fooocus's default `controlnet_softness`.
pub const DEFAULT_SOFTNESS: f32 = 0.25;

/// The request's `advanced_params.controlnet_softness`.
pub fn softness(request: &Value) -> f32 {
    request["advanced_params"]["controlnet_softness"].as_f64().map_or(DEFAULT_SOFTNESS, |v| v as f32)
}

/// The request fields of the image prompt an input role names: `(object, suffix)`, e.g.
/// `(image_prompts[2], "")` or `(request, "3")` for `cn_img3`.
fn prompt_fields<'a>(role: &str, request: &'a Value) -> Option<(&'a Value, String)> {
    if let Some(n) = role.strip_prefix("cn_img") {
        n.parse::<u8>().ok()?;
        return Some((request, n.to_string()));
    }
    let index: usize = role.strip_prefix("image_prompts.")?.strip_suffix(".cn_img")?.parse().ok()?;
    Some((request["image_prompts"].get(index)?, String::new()))
}

/// Whether an input role is an image prompt's.
pub fn is_image_prompt(role: &str) -> bool {
    role.strip_prefix("cn_img").is_some_and(|n| n.parse::<u8>().is_ok())
        || role.strip_prefix("image_prompts.").and_then(|r| r.strip_suffix(".cn_img")).is_some_and(|n| n.parse::<usize>().is_ok())
}

/// The control of the image prompt whose image has input role `role`; the error names the role.
pub fn control(role: &str, request: &Value) -> Result<ControlSettings, String> {
    let advanced = &request["advanced_params"];
    let (fields, suffix) = prompt_fields(role, request).ok_or_else(|| format!("{role}: no image prompt of the request names it"))?;
    let field = |name: &str| &fields[format!("{name}{suffix}")];
    let cn_type = field("cn_type").as_str().unwrap_or("ImagePrompt");
    let (kind, default_stop, default_weight) =
        kind_of(cn_type).ok_or_else(|| format!("{role}: cn_type '{cn_type}' is not one of ImagePrompt, FaceSwap, PyraCanny, CPDS"))?;
    let given = |name: &str, default: f32| field(name).as_f64().filter(|v| *v != 0.0).map_or(default, |v| v as f32);
    // Fooocus-API's Canny thresholds (1–255; 64 and 128 by default).
    let threshold = |key: &str, default: i64| advanced[key].as_i64().unwrap_or(default).clamp(1, 255).to_string();
    let options = if kind == "canny" {
        vec![("low".to_string(), threshold("canny_low_threshold", 64)), ("high".to_string(), threshold("canny_high_threshold", 128))]
    } else {
        vec![]
    };
    Ok(ControlSettings {
        kind,
        weight: given("cn_weight", default_weight),
        stop_at: given("cn_stop", default_stop),
        preprocess: !advanced["skipping_cn_preprocessor"].as_bool().unwrap_or(false),
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v2_prompts_take_type_defaults_for_zero_and_null() {
        let request = json!({"image_prompts": [
            {"cn_img": "<image>", "cn_stop": 0, "cn_weight": null, "cn_type": "FaceSwap"},
            {"cn_img": "<image>", "cn_stop": 0.3, "cn_weight": 1.5, "cn_type": "ImagePrompt"}],
            "advanced_params": {"skipping_cn_preprocessor": true}});
        let c = control("image_prompts.1.cn_img", &request).unwrap();
        assert_eq!((c.kind, c.stop_at, c.weight, c.preprocess), ("image-prompt", 0.3, 1.5, false));
        let c = control("image_prompts.0.cn_img", &request).unwrap();
        assert_eq!((c.kind, c.stop_at, c.weight), ("face", 0.9, 0.75));
        assert!(control("image_prompts.2.cn_img", &request).is_err());
    }

    #[test]
    fn v1_slots_read_their_numbered_fields() {
        let request = json!({"cn_type2": "CPDS", "cn_stop2": 0.7, "cn_weight2": null, "cn_type3": "PyraCanny",
            "advanced_params": {"canny_low_threshold": 0}});
        let c = control("cn_img2", &request).unwrap();
        assert_eq!((c.kind, c.stop_at, c.weight, c.preprocess), ("cpds", 0.7, 1.0, true));
        let c = control("cn_img3", &request).unwrap();
        assert_eq!(c.options, vec![("low".to_string(), "1".to_string()), ("high".to_string(), "128".to_string())]);
        assert!(is_image_prompt("cn_img4") && !is_image_prompt("cn_imgx") && !is_image_prompt("input_image"));
        assert!(control("cn_img1", &json!({"cn_type1": "Depth"})).unwrap_err().contains("cn_type 'Depth'"));
        assert_eq!(softness(&json!({})), DEFAULT_SOFTNESS);
    }
}
