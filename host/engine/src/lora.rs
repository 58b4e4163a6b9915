//! LoRA files merged into the checkpoint's weights as they are read:
//! `W' = W + Σ weight · (alpha / dim) · ΔW` for each LoRA module that patches `W`, with ΔW as
//! ComfyUI's `calculate_weight` (which Fooocus uses) builds it:
//! * LoRA / LoCon: `up · down` (`.lora_down/.lora_up.weight`; with `.lora_mid.weight`, the
//!   Tucker core between them), `dim` = rank;
//! * LoHa: `(w1_a · w1_b) ⊙ (w2_a · w2_b)` (`.hada_*`), `dim` = rows of `w1_b`;
//! * LoKr: `w1 ⊗ w2` (Kronecker; each factor whole, `.lokr_w1`, or as `_a · _b`), `dim` = rows of
//!   the factorised `_b`, and alpha is ignored (scale 1) when neither factor is factorised.
//!
//! Without `.alpha` the scale is 1.
//!
//! Keys in the kohya / A1111 layout (`lora_unet_<LDM or diffusers path>`, `lora_te1_…`,
//! `lora_te2_…`, dots as underscores) and the diffusers/PEFT layout (`unet.<path>.lora.down.weight`
//! or `.lora_A/.lora_B.weight`, `text_encoder(_2).…`). Keys that match no weight of the checkpoint,
//! or modules focal cannot merge (LoHa/LoKr Tucker cores, incomplete sets), are reported, not
//! silently dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{EngineError, Result};
use crate::torch_file;

/// One LoRA to merge, with its strength.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub weight: f32,
}

/// The update of one weight, before scaling.
#[derive(Clone)]
pub enum Update {
    /// `up · down`; with `mid` (LoCon's Tucker core `[rank, rank, kh, kw]`) between them.
    LowRank { up: Tensor, down: Tensor, mid: Option<Tensor> },
    /// LoHa: `(w1a · w1b) ⊙ (w2a · w2b)`.
    Hadamard { w1a: Tensor, w1b: Tensor, w2a: Tensor, w2b: Tensor },
    /// LoKr: `w1 ⊗ w2`.
    Kronecker { w1: Tensor, w2: Tensor },
    /// A whole update quantised to bytes (Fooocus's inpaint patches, patch type "fooocus"):
    /// `q / 255 · (max − min) + min`, `min`/`max` broadcast over `q`.
    Quantised { q: Tensor, min: Tensor, max: Tensor },
}

/// One module's update of one weight.
#[derive(Clone)]
pub struct LoraPatch {
    pub update: Update,
    /// `weight · alpha / dim` (see the module docs).
    pub scale: f64,
}

fn f32_2d(t: &Tensor) -> candle_core::Result<Tensor> {
    let rows = t.dim(0)?;
    t.to_dtype(DType::F32)?.reshape((rows, t.elem_count() / rows))
}

impl LoraPatch {
    /// `scale · ΔW`, shaped like the weight it patches (linear or conv).
    pub fn delta(&self, shape: &[usize]) -> candle_core::Result<Tensor> {
        let delta = match &self.update {
            Update::LowRank { up, down, mid: None } => f32_2d(up)?.matmul(&f32_2d(down)?)?,
            Update::LowRank { up, down, mid: Some(mid) } => {
                // down `[rank, in, 1, 1]`, mid `[rank, rank, kh, kw]`: the core applied after down
                // gives `[rank, in·kh·kw]` (ComfyUI's transpose-flatten-mm-transpose).
                let (rank, inner) = (down.dim(0)?, down.dim(1)?);
                let (kh, kw) = (mid.dim(2)?, mid.dim(3)?);
                let down_t = f32_2d(down)?.t()?; // [in, rank]
                let mid_t = mid.to_dtype(DType::F32)?.transpose(0, 1)?.reshape((mid.dim(1)?, mid.dim(0)? * kh * kw))?; // [rank, rank·kh·kw]
                let combined = down_t.matmul(&mid_t)?.reshape((inner, rank, kh, kw))?.transpose(0, 1)?.reshape((rank, inner * kh * kw))?;
                f32_2d(up)?.matmul(&combined)?
            }
            Update::Hadamard { w1a, w1b, w2a, w2b } => (f32_2d(w1a)?.matmul(&f32_2d(w1b)?)? * f32_2d(w2a)?.matmul(&f32_2d(w2b)?)?)?,
            Update::Kronecker { w1, w2 } => kronecker(w1, w2)?,
            Update::Quantised { q, min, max } => {
                let (min, max) = (min.to_dtype(DType::F32)?, max.to_dtype(DType::F32)?);
                (q.to_dtype(DType::F32)? / 255.0)?.broadcast_mul(&(max - &min)?)?.broadcast_add(&min)?
            }
        };
        (delta * self.scale)?.reshape(shape)
    }

    /// How many elements ΔW has (what the patched weight must hold).
    pub fn delta_len(&self) -> usize {
        let cols = |t: &Tensor| t.elem_count() / t.dims().first().copied().unwrap_or(1).max(1);
        let dim = |t: &Tensor, i: usize| t.dims().get(i).copied().unwrap_or(1);
        match &self.update {
            Update::LowRank { up, down, mid: None } => dim(up, 0) * cols(down),
            Update::LowRank { up, down, mid: Some(mid) } => dim(up, 0) * dim(down, 1) * dim(mid, 2) * dim(mid, 3),
            Update::Hadamard { w1a, w1b, .. } => dim(w1a, 0) * cols(w1b),
            Update::Kronecker { w1, w2 } => w1.elem_count() * w2.elem_count(),
            Update::Quantised { q, .. } => q.elem_count(),
        }
    }
}

/// `torch.kron` of a 2-D `a` `[m, n]` (or `[m, n, 1, 1]`) and `b` `[p, q, …]`: `[m·p, n·q, …]`.
fn kronecker(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (m, n) = (a.dim(0)?, a.dim(1)?);
    let (p, q) = (b.dim(0)?, b.dim(1)?);
    let rest: Vec<usize> = b.dims()[2..].to_vec();
    let k: usize = rest.iter().product();
    let a = a.to_dtype(DType::F32)?.reshape((m, 1, n, 1, 1))?;
    let b = b.to_dtype(DType::F32)?.reshape((1, p, 1, q, k))?;
    let mut shape = vec![m * p, n * q];
    shape.extend(rest);
    a.broadcast_mul(&b)?.reshape(shape)
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
            if let Some(d) = crate::keymap::unet_ldm_to_diffusers(&format!("{rest}.weight"), unet_ldm) {
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

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
enum Part {
    Down,
    Up,
    Alpha,
    Mid,
    HadaW1a,
    HadaW1b,
    HadaW2a,
    HadaW2b,
    HadaT1,
    HadaT2,
    LokrW1,
    LokrW1a,
    LokrW1b,
    LokrW2,
    LokrW2a,
    LokrW2b,
    LokrT2,
}

/// Key suffixes of the LoRA and LyCORIS formats, and the part each names.
const SUFFIXES: &[(&str, Part)] = &[
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".lora.down.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".alpha", Part::Alpha),
    (".lora_mid.weight", Part::Mid),
    (".hada_w1_a", Part::HadaW1a),
    (".hada_w1_b", Part::HadaW1b),
    (".hada_w2_a", Part::HadaW2a),
    (".hada_w2_b", Part::HadaW2b),
    (".hada_t1", Part::HadaT1),
    (".hada_t2", Part::HadaT2),
    (".lokr_w1_a", Part::LokrW1a),
    (".lokr_w1_b", Part::LokrW1b),
    (".lokr_w1", Part::LokrW1),
    (".lokr_w2_a", Part::LokrW2a),
    (".lokr_w2_b", Part::LokrW2b),
    (".lokr_w2", Part::LokrW2),
    (".lokr_t2", Part::LokrT2),
];

/// Which update a module's parts describe, or why it cannot be merged.
fn update_kind(parts: &HashMap<Part, String>) -> std::result::Result<&'static str, &'static str> {
    let has = |p: Part| parts.contains_key(&p);
    if has(Part::HadaT1) || has(Part::HadaT2) || has(Part::LokrT2) {
        return Err("LoHa/LoKr Tucker cores are not merged");
    }
    if has(Part::Down) && has(Part::Up) {
        Ok("lora")
    } else if [Part::HadaW1a, Part::HadaW1b, Part::HadaW2a, Part::HadaW2b].iter().all(|&p| has(p)) {
        Ok("loha")
    } else if (has(Part::LokrW1) || has(Part::LokrW1a) && has(Part::LokrW1b))
        && (has(Part::LokrW2) || has(Part::LokrW2a) && has(Part::LokrW2b))
    {
        Ok("lokr")
    } else {
        Err("an incomplete set of LoRA/LoHa/LoKr weights")
    }
}

/// Read `specs` against the checkpoint's canonical names: patches by canonical name, plus the
/// report of what could not be merged. `shape_of` gives a weight's shape: an update of another
/// size is reported and left out, as Fooocus does ("WEIGHT NOT MERGED"), so an SDXL LoRA on a
/// refiner of another architecture merges what fits.
#[tracing::instrument(name = "engine.load_loras", skip_all, fields(loras = specs.len()))]
pub fn load_patches(
    specs: &[LoraSpec],
    canonical_names: &[&str],
    shape_of: &dyn Fn(&str) -> Option<Vec<usize>>,
    device: &Device,
) -> Result<(HashMap<String, Vec<LoraPatch>>, LoraReport)> {
    let unet_ldm: Vec<&str> = canonical_names.iter().filter_map(|n| n.strip_prefix("unet.")).collect();
    let by_module: HashMap<String, &str> =
        canonical_names.iter().flat_map(|n| module_names(n, &unet_ldm).into_iter().map(move |m| (m, *n))).collect();
    let mut patches: HashMap<String, Vec<LoraPatch>> = HashMap::new();
    let mut report = LoraReport::default();
    for spec in specs {
        if is_fooocus_patch(&spec.path) {
            load_fooocus_patch(spec, canonical_names, shape_of, &mut patches, &mut report)?;
            continue;
        }
        let file = open(&spec.path)?;
        let label = spec.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Group keys by module: `<module><suffix>`.
        let mut modules: BTreeMap<String, HashMap<Part, String>> = BTreeMap::new();
        for (key, _) in file.tensors() {
            match SUFFIXES.iter().find(|(suffix, _)| key.ends_with(suffix)) {
                Some((suffix, part)) => {
                    modules.entry(key[..key.len() - suffix.len()].to_string()).or_default().insert(*part, key.clone());
                }
                None => report.unknown.push(format!("{label}: {key} (not a LoRA key focal reads)")),
            }
        }
        for (module, parts) in modules {
            let kind = match (by_module.get(&module), update_kind(&parts)) {
                (None, _) => Err("matches no weight of this checkpoint"),
                (Some(_), kind) => kind,
            };
            let kind = match kind {
                Ok(kind) => kind,
                Err(reason) => {
                    report.unknown.push(format!("{label}: {module} ({reason})"));
                    continue;
                }
            };
            let bad = |e: candle_core::Error| EngineError::checkpoint(&spec.path, e.to_string());
            let load = |part: Part| file.load(&parts[&part], device).map_err(bad);
            let opt = |part: Part| parts.contains_key(&part).then(|| load(part)).transpose();
            let alpha = match opt(Part::Alpha)? {
                Some(a) => Some(a.to_dtype(DType::F32).and_then(|a| a.flatten_all()?.to_vec1::<f32>()).map_err(bad)?[0] as f64),
                None => None,
            };
            // ComfyUI: alpha / dim when both exist, else a scale of 1.
            let ratio = |dim: Option<usize>| match (alpha, dim) {
                (Some(a), Some(d)) => a / d as f64,
                _ => 1.0,
            };
            let (update, ratio) = match kind {
                "lora" => {
                    let (up, down) = (load(Part::Up)?, load(Part::Down)?);
                    let rank = down.dim(0).map_err(bad)?;
                    (Update::LowRank { up, down, mid: opt(Part::Mid)? }, ratio(Some(rank)))
                }
                "loha" => {
                    let w1b = load(Part::HadaW1b)?;
                    let dim = w1b.dim(0).map_err(bad)?;
                    (
                        Update::Hadamard { w1a: load(Part::HadaW1a)?, w1b, w2a: load(Part::HadaW2a)?, w2b: load(Part::HadaW2b)? },
                        ratio(Some(dim)),
                    )
                }
                _ => {
                    // Each factor whole or as a product; the factorised one sets `dim`.
                    let mut dim = None;
                    let mut factor = |whole: Part, a: Part, b: Part| -> Result<Tensor> {
                        match opt(whole)? {
                            Some(w) => Ok(w),
                            None => {
                                let b = load(b)?;
                                dim = Some(b.dim(0).map_err(bad)?);
                                f32_2d(&load(a)?).and_then(|a| a.matmul(&f32_2d(&b)?)).map_err(bad)
                            }
                        }
                    };
                    let w1 = factor(Part::LokrW1, Part::LokrW1a, Part::LokrW1b)?;
                    let w2 = factor(Part::LokrW2, Part::LokrW2a, Part::LokrW2b)?;
                    (Update::Kronecker { w1, w2 }, ratio(dim))
                }
            };
            let target = by_module[&module];
            let patch = LoraPatch { update, scale: spec.weight as f64 * ratio };
            if let Some(shape) = shape_of(target) {
                if shape.iter().product::<usize>() != patch.delta_len() {
                    report.unknown.push(format!("{label}: {module} (its update does not fit the weight's shape {shape:?}; not merged)"));
                    continue;
                }
            }
            patches.entry(target.to_string()).or_default().push(patch);
            report.patched += 1;
        }
    }
    Ok((patches, report))
}

/// Fooocus's inpaint patches (`inpaint_v26.fooocus.patch`, …) are torch files.
fn is_fooocus_patch(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("patch")
}

/// A Fooocus patch: a dict from the UNet's state-dict keys (`diffusion_model.…`, weights and
/// biases) to `(uint8 q, min, max)`, merged at the spec's weight (ComfyUI's alpha).
fn load_fooocus_patch(
    spec: &LoraSpec,
    canonical_names: &[&str],
    shape_of: &dyn Fn(&str) -> Option<Vec<usize>>,
    patches: &mut HashMap<String, Vec<LoraPatch>>,
    report: &mut LoraReport,
) -> Result<()> {
    let label = spec.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let torch_file::Value::Dict(entries) = torch_file::load(&spec.path)? else {
        return Err(EngineError::checkpoint(&spec.path, "not a dict of weight updates (not a Fooocus patch)"));
    };
    for (key, value) in entries {
        let torch_file::Value::Str(key) = key else { continue };
        let target = key.strip_prefix("diffusion_model.").map(|rest| format!("unet.{rest}"));
        let Some(target) = target.filter(|t| canonical_names.contains(&t.as_str())) else {
            report.unknown.push(format!("{label}: {key} (matches no weight of this checkpoint)"));
            continue;
        };
        let update = match value {
            torch_file::Value::List(parts) => match <[torch_file::Value; 3]>::try_from(parts) {
                Ok([torch_file::Value::Tensor(q), torch_file::Value::Tensor(min), torch_file::Value::Tensor(max)]) => {
                    Update::Quantised { q, min, max }
                }
                _ => {
                    report.unknown.push(format!("{label}: {key} (not a (q, min, max) triple)"));
                    continue;
                }
            },
            _ => {
                report.unknown.push(format!("{label}: {key} (not a (q, min, max) triple)"));
                continue;
            }
        };
        let patch = LoraPatch { update, scale: spec.weight as f64 };
        if shape_of(&target).is_some_and(|shape| shape.iter().product::<usize>() != patch.delta_len()) {
            report.unknown.push(format!("{label}: {key} (its update does not fit the weight's shape; not merged)"));
            continue;
        }
        patches.entry(target).or_default().push(patch);
        report.patched += 1;
    }
    Ok(())
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
        assert_eq!(
            names,
            ["lora_te2_text_model_encoder_layers_3_self_attn_k_proj", "text_encoder_2.text_model.encoder.layers.3.self_attn.k_proj"]
        );
        assert!(super::module_names("unet.out.0.bias", &[]).is_empty());
        assert!(super::module_names("vae.decoder.conv_in.weight", &[]).is_empty());
    }
}
