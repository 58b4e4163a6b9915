//! LoRA files merged into the checkpoint's weights as they are read:
//! `W' = W + Σ weight · (alpha / rank) · up · down` for each LoRA that patches `W`.
//!
//! Keys in the kohya / A1111 layout that SDXL LoRAs use: `lora_unet_<LDM path>`,
//! `lora_te1_<CLIP-L path>`, `lora_te2_<bigG path>` (dots as underscores), each with
//! `.lora_down.weight`, `.lora_up.weight` and an optional `.alpha`. Keys that match no weight of
//! the checkpoint, or use a format focal does not merge, are reported, not silently dropped.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{EngineError, Result};

/// One LoRA to merge, with its strength.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub weight: f32,
}

/// A low-rank update of one weight.
#[derive(Clone)]
pub struct LoraPatch {
    pub up: Tensor,
    pub down: Tensor,
    /// `weight · alpha / rank`.
    pub scale: f64,
}

impl LoraPatch {
    /// `scale · up · down`, shaped like the weight it patches (linear or conv).
    pub fn delta(&self, shape: &[usize]) -> candle_core::Result<Tensor> {
        let rank = self.down.dim(0)?;
        let up = self.up.to_dtype(DType::F32)?.reshape((self.up.dim(0)?, rank))?;
        let down = self.down.to_dtype(DType::F32)?.reshape((rank, self.down.elem_count() / rank))?;
        (up.matmul(&down)? * self.scale)?.reshape(shape)
    }
}

/// What merging a set of LoRAs did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoraReport {
    /// Weights patched, over all LoRAs.
    pub patched: usize,
    /// `file: key` for every LoRA module that was not merged, with the reason.
    pub unknown: Vec<String>,
}

/// The kohya module name of a canonical weight name (`None` for non-weights and the VAE).
fn kohya_name(canonical: &str) -> Option<String> {
    let module = canonical.strip_suffix(".weight")?;
    let (part, rest) = module.split_once('.')?;
    let prefix = match part {
        "unet" => "lora_unet_",
        "clip_l" => "lora_te1_",
        "clip_g" => "lora_te2_",
        _ => return None,
    };
    Some(format!("{prefix}{}", rest.replace('.', "_")))
}

/// Read `specs` against the checkpoint's canonical names: patches by canonical name, plus the
/// report of what could not be merged.
pub fn load_patches(specs: &[LoraSpec], canonical_names: &[&str], device: &Device) -> Result<(HashMap<String, Vec<LoraPatch>>, LoraReport)> {
    let by_kohya: HashMap<String, &str> = canonical_names.iter().filter_map(|n| Some((kohya_name(n)?, *n))).collect();
    let mut patches: HashMap<String, Vec<LoraPatch>> = HashMap::new();
    let mut report = LoraReport::default();
    for spec in specs {
        let file = open(&spec.path)?;
        let names: Vec<String> = file.tensors().into_iter().map(|(n, _)| n).collect();
        let label = spec.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Group keys by module (`<module>.lora_down.weight` → `<module>`).
        let modules: BTreeSet<&str> = names.iter().map(|n| n.split_once('.').map_or(n.as_str(), |(m, _)| m)).collect();
        for module in modules {
            let has = |suffix: &str| names.iter().any(|n| n == &format!("{module}.{suffix}"));
            let target = by_kohya.get(module);
            let reason = match (target, has("lora_down.weight") && has("lora_up.weight")) {
                (Some(_), true) if has("lora_mid.weight") => Some("LoCon mid weights are not merged"),
                (Some(_), true) => None,
                (None, _) if has("hada_w1_a") || has("lokr_w1") => Some("LoHa/LoKr modules are not merged"),
                (None, _) => Some("matches no weight of this checkpoint"),
                (Some(_), false) => Some("no lora_up/lora_down pair"),
            };
            if let Some(reason) = reason {
                report.unknown.push(format!("{label}: {module} ({reason})"));
                continue;
            }
            let load = |suffix: &str| file.load(&format!("{module}.{suffix}"), device).map_err(|e| EngineError::checkpoint(&spec.path, e.to_string()));
            let (up, down) = (load("lora_up.weight")?, load("lora_down.weight")?);
            let rank = down.dim(0).map_err(|e| EngineError::checkpoint(&spec.path, e.to_string()))?;
            let alpha = if has("alpha") {
                load("alpha")?.to_dtype(DType::F32).and_then(|a| a.flatten_all()?.to_vec1::<f32>()).map_err(|e| EngineError::checkpoint(&spec.path, e.to_string()))?[0] as f64
            } else {
                rank as f64
            };
            let scale = spec.weight as f64 * alpha / rank as f64;
            patches.entry(target.unwrap().to_string()).or_default().push(LoraPatch { up, down, scale });
            report.patched += 1;
        }
    }
    Ok((patches, report))
}

fn open(path: &Path) -> Result<MmapedSafetensors> {
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(EngineError::checkpoint(path, "LoRAs are read from .safetensors files (pickles can run code)"));
    }
    // SAFETY: mapped read-only; focal never writes model files while serving.
    unsafe { MmapedSafetensors::new(path) }.map_err(|e| EngineError::checkpoint(path, format!("not a readable safetensors file ({e})")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn kohya_names_follow_the_canonical_paths() {
        assert_eq!(
            super::kohya_name("unet.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight").as_deref(),
            Some("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q")
        );
        assert_eq!(
            super::kohya_name("clip_g.text_model.encoder.layers.3.self_attn.k_proj.weight").as_deref(),
            Some("lora_te2_text_model_encoder_layers_3_self_attn_k_proj")
        );
        assert_eq!(super::kohya_name("unet.out.0.bias"), None);
        assert_eq!(super::kohya_name("vae.decoder.conv_in.weight"), None);
    }
}
