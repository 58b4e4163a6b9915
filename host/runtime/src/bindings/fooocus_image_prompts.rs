//! Contract 0.1.0 cannot name controls: a Fooocus-API job's image prompts arrive as input images
//! whose roles say where they came from (`image_prompts.N.cn_img` from the v2 JSON routes,
//! `cn_imgN` from the v1 multipart ones) beside the request record that holds each one's
//! `cn_type`, `cn_stop` and `cn_weight`. This reads them as Fooocus-API's `req_to_params` does
//! (a stop or weight of 0 or null takes the type's default), so the shipped plugin's image prompts
//! run as the job's controls. A 0.2.0 plugin passes `controls` itself.

use focal_core::{Control, Image};
use serde_json::Value;

/// The 0.1.0 job type of the image-prompt routes.
pub const IMAGE_PROMPT_JOB_TYPE: &str = "Image Prompt";

/// The request fields of the image prompt an input image's role names: `(object, suffix)`, e.g.
/// `(image_prompts[2], "")` or `(request, "3")` for `cn_img3`.
fn prompt_fields<'a>(role: &str, request: &'a Value) -> Option<(&'a Value, String)> {
    if let Some(n) = role.strip_prefix("cn_img") {
        n.parse::<u8>().ok()?;
        return Some((request, n.to_string()));
    }
    let index: usize = role.strip_prefix("image_prompts.")?.strip_suffix(".cn_img")?.parse().ok()?;
    Some((request["image_prompts"].get(index)?, String::new()))
}

/// Whether an input image of a 0.1.0 job is an image prompt's.
pub fn is_image_prompt(role: &str) -> bool {
    role.strip_prefix("cn_img").is_some_and(|n| n.parse::<u8>().is_ok())
        || role.strip_prefix("image_prompts.").and_then(|r| r.strip_suffix(".cn_img")).is_some_and(|n| n.parse::<usize>().is_ok())
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

/// The request's `advanced_params.controlnet_softness` (Fooocus's default 0.25).
pub fn controlnet_softness(request: &str) -> f32 {
    let request: Value = serde_json::from_str(request).unwrap_or(Value::Null);
    request["advanced_params"]["controlnet_softness"].as_f64().map_or(focal_core::task::default_controlnet_softness(), |v| v as f32)
}

/// The controls of a 0.1.0 job's image-prompt images, in request order; the error names the
/// image's role.
pub fn controls(images: &[(String, Image)], request: &str) -> Result<Vec<Control>, String> {
    let request: Value = serde_json::from_str(request).unwrap_or(Value::Null);
    let advanced = &request["advanced_params"];
    let preprocess = !advanced["skipping_cn_preprocessor"].as_bool().unwrap_or(false);
    // Fooocus-API's Canny thresholds (1–255; 64 and 128 by default).
    let threshold = |key: &str, default: i64| advanced[key].as_i64().unwrap_or(default).clamp(1, 255).to_string();
    let canny =
        vec![("low".to_string(), threshold("canny_low_threshold", 64)), ("high".to_string(), threshold("canny_high_threshold", 128))];
    let mut controls = Vec::new();
    for (role, image) in images.iter().filter(|(role, _)| is_image_prompt(role)) {
        let (fields, suffix) = prompt_fields(role, &request).ok_or_else(|| format!("{role}: no image prompt of the request names it"))?;
        let field = |name: &str| &fields[format!("{name}{suffix}")];
        let cn_type = field("cn_type").as_str().unwrap_or("ImagePrompt");
        let (kind, default_stop, default_weight) =
            kind_of(cn_type).ok_or_else(|| format!("{role}: cn_type '{cn_type}' is not one of ImagePrompt, FaceSwap, PyraCanny, CPDS"))?;
        let given = |name: &str, default: f32| field(name).as_f64().filter(|v| *v != 0.0).map_or(default, |v| v as f32);
        controls.push(Control {
            kind: kind.into(),
            image: image.clone(),
            weight: given("cn_weight", default_weight),
            stop_at: given("cn_stop", default_stop),
            preprocess,
            options: if kind == "canny" { canny.clone() } else { vec![] },
        });
    }
    Ok(controls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image() -> Image {
        Image { width: 4, height: 4, encoded: std::sync::Arc::from(vec![1u8]) }
    }

    #[test]
    fn v2_prompts_take_type_defaults_for_zero_and_null() {
        let request = json!({"image_prompts": [
            {"cn_img": "<image>", "cn_stop": 0, "cn_weight": null, "cn_type": "FaceSwap"},
            {"cn_img": "<image>", "cn_stop": 0.3, "cn_weight": 1.5, "cn_type": "ImagePrompt"}],
            "advanced_params": {"skipping_cn_preprocessor": true}});
        let images = [("image_prompts.1.cn_img".to_string(), image()), ("image_prompts.0.cn_img".to_string(), image())];
        let c = controls(&images, &request.to_string()).unwrap();
        assert_eq!((c[0].kind.as_str(), c[0].stop_at, c[0].weight, c[0].preprocess), ("image-prompt", 0.3, 1.5, false));
        assert_eq!((c[1].kind.as_str(), c[1].stop_at, c[1].weight), ("face", 0.9, 0.75));
    }

    #[test]
    fn v1_slots_read_their_numbered_fields() {
        let request = json!({"cn_type2": "CPDS", "cn_stop2": 0.7, "cn_weight2": null});
        let c = controls(&[("cn_img2".to_string(), image()), ("input_image".to_string(), image())], &request.to_string()).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].kind.as_str(), c[0].stop_at, c[0].weight, c[0].preprocess), ("cpds", 0.7, 1.0, true));
        assert!(is_image_prompt("cn_img4") && !is_image_prompt("cn_imgx") && !is_image_prompt("input_image"));
    }
}
