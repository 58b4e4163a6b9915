//! Image prompts as Fooocus runs them (`extras/ip_adapter.py`): an IP-Adapter Plus model
//! (`ip-adapter-plus_sdxl_vit-h.bin`, `ip-adapter-plus-face_sdxl_vit-h.bin`) turns the CLIP vision
//! tower's penultimate hidden states into image tokens (its Resampler), then into a key and a value
//! for each of the UNet's cross-attentions (`N.to_k_ip` / `N.to_v_ip`, in file order). Fooocus's
//! negative tokens (`fooocus_ip_negative.safetensors`) go through the same projections for the
//! unconditional half. While a prompt is active (`1 − t/999 < stop`), each cross-attention appends
//! its tokens to the text's: keys × `w`, values `v − mean(v) + mean(v)·w`, `w = weight · C/1280`
//! (C: the layer's width).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::clip_vision::ClipVision;
use crate::error::{EngineError, Result};
use crate::nn::Linear;
use crate::resampler::Resampler;
use crate::unet::{Attn2Site, BlockPart, ExtraContext};

/// Where Fooocus downloads the adapters and the negative tokens from (`lllyasviel/misc`).
pub const MODELS_URL: &str = "https://huggingface.co/lllyasviel/misc/resolve/main/";
pub const PLUS_FILE: &str = "ip-adapter-plus_sdxl_vit-h.bin";
pub const PLUS_FACE_FILE: &str = "ip-adapter-plus-face_sdxl_vit-h.bin";
pub const NEGATIVE_FILE: &str = "fooocus_ip_negative.safetensors";

/// Fooocus scales a layer's image tokens by its width over this.
const CHANNEL_UNIT: f64 = 1280.0;

pub struct IpAdapter {
    resampler: Resampler,
    /// `to_k_ip`, `to_v_ip` of each cross-attention in Fooocus's numbering: `[2n]` keys, `[2n+1]` values.
    projections: Vec<Linear>,
}

impl IpAdapter {
    /// A `torch.save`d `{"image_proj": …, "ip_adapter": …}` (tencent-ailab's `.bin`) or a `.safetensors`
    /// with `image_proj.` / `ip_adapter.` prefixes.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (proj, kv) = if path.extension().is_some_and(|e| e == "safetensors") {
            let all = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| EngineError::checkpoint(path, e.to_string()))?;
            let mut proj = HashMap::new();
            let mut kv = HashMap::new();
            for (name, t) in all {
                if let Some(n) = name.strip_prefix("image_proj.") {
                    proj.insert(n.to_string(), t);
                } else if let Some(n) = name.strip_prefix("ip_adapter.") {
                    kv.insert(n.to_string(), t);
                }
            }
            (proj, kv)
        } else {
            let mut file = crate::torch_file::load(path)?;
            let mut part = |name: &str| -> Result<HashMap<String, Tensor>> {
                let v = file.take(name).ok_or_else(|| EngineError::checkpoint(path, format!("no '{name}' entry: not an IP-Adapter")))?;
                Ok(v.into_tensors().into_iter().collect())
            };
            (part("image_proj")?, part("ip_adapter")?)
        };
        Self::from_tensors(proj, kv, device).map_err(|e| EngineError::checkpoint(path, e.to_string()))
    }

    fn from_tensors(proj: HashMap<String, Tensor>, kv: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        if !proj.contains_key("latents") {
            return Err(EngineError::invalid("image_prompt", "only IP-Adapter Plus models (with a Resampler) run on this engine"));
        }
        let resampler = Resampler::new(VarBuilder::from_tensors(proj, DType::F32, device))?;
        // Fooocus's `load_state_dict_ordered`: `{i}.to_k_ip`, `{i}.to_v_ip` by ascending i.
        let mut numbers: Vec<usize> = kv.keys().filter_map(|k| k.strip_suffix(".to_k_ip.weight")).filter_map(|n| n.parse().ok()).collect();
        numbers.sort_unstable();
        let mut projections = Vec::with_capacity(2 * numbers.len());
        for n in numbers {
            for which in ["k", "v"] {
                let name = format!("{n}.to_{which}_ip.weight");
                let w = kv.get(&name).ok_or_else(|| EngineError::invalid("image_prompt", format!("the adapter lacks {name}")))?;
                projections.push(Linear::new(w.to_dtype(DType::F32)?.to_device(device)?, None));
            }
        }
        if projections.is_empty() {
            return Err(EngineError::invalid("image_prompt", "the adapter has no to_k_ip/to_v_ip weights"));
        }
        Ok(Self { resampler, projections })
    }

    /// The width the vision tower must have.
    pub fn vision_width(&self) -> Result<usize> {
        Ok(self.resampler.input_width()?)
    }

    /// Each projection of `tokens` `[1, T, D]`.
    fn project(&self, tokens: &Tensor) -> Result<Vec<Tensor>> {
        Ok(self.projections.iter().map(|p| p.forward(tokens)).collect::<candle_core::Result<_>>()?)
    }

    /// The image tokens of one 224×224 RGB image (`preprocess`: hidden_states[-2] → Resampler).
    pub fn image_tokens(&self, vision: &ClipVision, rgb: &[u8]) -> Result<Tensor> {
        if vision.width != self.vision_width()? {
            return Err(EngineError::invalid(
                "image_prompt",
                format!(
                    "the CLIP vision model is {} wide, the IP-Adapter takes {}: they do not belong together",
                    vision.width,
                    self.vision_width()?
                ),
            ));
        }
        let hidden = vision.penultimate(&vision.pixels(rgb)?)?;
        Ok(self.resampler.forward(&hidden)?)
    }

    /// The keys/values of one image prompt and of Fooocus's negative tokens (`data`, `[1, T, D]`).
    pub fn embeds(&self, tokens: &Tensor, negative: &Tensor) -> Result<ImagePromptEmbeds> {
        let negative = negative.to_dtype(DType::F32)?.to_device(tokens.device())?;
        let negative = match negative.rank() {
            2 => negative.unsqueeze(0)?,
            _ => negative,
        };
        Ok(ImagePromptEmbeds { cond: self.project(tokens)?, uncond: self.project(&negative)? })
    }
}

/// `fooocus_ip_negative.safetensors`' `data` tensor.
pub fn load_negative(path: &Path) -> Result<Tensor> {
    let mut t = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| EngineError::checkpoint(path, e.to_string()))?;
    t.remove("data").ok_or_else(|| EngineError::checkpoint(path, "no 'data' tensor: not Fooocus's negative image-prompt tokens"))
}

/// One image prompt's keys and values for every cross-attention, `[1, T, C]` each.
#[derive(Clone)]
pub struct ImagePromptEmbeds {
    pub cond: Vec<Tensor>,
    pub uncond: Vec<Tensor>,
}

/// An encoded image prompt as a job uses it: each cross-attention's keys and values already
/// weighted (they do not change between steps), for either half of CFG.
#[derive(Clone)]
pub struct ImagePrompt {
    /// `[2n]` keys, `[2n+1]` values of cross-attention `n`, `[1, T, C]` each.
    cond: Arc<Vec<Tensor>>,
    uncond: Arc<Vec<Tensor>>,
    /// Active while `1 − t/999 < stop`.
    pub stop: f64,
    pub weight: f64,
}

impl ImagePrompt {
    /// Fooocus's weighting of each layer's tokens: keys × `w`, values `v − mean(v) + mean(v)·w`,
    /// `w = weight · C/1280`.
    pub fn new(embeds: &ImagePromptEmbeds, stop: f64, weight: f64) -> Result<Self> {
        let weighted = |kv: &[Tensor]| -> candle_core::Result<Vec<Tensor>> {
            let mut out = Vec::with_capacity(kv.len());
            for pair in kv.chunks(2) {
                let [k, v] = pair else { candle_core::bail!("an IP-Adapter key without its value") };
                let w = weight * k.dim(2)? as f64 / CHANNEL_UNIT;
                let mean = v.mean_keepdim(1)?;
                out.push((k * w)?);
                out.push((v.broadcast_sub(&mean)? + (mean * w)?.broadcast_as(v.shape())?)?);
            }
            Ok(out)
        };
        Ok(Self { cond: Arc::new(weighted(&embeds.cond)?), uncond: Arc::new(weighted(&embeds.uncond)?), stop, weight })
    }
}

impl std::fmt::Debug for ImagePrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImagePrompt").field("stop", &self.stop).field("weight", &self.weight).finish_non_exhaustive()
    }
}

/// Which half of a CFG batch a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Cond,
    Uncond,
}

/// Fooocus's number of an SDXL cross-attention (`patch_model`: input 4, 5 ×2 and 7, 8 ×10, output
/// 0–2 ×10 and 3–5 ×2, middle ×10, in that order); `None` for one it does not patch.
pub fn fooocus_number(site: Attn2Site) -> Option<usize> {
    const INPUT: [(usize, usize); 4] = [(4, 2), (5, 2), (7, 10), (8, 10)];
    const OUTPUT: [(usize, usize); 6] = [(0, 10), (1, 10), (2, 10), (3, 2), (4, 2), (5, 2)];
    let find = |table: &[(usize, usize)], base: usize| -> Option<usize> {
        let mut number = base;
        for &(block, count) in table {
            if block == site.block {
                return (site.transformer < count).then_some(number + site.transformer);
            }
            number += count;
        }
        None
    };
    let inputs: usize = INPUT.iter().map(|(_, n)| n).sum();
    let outputs: usize = OUTPUT.iter().map(|(_, n)| n).sum();
    match site.part {
        BlockPart::Input => find(&INPUT, 0),
        BlockPart::Output => find(&OUTPUT, inputs),
        BlockPart::Middle => (site.block == 0 && site.transformer < 10).then_some(inputs + outputs + site.transformer),
    }
}

/// Fooocus's `current_step` of a call at timestep `t` (`1 − t/999`, in f32 as its tensor is).
pub fn current_step(t: f32) -> f64 {
    (1.0f32 - t / 999.0f32) as f64
}

/// The image prompts of one UNet call: those active at its timestep, the rows' halves.
pub struct ImagePromptCall<'a> {
    pub prompts: &'a [ImagePrompt],
    /// Fooocus's `current_step`, `1 − t/999`.
    pub progress: f64,
    pub rows: &'a [Half],
}

impl ExtraContext for ImagePromptCall<'_> {
    fn extra_kv(&self, site: Attn2Site) -> candle_core::Result<Option<(Tensor, Tensor)>> {
        let Some(n) = fooocus_number(site) else { return Ok(None) };
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for p in self.prompts.iter().filter(|p| self.progress < p.stop) {
            let pick = |i: usize| -> candle_core::Result<Option<Tensor>> {
                let rows: Option<Vec<&Tensor>> =
                    self.rows.iter().map(|h| if *h == Half::Cond { p.cond.get(i) } else { p.uncond.get(i) }).collect();
                rows.map(|r| Tensor::cat(&r, 0)).transpose()
            };
            let (Some(k), Some(v)) = (pick(2 * n)?, pick(2 * n + 1)?) else {
                candle_core::bail!("the IP-Adapter has no projection for cross-attention {n}: it is not for this UNet");
            };
            keys.push(k);
            values.push(v);
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some((Tensor::cat(&keys, 1)?, Tensor::cat(&values, 1)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_fooocus_patch_model() {
        let site = |part, block, transformer| Attn2Site { part, block, transformer };
        assert_eq!(fooocus_number(site(BlockPart::Input, 4, 0)), Some(0));
        assert_eq!(fooocus_number(site(BlockPart::Input, 5, 1)), Some(3));
        assert_eq!(fooocus_number(site(BlockPart::Input, 7, 0)), Some(4));
        assert_eq!(fooocus_number(site(BlockPart::Input, 8, 9)), Some(23));
        assert_eq!(fooocus_number(site(BlockPart::Output, 0, 0)), Some(24));
        assert_eq!(fooocus_number(site(BlockPart::Output, 5, 1)), Some(59));
        assert_eq!(fooocus_number(site(BlockPart::Middle, 0, 9)), Some(69));
        assert_eq!(fooocus_number(site(BlockPart::Input, 1, 0)), None);
        assert_eq!(fooocus_number(site(BlockPart::Input, 4, 2)), None);
    }
}
