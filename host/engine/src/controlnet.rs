//! ControlNets as Fooocus runs them for PyraCanny and CPDS: SAI's Control-LoRA format
//! (`control-lora-canny-rank128.safetensors`, `fooocus_xl_cpds_128.safetensors`; ComfyUI's
//! `ControlLora`), i.e. the base model's UNet encoder with low-rank changes (`X.up`·`X.down` added to
//! a weight, biases and norms replaced) plus its own hint encoder and zero convolutions. The forward
//! is Fooocus's `patched_cldm_forward`: the hint's features join after the first input block, each
//! input block and the middle block give one residual through a 1×1 conv, and Fooocus's softness
//! scales residual `i` by `1 − s·(1 − i/9)`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::checkpoint::Checkpoint;
use crate::error::{EngineError, Result};
use crate::nn::{conv2d, out_dim, silu, timestep_embedding, Conv2d, Mlp2};
use crate::schedule::ModelSampling;
use crate::unet::{has_block, Block, BlockPart, ControlResiduals, Heads};

/// Where Fooocus downloads its control-LoRAs from (`lllyasviel/misc`), and their names.
pub const MODELS_URL: &str = "https://huggingface.co/lllyasviel/misc/resolve/main/";
pub const CANNY_FILE: &str = "control-lora-canny-rank128.safetensors";
pub const CPDS_FILE: &str = "fooocus_xl_cpds_128.safetensors";

/// The UNet parts a ControlNet copies.
const ENCODER: [&str; 4] = ["time_embed.", "label_emb.", "input_blocks.", "middle_block."];
/// `input_hint_block` convolutions: (index, stride); SiLU between them.
const HINT_CONVS: [(usize, usize); 8] = [(0, 1), (2, 1), (4, 2), (6, 1), (8, 2), (10, 1), (12, 2), (14, 1)];

pub struct ControlNet {
    hint: Vec<Conv2d>,
    time_embed: Mlp2,
    label_emb: Option<Mlp2>,
    input_blocks: Vec<Block>,
    zero_convs: Vec<Conv2d>,
    middle_block: Block,
    middle_out: Conv2d,
    model_channels: usize,
}

impl ControlNet {
    /// A control-LoRA over `base` (the checkpoint the job samples with, LoRAs merged as read).
    pub fn load_control_lora(path: &Path, base: &Checkpoint, dtype: DType, device: &Device) -> Result<Self> {
        let fail = |m: String| EngineError::checkpoint(path, m);
        let control = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| fail(e.to_string()))?;
        if !control.contains_key("lora_controlnet") {
            return Err(fail("not a Control-LoRA (no lora_controlnet entry); full ControlNet files do not run on this engine yet".into()));
        }
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for name in base.names() {
            let Some(key) = name.strip_prefix("unet.") else { continue };
            if ENCODER.iter().any(|p| key.starts_with(p)) {
                tensors.insert(key.to_string(), base.tensor(name, DType::F32, device).map_err(|e| fail(e.to_string()))?);
            }
        }
        for (key, t) in &control {
            if key == "lora_controlnet" || key.ends_with(".up") || key.ends_with(".down") {
                continue;
            }
            tensors.insert(key.clone(), t.to_dtype(DType::F32)?.to_device(device)?);
        }
        for (key, up) in control.iter().filter_map(|(k, t)| Some((k.strip_suffix(".up")?, t))) {
            let down = control.get(&format!("{key}.down")).ok_or_else(|| fail(format!("{key}.up has no {key}.down")))?;
            let weight = format!("{key}.weight");
            let w = tensors.get(&weight).ok_or_else(|| fail(format!("{key}.up changes {weight}, which the base model does not have")))?;
            let to_f32 = |t: &Tensor| -> candle_core::Result<Tensor> { t.to_dtype(DType::F32)?.to_device(device)?.flatten_from(1) };
            let delta = to_f32(up)?.matmul(&to_f32(down)?)?;
            if delta.elem_count() != w.elem_count() {
                return Err(fail(format!(
                    "{key}.up·down has {} values, the base weight {}: not for this model",
                    delta.elem_count(),
                    w.elem_count()
                )));
            }
            let merged = (w + delta.reshape(w.shape())?)?;
            tensors.insert(weight, merged);
        }
        Self::new(VarBuilder::from_tensors(tensors, dtype, device)).map_err(|e| fail(format!("cannot build the ControlNet: {e}")))
    }

    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let has_adm = vb.contains_tensor("label_emb.0.0.weight");
        let heads = if has_adm { Heads::Width(64) } else { Heads::Count(8) };
        let n_in = (0..).take_while(|i| has_block(&vb.pp("input_blocks").pp(i))).count();
        Ok(Self {
            hint: HINT_CONVS
                .iter()
                .map(|&(i, stride)| conv2d(&vb.pp("input_hint_block").pp(i), stride, 1))
                .collect::<candle_core::Result<_>>()?,
            time_embed: Mlp2::new(&vb.pp("time_embed.0"), &vb.pp("time_embed.2"))?,
            label_emb: if has_adm { Some(Mlp2::new(&vb.pp("label_emb.0.0"), &vb.pp("label_emb.0.2"))?) } else { None },
            input_blocks: (0..n_in)
                .map(|i| Block::new(vb.pp("input_blocks").pp(i), heads, BlockPart::Input, i))
                .collect::<candle_core::Result<_>>()?,
            zero_convs: (0..n_in).map(|i| conv2d(&vb.pp("zero_convs").pp(i).pp(0), 1, 0)).collect::<candle_core::Result<_>>()?,
            middle_block: Block::new(vb.pp("middle_block"), heads, BlockPart::Middle, 0)?,
            middle_out: conv2d(&vb.pp("middle_block_out.0"), 1, 0)?,
            model_channels: out_dim(&vb.pp("input_blocks.0.0"))?,
        })
    }

    /// The residuals for one UNet call: `x` the scaled model input, `hint` `[1, 3, H, W]` in [0, 1]
    /// at the image size, before softness and strength.
    pub fn forward(&self, x: &Tensor, hint: &Tensor, t: f32, context: &Tensor, y: &Tensor) -> Result<Vec<Tensor>> {
        let dtype = x.dtype();
        let t_emb = timestep_embedding(&vec![t; x.dim(0)?], self.model_channels, x.device())?.to_dtype(dtype)?;
        let mut emb = self.time_embed.forward(&t_emb)?;
        let mut guided = hint.to_dtype(dtype)?;
        for (i, conv) in self.hint.iter().enumerate() {
            guided = conv.forward(&guided)?;
            if i + 1 < self.hint.len() {
                guided = silu(&guided)?;
            }
        }
        if let Some(label) = &self.label_emb {
            emb = (emb + label.forward(&y.to_dtype(dtype)?)?)?;
        }
        let context = context.to_dtype(dtype)?;
        let mut outs = Vec::with_capacity(self.input_blocks.len() + 1);
        let mut h = x.clone();
        for (i, (block, zero)) in self.input_blocks.iter().zip(&self.zero_convs).enumerate() {
            h = block.forward(&h, &emb, &context, None, None)?;
            if i == 0 {
                h = h.broadcast_add(&guided)?;
            }
            outs.push(zero.forward(&h)?);
        }
        h = self.middle_block.forward(&h, &emb, &context, None, None)?;
        outs.push(self.middle_out.forward(&h)?);
        Ok(outs)
    }
}

/// One ControlNet as a job applies it.
#[derive(Clone)]
pub struct Control {
    pub net: Arc<ControlNet>,
    /// `[1, 3, H, W]` in [0, 1], the generation's size.
    pub hint: Tensor,
    pub strength: f64,
    /// Active while σ is at least σ at this fraction of the schedule (ComfyUI's `percent_to_sigma`).
    pub stop: f64,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("strength", &self.strength).field("stop", &self.stop).finish_non_exhaustive()
    }
}

/// ComfyUI's `percent_to_sigma` (f32 as its tensor is): σ at timestep `(1 − p)·999`.
pub fn percent_to_sigma(sampling: &ModelSampling, percent: f64) -> f32 {
    if percent <= 0.0 {
        return 999_999_999.9;
    }
    if percent >= 1.0 {
        return 0.0;
    }
    sampling.sigma(((1.0 - percent) * 999.0) as f32)
}

/// The summed residuals of the controls active at σ, softened and scaled as Fooocus does; `None`
/// when none is.
#[allow(clippy::too_many_arguments)] // one UNet call's inputs
pub fn residuals(
    controls: &[Control],
    sampling: &ModelSampling,
    softness: f64,
    x: &Tensor,
    sigma: f32,
    t: f32,
    context: &Tensor,
    y: &Tensor,
) -> Result<Option<ControlResiduals>> {
    let mut sum: Option<Vec<Tensor>> = None;
    for c in controls {
        // Inactive when σ > σ(start = 0) or σ < σ(stop).
        if sigma > percent_to_sigma(sampling, 0.0) || sigma < percent_to_sigma(sampling, c.stop) {
            continue;
        }
        let outs = c.net.forward(x, &c.hint, t, context, y)?;
        let scaled = outs
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                // Fooocus softens the first ten (SDXL's nine input blocks and the middle).
                let o = if softness > 0.0 && i < 10 { (o * (1.0 - softness * (1.0 - i as f64 / 9.0)))? } else { o };
                o * c.strength
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        sum = Some(match sum {
            None => scaled,
            Some(prev) => scaled.iter().zip(&prev).map(|(a, b)| a + b).collect::<candle_core::Result<_>>()?,
        });
    }
    Ok(sum.map(|mut outs| {
        let middle = outs.pop().expect("a middle residual");
        ControlResiduals { skips: outs, middle }
    }))
}
