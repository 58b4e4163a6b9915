//! The Fooocus-API request models (0.5.0.1, stock default preset) as field tables: the fields
//! common to every generation route, each endpoint's extra fields, and their defaults.

use crate::fields::{field, required, Field, Kind};

pub const PERFORMANCE: &[&str] = &["Speed", "Quality", "Extreme Speed", "Lightning", "Hyper-SD"];
pub const SAMPLERS: &[&str] = &[
    "euler",
    "euler_ancestral",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "tcd",
    "restart",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
];
pub const SCHEDULERS: &[&str] = &[
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "lcm",
    "turbo",
    "align_your_steps",
    "tcd",
    "edm_playground_v2.5",
];
pub const UOV_METHODS: &[&str] =
    &["Disabled", "Vary (Subtle)", "Vary (Strong)", "Upscale (1.5x)", "Upscale (2x)", "Upscale (Fast 2x)", "Upscale (Custom)"];
pub const OUTPAINT: &[&str] = &["Left", "Right", "Top", "Bottom"];
pub const CN_TYPES: &[&str] = &["ImagePrompt", "FaceSwap", "PyraCanny", "CPDS"];

const DEFAULT_LORAS: &str = r#"[{"enabled": true, "model_name": "sd_xl_offset_example-lora_1.0.safetensors", "weight": 0.1}, {"enabled": true, "model_name": "None", "weight": 1.0}, {"enabled": true, "model_name": "None", "weight": 1.0}, {"enabled": true, "model_name": "None", "weight": 1.0}, {"enabled": true, "model_name": "None", "weight": 1.0}]"#;

pub const LORA: &[Field] =
    &[required("enabled", Kind::Bool), field("model_name", Kind::Str, "\"None\""), field("weight", Kind::Float(-2.0, 2.0), "0.5")];

/// Fooocus's `refiner_swap_method` values (its worker asserts one of these).
pub const SWAP_METHODS: &[&str] = &["joint", "separate", "vae"];

/// `AdvancedParams`. Unknown sampler/scheduler names are a 422 listing the valid ones (the seed
/// silently used its defaults, which hid typos); so is an unknown swap method (the seed took it
/// and then failed the job on Fooocus's assert); the inpaint engine stays a free string.
pub const ADVANCED: &[Field] = &[
    field("disable_preview", Kind::Bool, "false"),
    field("disable_intermediate_results", Kind::Bool, "false"),
    field("disable_seed_increment", Kind::Bool, "false"),
    field("adm_scaler_positive", Kind::Float(0.1, 3.0), "1.5"),
    field("adm_scaler_negative", Kind::Float(0.1, 3.0), "0.8"),
    field("adm_scaler_end", Kind::Float(0.0, 1.0), "0.3"),
    field("adaptive_cfg", Kind::Float(1.0, 30.0), "7.0"),
    field("clip_skip", Kind::Int(1, 12), "2"),
    field("sampler_name", Kind::Enum(SAMPLERS), "\"dpmpp_2m_sde_gpu\""),
    field("scheduler_name", Kind::Enum(SCHEDULERS), "\"karras\""),
    field("overwrite_step", Kind::Int(-1, 200), "-1"),
    field("overwrite_switch", Kind::Float(-1.0, 1.0), "-1"),
    field("overwrite_width", Kind::Int(-1, 2048), "-1"),
    field("overwrite_height", Kind::Int(-1, 2048), "-1"),
    field("overwrite_vary_strength", Kind::Float(-1.0, 1.0), "-1"),
    field("overwrite_upscale_strength", Kind::Float(-1.0, 1.0), "-1"),
    field("mixing_image_prompt_and_vary_upscale", Kind::Bool, "false"),
    field("mixing_image_prompt_and_inpaint", Kind::Bool, "false"),
    field("debugging_cn_preprocessor", Kind::Bool, "false"),
    field("skipping_cn_preprocessor", Kind::Bool, "false"),
    field("canny_low_threshold", Kind::Int(1, 255), "64"),
    field("canny_high_threshold", Kind::Int(1, 255), "128"),
    field("refiner_swap_method", Kind::Enum(SWAP_METHODS), "\"joint\""),
    field("controlnet_softness", Kind::Float(0.0, 1.0), "0.25"),
    field("freeu_enabled", Kind::Bool, "false"),
    field("freeu_b1", Kind::Float(f64::MIN, f64::MAX), "1.01"),
    field("freeu_b2", Kind::Float(f64::MIN, f64::MAX), "1.02"),
    field("freeu_s1", Kind::Float(f64::MIN, f64::MAX), "0.99"),
    field("freeu_s2", Kind::Float(f64::MIN, f64::MAX), "0.95"),
    field("debugging_inpaint_preprocessor", Kind::Bool, "false"),
    field("inpaint_disable_initial_latent", Kind::Bool, "false"),
    field("inpaint_engine", Kind::Str, "\"v2.6\""),
    field("inpaint_strength", Kind::Float(0.0, 1.0), "1.0"),
    field("inpaint_respective_field", Kind::Float(0.0, 1.0), "1.0"),
    field("inpaint_advanced_masking_checkbox", Kind::Bool, "true"),
    field("invert_mask_checkbox", Kind::Bool, "false"),
    field("inpaint_erode_or_dilate", Kind::Int(-64, 64), "0"),
    field("black_out_nsfw", Kind::Bool, "false"),
    field("vae_name", Kind::Str, "\"Default (model)\""),
    field("debugging_dino", Kind::Bool, "false"),
    field("dino_erode_or_dilate", Kind::Int(-64, 64), "0"),
    field("debugging_enhance_masks_checkbox", Kind::Bool, "false"),
];

/// `CommonRequest`: the JSON body of v1 text-to-image and the base of every v2 body.
/// Most characters in a prompt text (the host's default `--max-prompt-chars`).
pub const MAX_PROMPT_CHARS: usize = 64 << 10;

pub const COMMON: &[Field] = &[
    field("prompt", Kind::Text(MAX_PROMPT_CHARS), "\"\""),
    field("negative_prompt", Kind::Text(MAX_PROMPT_CHARS), "\"\""),
    field("style_selections", Kind::StrList, r#"["Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"]"#),
    field("performance_selection", Kind::Enum(PERFORMANCE), "\"Speed\""),
    field("aspect_ratios_selection", Kind::Str, "\"1152*896\""),
    field("image_number", Kind::Int(1, 32), "1"),
    field("image_seed", Kind::Int(i64::MIN, i64::MAX), "-1"),
    field("sharpness", Kind::Float(0.0, 30.0), "2.0"),
    field("guidance_scale", Kind::Float(1.0, 30.0), "4.0"),
    field("base_model_name", Kind::Str, "\"juggernautXL_v8Rundiffusion.safetensors\""),
    field("refiner_model_name", Kind::Str, "\"None\""),
    field("refiner_switch", Kind::Float(0.1, 1.0), "0.5"),
    field("loras", Kind::ObjectList(LORA), DEFAULT_LORAS),
    field("advanced_params", Kind::Object(ADVANCED), "{}"),
    field("save_meta", Kind::Bool, "true"),
    field("meta_scheme", Kind::Str, "\"fooocus\""),
    field("save_extension", Kind::Str, "\"png\""),
    field("save_name", Kind::Str, "\"\""),
    field("read_wildcards_in_order", Kind::Bool, "false"),
    field("require_base64", Kind::Bool, "false"),
    field("async_process", Kind::Bool, "false"),
    field("webhook_url", Kind::OptStr, "\"\""),
];

pub const IMAGE_PROMPT: &[Field] = &[
    field("cn_img", Kind::OptStr, "null"),
    field("cn_stop", Kind::Float(0.0, 1.0), "0"),
    field("cn_weight", Kind::Float(0.0, 2.0), "0"),
    field("cn_type", Kind::Enum(CN_TYPES), "\"ImagePrompt\""),
];

pub const ENHANCE_CTRL: &[Field] = &[
    field("enhance_enabled", Kind::Bool, "false"),
    field("enhance_mask_dino_prompt", Kind::Str, "\"face\""),
    field("enhance_prompt", Kind::Text(MAX_PROMPT_CHARS), "\"\""),
    field("enhance_negative_prompt", Kind::Text(MAX_PROMPT_CHARS), "\"\""),
    field("enhance_mask_model", Kind::Str, "\"sam\""),
    field("enhance_mask_cloth_category", Kind::Str, "\"full\""),
    field("enhance_mask_sam_model", Kind::Str, "\"vit_b\""),
    field("enhance_mask_text_threshold", Kind::Float(0.0, 1.0), "0.25"),
    field("enhance_mask_box_threshold", Kind::Float(0.0, 1.0), "0.3"),
    field("enhance_mask_sam_max_detections", Kind::Int(0, 10), "0"),
    field("enhance_inpaint_disable_initial_latent", Kind::Bool, "false"),
    field("enhance_inpaint_engine", Kind::Str, "\"v2.6\""),
    field("enhance_inpaint_strength", Kind::Float(0.0, 1.0), "1"),
    field("enhance_inpaint_respective_field", Kind::Float(0.0, 1.0), "0.618"),
    field("enhance_inpaint_erode_or_dilate", Kind::Int(-64, 64), "0"),
    field("enhance_mask_invert", Kind::Bool, "false"),
];

/// One generation endpoint: its path, job type, extra fields (beyond `COMMON`) and the names
/// of its image fields.
pub struct Endpoint {
    pub path: &'static str,
    pub job_type: &'static str,
    pub multipart: bool,
    /// Groups of fields beyond `COMMON`, in order.
    pub extra: &'static [&'static [Field]],
    pub summary: &'static str,
}

const UOV_V1: &[Field] = &[
    required("input_image", Kind::File),
    required("uov_method", Kind::Enum(UOV_METHODS)),
    field("upscale_value", Kind::OptFloat(1.0, 5.0), "null"),
];

/// Outpaint fields; v1 forms default the distances to 0, v2 JSON to -1 (as the seed).
macro_rules! outpaint {
    ($distance_default:literal) => {
        [
            field("inpaint_additional_prompt", Kind::Text(MAX_PROMPT_CHARS), "\"\""),
            field("outpaint_selections", Kind::EnumList(OUTPAINT), "[]"),
            field("outpaint_distance_left", Kind::Int(i64::MIN, i64::MAX), $distance_default),
            field("outpaint_distance_right", Kind::Int(i64::MIN, i64::MAX), $distance_default),
            field("outpaint_distance_top", Kind::Int(i64::MIN, i64::MAX), $distance_default),
            field("outpaint_distance_bottom", Kind::Int(i64::MIN, i64::MAX), $distance_default),
        ]
    };
}
const OUTPAINT_V1: &[Field] = &outpaint!("0");
const OUTPAINT_V2: &[Field] = &outpaint!("-1");

/// One v1 image-prompt slot (`cn_img<n>`, `cn_stop<n>`, `cn_weight<n>`, `cn_type<n>`).
macro_rules! cn_slot {
    ($n:literal) => {
        &[
            field(concat!("cn_img", $n), Kind::File, "null"),
            field(concat!("cn_stop", $n), Kind::OptFloat(0.0, 1.0), "null"),
            field(concat!("cn_weight", $n), Kind::OptFloat(0.0, 2.0), "null"),
            field(concat!("cn_type", $n), Kind::Enum(CN_TYPES), "\"ImagePrompt\""),
        ]
    };
}

const INPAINT_V1: &[Field] = &[required("input_image", Kind::File), field("input_mask", Kind::File, "null")];
const IMAGE_PROMPT_V1: &[Field] = &[field("input_image", Kind::File, "null"), field("input_mask", Kind::File, "null")];
const ENHANCE_V1: &[Field] = &[
    field("enhance_input_image", Kind::File, "null"),
    field("enhance_checkbox", Kind::Bool, "true"),
    field("enhance_uov_method", Kind::Enum(UOV_METHODS), "\"Vary (Strong)\""),
    field("enhance_uov_processing_order", Kind::Str, "\"Before First Enhancement\""),
    field("enhance_uov_prompt_type", Kind::Str, "\"Original Prompts\""),
];
const IP_V2: &[Field] = &[field("image_prompts", Kind::ObjectList(IMAGE_PROMPT), "[]")];
const UOV_V2: &[Field] = &[
    required("input_image", Kind::Str),
    field("uov_method", Kind::Enum(UOV_METHODS), "\"Upscale (2x)\""),
    field("upscale_value", Kind::OptFloat(1.0, 5.0), "1.0"),
];
const INPAINT_V2: &[Field] = &[field("input_image", Kind::Str, "\"\""), field("input_mask", Kind::OptStr, "\"\"")];
const IMAGE_PROMPT_V2: &[Field] = &[
    field("input_image", Kind::OptStr, "null"),
    field("input_mask", Kind::OptStr, "null"),
    required("image_prompts", Kind::ObjectList(IMAGE_PROMPT)),
];
const ENHANCE_V2: &[Field] = &[
    field("enhance_input_image", Kind::Str, "\"\""),
    field("enhance_checkbox", Kind::Bool, "true"),
    field("enhance_uov_method", Kind::Enum(UOV_METHODS), "\"Vary (Strong)\""),
    field("enhance_uov_processing_order", Kind::Str, "\"Before First Enhancement\""),
    field("enhance_uov_prompt_type", Kind::Str, "\"Original Prompts\""),
    field("save_final_enhanced_image_only", Kind::Bool, "true"),
    required("enhance_ctrlnets", Kind::ObjectList(ENHANCE_CTRL)),
];

pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint { path: "/v1/generation/text-to-image", job_type: "Text to Image", multipart: false, extra: &[], summary: "Text to image" },
    Endpoint {
        path: "/v1/generation/image-upscale-vary",
        job_type: "Image Upscale or Variation",
        multipart: true,
        extra: &[UOV_V1],
        summary: "Upscale or vary an image",
    },
    Endpoint {
        path: "/v1/generation/image-inpaint-outpaint",
        job_type: "Image Inpaint or Outpaint",
        multipart: true,
        extra: &[INPAINT_V1, OUTPAINT_V1],
        summary: "Inpaint or outpaint an image",
    },
    Endpoint {
        path: "/v1/generation/image-prompt",
        job_type: "Image Prompt",
        multipart: true,
        extra: &[IMAGE_PROMPT_V1, OUTPAINT_V1, cn_slot!(1), cn_slot!(2), cn_slot!(3), cn_slot!(4)],
        summary: "Generate with image prompts",
    },
    Endpoint {
        path: "/v1/generation/image-enhance",
        job_type: "Image Enhancement",
        multipart: true,
        extra: &[ENHANCE_V1],
        summary: "Enhance an image",
    },
    Endpoint {
        path: "/v2/generation/text-to-image-with-ip",
        job_type: "Text to Image",
        multipart: false,
        extra: &[IP_V2],
        summary: "Text to image with image prompts",
    },
    Endpoint {
        path: "/v2/generation/image-upscale-vary",
        job_type: "Image Upscale or Variation",
        multipart: false,
        extra: &[UOV_V2, IP_V2],
        summary: "Upscale or vary an image (base64 or URL)",
    },
    Endpoint {
        path: "/v2/generation/image-inpaint-outpaint",
        job_type: "Image Inpaint or Outpaint",
        multipart: false,
        extra: &[INPAINT_V2, OUTPAINT_V2, IP_V2],
        summary: "Inpaint or outpaint an image (base64 or URL)",
    },
    Endpoint {
        path: "/v2/generation/image-prompt",
        job_type: "Image Prompt",
        multipart: false,
        extra: &[IMAGE_PROMPT_V2, OUTPAINT_V2],
        summary: "Generate with image prompts (base64 or URL)",
    },
    Endpoint {
        path: "/v2/generation/image-enhance",
        job_type: "Image Enhancement",
        multipart: false,
        extra: &[ENHANCE_V2],
        summary: "Enhance an image (base64 or URL)",
    },
];

/// The fields of an endpoint's body: `COMMON` (with the v1 form's different defaults) + extras.
pub fn fields_of(e: &Endpoint) -> Vec<Field> {
    let mut fields: Vec<Field> = COMMON
        .iter()
        .map(|f| match (e.multipart, f.name) {
            // v1 forms: save_meta defaults to false; loras/advanced_params are JSON strings
            // (decoded before validation).
            (true, "save_meta") => field("save_meta", Kind::Bool, "false"),
            _ => *f,
        })
        .collect();
    for group in e.extra {
        fields.extend_from_slice(group);
    }
    fields
}
