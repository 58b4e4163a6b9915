//! The subset of a Fooocus-API v1 text-to-image body that the engine runs directly, with
//! Fooocus-API's defaults. (The full API, styles and Fooocus's patches live elsewhere.)

use anyhow::{bail, Context, Result};
use focal_engine::freeu::FreeU;
use focal_engine::patches::FooocusPatches;
use focal_engine::pipeline::RefinerSwap;
use focal_engine::{GenerationParams, Sampler, Scheduler};
use serde::Deserialize;

/// Fooocus's largest seed (`2**63 - 1`); image `i` of a request uses `(seed + i) mod 2^63`.
pub const MAX_SEED: u64 = (1 << 63) - 1;

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct TextToImageRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub style_selections: Vec<String>,
    pub performance_selection: String,
    pub aspect_ratios_selection: String,
    pub image_number: u32,
    pub image_seed: i64,
    pub sharpness: f32,
    pub guidance_scale: f32,
    pub refiner_model_name: String,
    pub refiner_switch: f32,
    pub loras: Vec<serde_json::Value>,
    pub advanced_params: AdvancedParams,
}

impl Default for TextToImageRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            style_selections: Vec::new(),
            performance_selection: "Speed".into(),
            aspect_ratios_selection: "1152*896".into(),
            image_number: 1,
            image_seed: -1,
            sharpness: 2.0,
            guidance_scale: 4.0,
            refiner_model_name: "None".into(),
            refiner_switch: 0.5,
            loras: Vec::new(),
            advanced_params: AdvancedParams::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct AdvancedParams {
    pub sampler_name: String,
    pub scheduler_name: String,
    pub overwrite_step: i64,
    pub overwrite_width: i64,
    pub overwrite_height: i64,
    pub adm_scaler_positive: f32,
    pub adm_scaler_negative: f32,
    pub adm_scaler_end: f32,
    pub adaptive_cfg: f32,
    pub freeu_enabled: bool,
    pub freeu_b1: f64,
    pub freeu_b2: f64,
    pub freeu_s1: f64,
    pub freeu_s2: f64,
    pub refiner_swap_method: String,
    pub overwrite_switch: f32,
}

impl Default for AdvancedParams {
    fn default() -> Self {
        Self {
            sampler_name: "dpmpp_2m_sde_gpu".into(),
            scheduler_name: "karras".into(),
            overwrite_step: -1,
            overwrite_width: -1,
            overwrite_height: -1,
            adm_scaler_positive: 1.5,
            adm_scaler_negative: 0.8,
            adm_scaler_end: 0.3,
            adaptive_cfg: 7.0,
            freeu_enabled: false,
            freeu_b1: 1.01,
            freeu_b2: 1.02,
            freeu_s1: 0.99,
            freeu_s2: 0.95,
            refiner_swap_method: "joint".into(),
            overwrite_switch: -1.0,
        }
    }
}

impl TextToImageRequest {
    /// The refiner's name, switch fraction (`overwrite_switch` wins when set) and swap method,
    /// when one is asked for.
    pub fn refiner(&self) -> Result<Option<(String, f32, RefinerSwap)>> {
        if matches!(self.refiner_model_name.as_str(), "" | "None") {
            return Ok(None);
        }
        let adv = &self.advanced_params;
        let swap = match adv.refiner_swap_method.as_str() {
            "joint" => RefinerSwap::Joint,
            "separate" => RefinerSwap::Separate,
            "vae" => RefinerSwap::Vae,
            other => bail!("invalid request: field 'advanced_params.refiner_swap_method': '{other}' is not one of joint, separate, vae"),
        };
        let switch = if adv.overwrite_switch > 0.0 { adv.overwrite_switch } else { self.refiner_switch };
        Ok(Some((self.refiner_model_name.clone(), switch, swap)))
    }

    pub fn parse(json: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("invalid request: field '{path}': {}", e.into_inner())
        })
    }

    /// Parameters for image `index` of the request (seed + index), after validation.
    pub fn to_params(&self, base_seed: u64, index: u32) -> Result<GenerationParams> {
        let adv = &self.advanced_params;
        let sampler: Sampler = adv.sampler_name.parse().context("invalid request: field 'advanced_params.sampler_name'")?;
        let scheduler: Scheduler =
            adv.scheduler_name.parse().context("invalid request: field 'advanced_params.scheduler_name'")?;
        let (mut width, mut height) = parse_aspect_ratio(&self.aspect_ratios_selection)?;
        if adv.overwrite_width > 0 {
            width = adv.overwrite_width as u32;
        }
        if adv.overwrite_height > 0 {
            height = adv.overwrite_height as u32;
        }
        let steps = if adv.overwrite_step > 0 {
            adv.overwrite_step as usize
        } else {
            match self.performance_selection.as_str() {
                "Speed" => 30,
                "Quality" => 60,
                other => bail!(
                    "invalid request: field 'performance_selection': '{other}' is not supported yet (Speed, Quality); \
                     the LoRA-based presets arrive with LoRA support"
                ),
            }
        };
        if self.image_number == 0 || self.image_number > 32 {
            bail!("invalid request: field 'image_number': {} must be between 1 and 32", self.image_number);
        }
        let mut p = GenerationParams::txt2img(&self.prompt, width, height, steps, (base_seed + index as u64) % (MAX_SEED + 1));
        p.negative_prompt = self.negative_prompt.clone();
        p.cfg = self.guidance_scale;
        p.sampler = sampler;
        p.scheduler = scheduler.as_fooocus_samples();
        p.patches = Some(FooocusPatches {
            sharpness: self.sharpness,
            adaptive_cfg: adv.adaptive_cfg,
            adm_positive: adv.adm_scaler_positive,
            adm_negative: adv.adm_scaler_negative,
            adm_end: adv.adm_scaler_end,
        });
        p.freeu = adv.freeu_enabled.then_some(FreeU { b1: adv.freeu_b1, b2: adv.freeu_b2, s1: adv.freeu_s1, s2: adv.freeu_s2 });
        Ok(p)
    }

    /// The seed of the first image: `image_seed`, or a random one when it is -1 (as Fooocus does).
    pub fn base_seed(&self) -> Result<u64> {
        match self.image_seed {
            -1 => Ok(rand::random::<u64>() & MAX_SEED),
            s if s >= 0 => Ok(s as u64),
            s => bail!("invalid request: field 'image_seed': {s} must be -1 (random) or between 0 and {MAX_SEED}"),
        }
    }

    /// Settings the engine does not apply yet; the CLI names them instead of silently
    /// producing a different picture.
    pub fn unapplied_settings(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.style_selections.is_empty() {
            v.push(format!("style_selections {:?}", self.style_selections));
        }
        if !self.loras.is_empty() {
            v.push("loras (use `focal serve` for LoRAs)".to_string());
        }
        v
    }
}

/// "1152*896" (Fooocus-API) or "1152×896 ∣ 9:7" (Fooocus UI) → (width, height).
pub fn parse_aspect_ratio(s: &str) -> Result<(u32, u32)> {
    let head = s.split(['∣', '|', ' ']).next().unwrap_or("");
    let parsed = head.split_once(['*', '×']).and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    match parsed {
        Some((w, h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => bail!("invalid request: field 'aspect_ratios_selection': '{s}' is not of the form WIDTH*HEIGHT, e.g. 1152*896"),
    }
}
