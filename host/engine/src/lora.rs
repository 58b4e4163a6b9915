//! LoRA files merged into the checkpoint's weights as they are read:
//! `W' = W + Σ weight · (alpha / rank) · up · down` for each LoRA that patches `W`.
//!
//! Keys in the kohya / A1111 layout (`lora_unet_<LDM or diffusers path>`, `lora_te1_…`,
//! `lora_te2_…`, dots as underscores, `.lora_down/.lora_up.weight`, optional `.alpha`) and the
//! diffusers/PEFT layout (`unet.<path>.lora.down.weight` or `.lora_A/.lora_B.weight`,
//! `text_encoder(_2).…`). Keys that match no weight of the checkpoint, or use a format focal
//! does not merge (LoHa, LoKr, LoCon mid), are reported, not silently dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// The names LoRA files use for the module behind a canonical weight: kohya with LDM or
/// diffusers paths (`lora_unet_…`, `lora_te1_…`, `lora_te2_…`, dots as underscores) and the
/// dotted diffusers/PEFT form (`unet.…`, `text_encoder.…`, `text_encoder_2.…`).
fn module_names(canonical: &str, unet_ldm: &[&str]) -> Vec<String> {
    let Some(module) = canonical.strip_suffix(".weight") else { return vec![] };
    let Some((part, rest)) = module.split_once('.') else { return vec![] };
    let under = |s: &str| s.replace('.', "_");
    match part {
        "unet" => {
            let mut v = vec![format!("lora_unet_{}", under(rest))];
            if let Some(d) = crate::checkpoint::unet_ldm_to_diffusers(&format!("{rest}.weight"), unet_ldm) {
                let d = d.trim_end_matches(".weight");
                v.push(format!("lora_unet_{}", under(d)));
                v.push(format!("unet.{d}"));
            }
            v
        }
        "clip_l" => vec![format!("lora_te1_{}", under(rest)), format!("text_encoder.{rest}")],
        "clip_g" => vec![format!("lora_te2_{}", under(rest)), format!("text_encoder_2.{rest}")],
        _ => vec![],
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Part {
    Down,
    Up,
    Alpha,
    Mid,
}

/// Key suffixes of the formats focal reads, and LyCORIS ones it recognises to report.
const SUFFIXES: &[(&str, Option<Part>)] = &[
    (".lora_down.weight", Some(Part::Down)),
    (".lora_up.weight", Some(Part::Up)),
    (".lora.down.weight", Some(Part::Down)),
    (".lora.up.weight", Some(Part::Up)),
    (".lora_A.weight", Some(Part::Down)),
    (".lora_B.weight", Some(Part::Up)),
    (".alpha", Some(Part::Alpha)),
    (".lora_mid.weight", Some(Part::Mid)),
    (".hada_w1_a", None),
    (".hada_w1_b", None),
    (".hada_w2_a", None),
    (".hada_w2_b", None),
    (".lokr_w1", None),
    (".lokr_w2", None),
];

/// Read `specs` against the checkpoint's canonical names: patches by canonical name, plus the
/// report of what could not be merged.
pub fn load_patches(specs: &[LoraSpec], canonical_names: &[&str], device: &Device) -> Result<(HashMap<String, Vec<LoraPatch>>, LoraReport)> {
    let unet_ldm: Vec<&str> = canonical_names.iter().filter_map(|n| n.strip_prefix("unet.")).collect();
    let by_module: HashMap<String, &str> =
        canonical_names.iter().flat_map(|n| module_names(n, &unet_ldm).into_iter().map(move |m| (m, *n))).collect();
    let mut patches: HashMap<String, Vec<LoraPatch>> = HashMap::new();
    let mut report = LoraReport::default();
    for spec in specs {
        let file = open(&spec.path)?;
        let label = spec.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Group keys by module: `<module><suffix>`.
        let mut modules: BTreeMap<String, HashMap<Part, String>> = BTreeMap::new();
        let mut lycoris: BTreeSet<String> = BTreeSet::new();
        for (key, _) in file.tensors() {
            match SUFFIXES.iter().find(|(suffix, _)| key.ends_with(suffix)) {
                Some((suffix, Some(part))) => {
                    modules.entry(key[..key.len() - suffix.len()].to_string()).or_default().insert(*part, key.clone());
                }
                Some((suffix, None)) => {
                    lycoris.insert(key[..key.len() - suffix.len()].to_string());
                }
                None => report.unknown.push(format!("{label}: {key} (not a LoRA key focal reads)")),
            }
        }
        for module in lycoris {
            report.unknown.push(format!("{label}: {module} (LoHa/LoKr modules are not merged)"));
        }
        for (module, parts) in modules {
            let reason = match (by_module.get(&module), parts.contains_key(&Part::Down) && parts.contains_key(&Part::Up)) {
                (Some(_), true) if parts.contains_key(&Part::Mid) => Some("LoCon mid weights are not merged"),
                (Some(_), true) => None,
                (None, _) => Some("matches no weight of this checkpoint"),
                (Some(_), false) => Some("no up/down pair"),
            };
            if let Some(reason) = reason {
                report.unknown.push(format!("{label}: {module} ({reason})"));
                continue;
            }
            let load = |part: Part| file.load(&parts[&part], device).map_err(|e| EngineError::checkpoint(&spec.path, e.to_string()));
            let (up, down) = (load(Part::Up)?, load(Part::Down)?);
            let rank = down.dim(0).map_err(|e| EngineError::checkpoint(&spec.path, e.to_string()))?;
            let alpha = match parts.get(&Part::Alpha) {
                Some(_) => load(Part::Alpha)?
                    .to_dtype(DType::F32)
                    .and_then(|a| a.flatten_all()?.to_vec1::<f32>())
                    .map_err(|e| EngineError::checkpoint(&spec.path, e.to_string()))?[0] as f64,
                None => rank as f64,
            };
            let scale = spec.weight as f64 * alpha / rank as f64;
            patches.entry(by_module[&module].to_string()).or_default().push(LoraPatch { up, down, scale });
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
    fn module_names_cover_kohya_and_diffusers_layouts() {
        let names = super::module_names("clip_g.text_model.encoder.layers.3.self_attn.k_proj.weight", &[]);
        assert_eq!(names, ["lora_te2_text_model_encoder_layers_3_self_attn_k_proj", "text_encoder_2.text_model.encoder.layers.3.self_attn.k_proj"]);
        assert!(super::module_names("unet.out.0.bias", &[]).is_empty());
        assert!(super::module_names("vae.decoder.conv_in.weight", &[]).is_empty());
    }
}
