//! Fooocus presets (`presets/*.json`, shipped with focal): the default model and the download
//! URLs Fooocus uses for it and its LoRAs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

/// `(name, JSON)` of the presets Fooocus 2.5.5 ships.
pub const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../assets/presets/default.json")),
    ("anime", include_str!("../assets/presets/anime.json")),
    ("lcm", include_str!("../assets/presets/lcm.json")),
    ("lightning", include_str!("../assets/presets/lightning.json")),
    ("playground_v2.5", include_str!("../assets/presets/playground_v2.5.json")),
    ("pony_v6", include_str!("../assets/presets/pony_v6.json")),
    ("realistic", include_str!("../assets/presets/realistic.json")),
    ("sai", include_str!("../assets/presets/sai.json")),
];

/// The LoRAs Fooocus's fast performance modes add, with where Fooocus downloads them.
pub const PERFORMANCE_LORAS: &[(&str, &str)] = &[
    ("sdxl_lcm_lora.safetensors", "https://huggingface.co/lllyasviel/misc/resolve/main/sdxl_lcm_lora.safetensors"),
    ("sdxl_lightning_4step_lora.safetensors", "https://huggingface.co/mashb1t/misc/resolve/main/sdxl_lightning_4step_lora.safetensors"),
    ("sdxl_hyper_sd_4step_lora.safetensors", "https://huggingface.co/mashb1t/misc/resolve/main/sdxl_hyper_sd_4step_lora.safetensors"),
];

#[derive(Debug, Clone, Deserialize)]
pub struct Preset {
    #[serde(default)]
    pub default_model: Option<String>,
    #[serde(default)]
    pub checkpoint_downloads: BTreeMap<String, String>,
    #[serde(default)]
    pub lora_downloads: BTreeMap<String, String>,
    #[serde(default)]
    pub embeddings_downloads: BTreeMap<String, String>,
    #[serde(default)]
    pub vae_downloads: BTreeMap<String, String>,
    /// Every key of the file, for the request defaults.
    #[serde(skip)]
    raw: serde_json::Map<String, serde_json::Value>,
}

/// Preset keys that set a Fooocus-API request field's default: (preset key, field, inside
/// `advanced_params`). Fooocus-API takes these defaults from Fooocus's config, which the preset sets.
const REQUEST_DEFAULTS: &[(&str, &str, bool)] = &[
    ("default_model", "base_model_name", false),
    ("default_refiner", "refiner_model_name", false),
    ("default_refiner_switch", "refiner_switch", false),
    ("default_cfg_scale", "guidance_scale", false),
    ("default_sample_sharpness", "sharpness", false),
    ("default_prompt", "prompt", false),
    ("default_prompt_negative", "negative_prompt", false),
    ("default_styles", "style_selections", false),
    ("default_performance", "performance_selection", false),
    ("default_sampler", "sampler_name", true),
    ("default_scheduler", "scheduler_name", true),
    ("default_overwrite_step", "overwrite_step", true),
    ("default_overwrite_switch", "overwrite_switch", true),
    ("default_cfg_tsnr", "adaptive_cfg", true),
    ("default_clip_skip", "clip_skip", true),
    ("default_vae", "vae_name", true),
    ("default_inpaint_engine_version", "inpaint_engine", true),
];

impl Preset {
    /// A built-in preset by name, or a preset file at `name_or_path`.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Ok(Self::parse(text).expect("built-in presets parse"));
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).with_context(|| {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            format!("preset '{name_or_path}' is neither a built-in preset ({}) nor a readable file", names.join(", "))
        })?;
        Self::parse(&text).with_context(|| format!("{}: not a Fooocus preset", path.display()))
    }

    fn parse(text: &str) -> serde_json::Result<Self> {
        let mut preset: Preset = serde_json::from_str(text)?;
        preset.raw = serde_json::from_str(text)?;
        Ok(preset)
    }

    /// The request defaults this preset sets, as a partial Fooocus-API request body (with an
    /// `advanced_params` object); keys it lacks keep Fooocus-API's own defaults.
    pub fn request_defaults(&self) -> serde_json::Value {
        use serde_json::{json, Value};
        let mut top = serde_json::Map::new();
        let mut advanced = serde_json::Map::new();
        for (key, field, inside) in REQUEST_DEFAULTS {
            if let Some(v) = self.raw.get(*key) {
                (if *inside { &mut advanced } else { &mut top }).insert(field.to_string(), v.clone());
            }
        }
        // "1152×896 ∣ 9:7" (UI spelling) or "1152*896", as Fooocus-API normalises it.
        if let Some(Value::String(a)) = self.raw.get("default_aspect_ratio") {
            let head = a.split(' ').next().unwrap_or("").replace('×', "*");
            top.insert("aspect_ratios_selection".into(), json!(head));
        }
        // `[enabled, name, weight]` rows (older presets: `[name, weight]`).
        if let Some(Value::Array(rows)) = self.raw.get("default_loras") {
            let loras: Vec<Value> = rows
                .iter()
                .filter_map(|r| match r.as_array()?.as_slice() {
                    [enabled, name, weight] => Some(json!({"enabled": enabled, "model_name": name, "weight": weight})),
                    [name, weight] => Some(json!({"enabled": true, "model_name": name, "weight": weight})),
                    _ => None,
                })
                .collect();
            top.insert("loras".into(), Value::Array(loras));
        }
        if !advanced.is_empty() {
            top.insert("advanced_params".into(), Value::Object(advanced));
        }
        Value::Object(top)
    }

    /// `(folder, file name, URL)` of everything the preset downloads.
    pub fn downloads(&self) -> Vec<(&'static str, String, String)> {
        let groups: [(&'static str, &BTreeMap<String, String>); 4] = [
            ("checkpoints", &self.checkpoint_downloads),
            ("loras", &self.lora_downloads),
            ("embeddings", &self.embeddings_downloads),
            ("vae", &self.vae_downloads),
        ];
        groups.into_iter().flat_map(|(folder, map)| map.iter().map(move |(f, u)| (folder, f.clone(), u.clone()))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_presets_name_their_model_and_where_to_get_it() {
        for (name, _) in BUILTIN {
            let p = Preset::load(name).unwrap();
            let model = p.default_model.clone().unwrap();
            assert!(p.checkpoint_downloads.contains_key(&model), "{name}: no URL for {model}");
        }
        let d = Preset::load("default").unwrap();
        assert_eq!(d.default_model.as_deref(), Some("juggernautXL_v8Rundiffusion.safetensors"));
        assert_eq!(d.downloads().len(), 2);
        assert!(Preset::load("nope").unwrap_err().to_string().contains("built-in preset"));
    }

    #[test]
    fn request_defaults_follow_the_preset_file() {
        let anime = Preset::load("anime").unwrap().request_defaults();
        assert_eq!(anime["base_model_name"], "animaPencilXL_v500.safetensors");
        assert_eq!(anime["guidance_scale"], 6.0);
        assert_eq!(anime["aspect_ratios_selection"], "896*1152");
        assert_eq!(anime["style_selections"], serde_json::json!(["Fooocus V2", "Fooocus Semi Realistic", "Fooocus Masterpiece"]));
        assert_eq!(anime["loras"][0], serde_json::json!({"enabled": true, "model_name": "None", "weight": 1.0}));
        assert_eq!(anime["advanced_params"]["sampler_name"], "dpmpp_2m_sde_gpu");
        assert_eq!(Preset::load("lightning").unwrap().request_defaults()["performance_selection"], "Lightning");
    }
}
