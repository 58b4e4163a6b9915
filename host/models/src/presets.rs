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
}

impl Preset {
    /// A built-in preset by name, or a preset file at `name_or_path`.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Ok(serde_json::from_str(text).expect("built-in presets parse"));
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).with_context(|| {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            format!("preset '{name_or_path}' is neither a built-in preset ({}) nor a readable file", names.join(", "))
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a Fooocus preset", path.display()))
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
}
