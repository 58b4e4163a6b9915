//! The SDXL UNet (LDM `openaimodel` layout, ComfyUI's naming), built by walking the
//! checkpoint: levels, res blocks, transformer depths, channels and context width are all read
//! from the tensors, as ComfyUI's model detection does.

use std::sync::Mutex;

use candle_core::{Module, Result, Tensor, TensorId};
use candle_nn::VarBuilder;

use crate::freeu::FreeU;
use crate::geglu::geglu_of;
use crate::nn::{
    attention, conv2d, group_norm, layer_norm, linear, out_dim, silu, timestep_embedding, Conv2d, GroupNorm, LayerNorm, Linear, Mlp2,
};

/// How attention splits into heads: SDXL (and its refiner) uses 64-dimensional heads at every
/// level, SD1.5 eight heads whatever the width (ComfyUI `num_head_channels` / `num_heads`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heads {
    Width(usize),
    Count(usize),
}

impl Heads {
    fn split(self, inner: usize) -> usize {
        match self {
            Heads::Width(w) => (inner / w).max(1),
            Heads::Count(n) => n,
        }
    }
}

struct ResBlock {
    norm_in: GroupNorm,
    conv_in: Conv2d,
    emb_proj: Linear,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlock {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm_in: group_norm(&vb.pp("in_layers.0"), 32, 1e-5)?,
            conv_in: conv2d(&vb.pp("in_layers.2"), 1, 1)?,
            emb_proj: linear(&vb.pp("emb_layers.1"))?,
            norm_out: group_norm(&vb.pp("out_layers.0"), 32, 1e-5)?,
            conv_out: conv2d(&vb.pp("out_layers.3"), 1, 1)?,
            skip: if vb.contains_tensor("skip_connection.weight") { Some(conv2d(&vb.pp("skip_connection"), 1, 0)?) } else { None },
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.conv_in.forward_normalized(&self.norm_in, x)?;
        let e = self.emb_proj.forward(&silu(emb)?)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = h.broadcast_add(&e)?;
        let h = self.conv_out.forward_normalized(&self.norm_out, &h)?;
        match &self.skip {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

struct CrossAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    /// The keys and values of the last context seen, by tensor id: a sampler passes the same
    /// context tensor at every step, so they are computed once per image instead of once per step
    /// (the same operations on the same inputs: the results are identical).
    context_kv: Mutex<Option<(TensorId, Tensor, Tensor)>>,
}

impl CrossAttention {
    fn new(vb: VarBuilder, heads: Heads) -> Result<Self> {
        let q = linear(&vb.pp("to_q"))?;
        let inner = q.weight().dim(0)?;
        Ok(Self {
            k: linear(&vb.pp("to_k"))?,
            v: linear(&vb.pp("to_v"))?,
            out: linear(&vb.pp("to_out.0"))?,
            heads: heads.split(inner),
            q,
            context_kv: Mutex::new(None),
        })
    }

    fn context_kv(&self, context: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut slot = self.context_kv.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((id, k, v)) = slot.as_ref() {
            if *id == context.id() {
                return Ok((k.clone(), v.clone()));
            }
        }
        let (k, v) = (self.k.forward(context)?, self.v.forward(context)?);
        *slot = Some((context.id(), k.clone(), v.clone()));
        Ok((k, v))
    }

    /// `extra`: keys and values appended to the context's (an image prompt's tokens).
    fn forward(&self, x: &Tensor, context: &Tensor, extra: Option<(Tensor, Tensor)>) -> Result<Tensor> {
        let (mut k, mut v) = self.context_kv(context)?;
        if let Some((ek, ev)) = extra {
            k = Tensor::cat(&[&k, &ek.to_dtype(k.dtype())?], 1)?;
            v = Tensor::cat(&[&v, &ev.to_dtype(v.dtype())?], 1)?;
        }
        let a = attention(&self.q.forward(x)?, &k, &v, self.heads, None)?;
        self.out.forward(&a)
    }
}

/// Which part of the UNet a block is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockPart {
    Input,
    Middle,
    Output,
}

/// Where a cross-attention sits: ComfyUI's `(block kind, block index, transformer index)`, the key
/// its `attn2` patches are registered under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attn2Site {
    pub part: BlockPart,
    pub block: usize,
    pub transformer: usize,
}

/// Keys and values a UNet call appends to a cross-attention's context (IP-Adapter image tokens),
/// already projected for that layer and batched like the call: `[B, T, C]` each.
pub trait ExtraContext: Sync {
    fn extra_kv(&self, site: Attn2Site) -> Result<Option<(Tensor, Tensor)>>;
}

struct TransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
    site: Attn2Site,
}

impl TransformerBlock {
    fn new(vb: VarBuilder, heads: Heads, site: Attn2Site) -> Result<Self> {
        Ok(Self {
            site,
            norm1: layer_norm(&vb.pp("norm1"), 1e-5)?,
            attn1: CrossAttention::new(vb.pp("attn1"), heads)?,
            norm2: layer_norm(&vb.pp("norm2"), 1e-5)?,
            attn2: CrossAttention::new(vb.pp("attn2"), heads)?,
            norm3: layer_norm(&vb.pp("norm3"), 1e-5)?,
            ff_in: linear(&vb.pp("ff.net.0.proj"))?,
            ff_out: linear(&vb.pp("ff.net.2"))?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor, extra: Option<&dyn ExtraContext>) -> Result<Tensor> {
        let h = self.norm1.forward(x)?;
        let x = (x + self.attn1.forward(&h, &h, None)?)?;
        let extra = extra.map(|e| e.extra_kv(self.site)).transpose()?.flatten();
        let x = (&x + self.attn2.forward(&self.norm2.forward(&x)?, context, extra)?)?;
        // GEGLU: the projection holds [value | gate].
        let h = geglu_of(&self.ff_in, &self.norm3.forward(&x)?)?;
        x + self.ff_out.forward(&h)?
    }
}

enum Proj {
    Linear(Linear),
    Conv(Conv2d),
}

struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<TransformerBlock>,
    proj_out: Proj,
}

impl SpatialTransformer {
    fn new(vb: VarBuilder, heads: Heads, part: BlockPart, block: usize) -> Result<Self> {
        let linear_proj = vb.get_unchecked("proj_in.weight")?.rank() == 2;
        let proj = |name: &str| -> Result<Proj> {
            if linear_proj {
                Ok(Proj::Linear(linear(&vb.pp(name))?))
            } else {
                Ok(Proj::Conv(conv2d(&vb.pp(name), 1, 0)?))
            }
        };
        let depth = (0..).take_while(|k| vb.contains_tensor(&format!("transformer_blocks.{k}.norm1.weight"))).count();
        Ok(Self {
            norm: group_norm(&vb.pp("norm"), 32, 1e-6)?,
            proj_in: proj("proj_in")?,
            blocks: (0..depth)
                .map(|k| TransformerBlock::new(vb.pp(format!("transformer_blocks.{k}")), heads, Attn2Site { part, block, transformer: k }))
                .collect::<Result<_>>()?,
            proj_out: proj("proj_out")?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor, extra: Option<&dyn ExtraContext>) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let to_tokens = |t: &Tensor| -> Result<Tensor> {
            let c = t.dim(1)?;
            t.permute((0, 2, 3, 1))?.reshape((b, h * w, c))
        };
        let mut t = match &self.proj_in {
            Proj::Linear(l) => l.forward(&to_tokens(&normed)?)?,
            Proj::Conv(c) => to_tokens(&c.forward(&normed)?)?,
        };
        for block in &self.blocks {
            t = block.forward(&t, context, extra)?;
        }
        let out = match &self.proj_out {
            Proj::Linear(l) => {
                let t = l.forward(&t)?;
                let c = t.dim(2)?;
                t.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?
            }
            Proj::Conv(conv) => {
                let c = t.dim(2)?;
                conv.forward(&t.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()?)?
            }
        };
        out + x
    }
}

enum Layer {
    Conv(Conv2d),
    Res(ResBlock),
    Attn(SpatialTransformer),
    Down(Conv2d),
    Up(Conv2d),
}

/// One `input_blocks.N` / `middle_block` / `output_blocks.N` entry: a sequence of layers.
pub(crate) struct Block(Vec<Layer>);

impl Block {
    /// Reads `prefix.0`, `prefix.1`, … until no sub-module is found.
    pub(crate) fn new(vb: VarBuilder, heads: Heads, part: BlockPart, index: usize) -> Result<Self> {
        let mut layers = Vec::new();
        for i in 0.. {
            let l = vb.pp(i);
            let layer = if l.contains_tensor("in_layers.0.weight") {
                Layer::Res(ResBlock::new(l)?)
            } else if l.contains_tensor("proj_in.weight") {
                Layer::Attn(SpatialTransformer::new(l, heads, part, index)?)
            } else if l.contains_tensor("op.weight") {
                Layer::Down(conv2d(&l.pp("op"), 2, 1)?)
            } else if l.contains_tensor("conv.weight") {
                Layer::Up(conv2d(&l.pp("conv"), 1, 1)?)
            } else if l.contains_tensor("weight") {
                Layer::Conv(conv2d(&l, 1, 1)?)
            } else {
                break;
            };
            layers.push(layer);
        }
        Ok(Self(layers))
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        emb: &Tensor,
        context: &Tensor,
        up_to: Option<(usize, usize)>,
        extra: Option<&dyn ExtraContext>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.0 {
            x = match layer {
                Layer::Conv(c) | Layer::Down(c) => c.forward(&x)?,
                Layer::Res(r) => r.forward(&x, emb)?,
                Layer::Attn(a) => a.forward(&x, context, extra)?,
                Layer::Up(c) => {
                    let (_, _, h, w) = x.dims4()?;
                    match up_to.unwrap_or((h * 2, w * 2)) {
                        (th, tw) if (th, tw) == (h * 2, w * 2) => c.forward_upsampled(&x)?,
                        (th, tw) => c.forward(&x.upsample_nearest2d(th, tw)?)?,
                    }
                }
            };
        }
        Ok(x)
    }
}

/// Intermediate activations, for parity tests against the reference UNet.
#[derive(Default)]
pub struct UNetTrace {
    pub emb: Option<Tensor>,
    /// Hidden state after each level's last input block (including its downsampler).
    pub down: Vec<Tensor>,
    pub mid: Option<Tensor>,
    /// Hidden state after each level's last output block (including its upsampler).
    pub up: Vec<Tensor>,
}

pub struct UNet {
    time_embed: Mlp2,
    /// The ADM embedding (SDXL's pooled text + size ids); SD1.5 has none.
    label_emb: Option<Mlp2>,
    input_blocks: Vec<Block>,
    middle_block: Block,
    output_blocks: Vec<Block>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    model_channels: usize,
    /// Width of the ADM vector `y` (pooled text + 6 size embeddings); 0 without one.
    pub adm_in_channels: usize,
    pub heads: Heads,
    /// Width of the cross-attention context (CLIP-L + bigG hidden sizes).
    pub context_dim: Option<usize>,
    /// `input_blocks` indices after which a level ends (for traces).
    level_ends_in: Vec<usize>,
    level_ends_out: Vec<usize>,
}

impl UNet {
    /// `vb` points at the `unet` component.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let count = |prefix: &str| (0..).take_while(|i| has_block(&vb.pp(prefix).pp(i))).count();
        let n_in = count("input_blocks");
        let n_out = count("output_blocks");
        let has_adm = vb.contains_tensor("label_emb.0.0.weight");
        // No ADM input: the SD1.x family, eight heads per attention layer.
        let heads = if has_adm { Heads::Width(64) } else { Heads::Count(8) };
        let input_blocks =
            (0..n_in).map(|i| Block::new(vb.pp("input_blocks").pp(i), heads, BlockPart::Input, i)).collect::<Result<Vec<_>>>()?;
        let output_blocks =
            (0..n_out).map(|i| Block::new(vb.pp("output_blocks").pp(i), heads, BlockPart::Output, i)).collect::<Result<Vec<_>>>()?;
        let model_channels = out_dim(&vb.pp("input_blocks.0.0"))?;
        let adm_in_channels = if has_adm { vb.get_unchecked("label_emb.0.0.weight")?.dim(1)? } else { 0 };
        let context_dim = (0..n_in).find_map(|i| {
            vb.pp("input_blocks").pp(i).pp("1.transformer_blocks.0.attn2.to_k").get_unchecked("weight").ok().and_then(|w| w.dim(1).ok())
        });
        let level_ends_in = (0..n_in).filter(|&i| ends_level_in(&input_blocks, i)).collect();
        let level_ends_out =
            (0..n_out).filter(|&i| i + 1 == n_out || output_blocks[i].0.iter().any(|l| matches!(l, Layer::Up(_)))).collect();
        Ok(Self {
            time_embed: Mlp2::new(&vb.pp("time_embed.0"), &vb.pp("time_embed.2"))?,
            label_emb: if has_adm { Some(Mlp2::new(&vb.pp("label_emb.0.0"), &vb.pp("label_emb.0.2"))?) } else { None },
            input_blocks,
            middle_block: Block::new(vb.pp("middle_block"), heads, BlockPart::Middle, 0)?,
            output_blocks,
            out_norm: group_norm(&vb.pp("out.0"), 32, 1e-5)?,
            out_conv: conv2d(&vb.pp("out.2"), 1, 1)?,
            model_channels,
            adm_in_channels,
            heads,
            context_dim,
            level_ends_in,
            level_ends_out,
        })
    }

    /// Channels of the first block (320 for SDXL).
    pub fn model_channels(&self) -> usize {
        self.model_channels
    }

    /// Predict the noise `eps` for `x` `[B, 4, h, w]` at integer `timesteps` (one per batch row).
    pub fn forward(&self, x: &Tensor, timesteps: &[f32], context: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.run(x, timesteps, context, y, &Patches::default(), None)
    }

    /// [`forward`](Self::forward) with FreeU's output-block patch (`None`: plain).
    pub fn forward_freeu(&self, x: &Tensor, timesteps: &[f32], context: &Tensor, y: &Tensor, freeu: Option<&FreeU>) -> Result<Tensor> {
        self.run(x, timesteps, context, y, &Patches { freeu, ..Default::default() }, None)
    }

    /// [`forward`](Self::forward) with the model patches Fooocus sets (see [`Patches`]).
    pub fn forward_patched(&self, x: &Tensor, timesteps: &[f32], context: &Tensor, y: &Tensor, patches: &Patches<'_>) -> Result<Tensor> {
        self.run(x, timesteps, context, y, patches, None)
    }

    /// [`forward`](Self::forward), recording every level's output.
    pub fn forward_traced(
        &self,
        x: &Tensor,
        timesteps: &[f32],
        context: &Tensor,
        y: &Tensor,
        trace: Option<&mut UNetTrace>,
    ) -> Result<Tensor> {
        self.run(x, timesteps, context, y, &Patches::default(), trace)
    }

    fn run(
        &self,
        x: &Tensor,
        timesteps: &[f32],
        context: &Tensor,
        y: &Tensor,
        patches: &Patches<'_>,
        mut trace: Option<&mut UNetTrace>,
    ) -> Result<Tensor> {
        let freeu = patches.freeu;
        let dtype = x.dtype();
        let t_emb = timestep_embedding(timesteps, self.model_channels, x.device())?.to_dtype(dtype)?;
        let emb = self.time_embed.forward(&t_emb)?;
        // `y` is ignored by a UNet without an ADM input.
        let emb = match &self.label_emb {
            Some(label) => (emb + label.forward(&y.to_dtype(dtype)?)?)?,
            None => emb,
        };
        let context = context.to_dtype(dtype)?;
        let mut skips = Vec::with_capacity(self.input_blocks.len());
        let mut h = x.clone();
        for (i, block) in self.input_blocks.iter().enumerate() {
            h = block.forward(&h, &emb, &context, None, patches.extra_context)?;
            if let (0, Some(feature)) = (i, patches.first_block_feature) {
                // Fooocus's inpaint head: an input_block_patch on block 0, before its skip is kept.
                h = h.broadcast_add(&feature.to_dtype(dtype)?)?;
            }
            skips.push(h.clone());
            if let Some(t) = trace.as_deref_mut() {
                if self.level_ends_in.contains(&i) {
                    t.down.push(h.clone());
                }
            }
        }
        h = self.middle_block.forward(&h, &emb, &context, None, patches.extra_context)?;
        if let Some(control) = patches.control {
            h = (h + &control.middle)?;
        }
        if let Some(t) = trace.as_deref_mut() {
            t.emb = Some(emb.clone());
            t.mid = Some(h.clone());
        }
        for (i, block) in self.output_blocks.iter().enumerate() {
            let mut skip = skips.pop().expect("as many output as input blocks");
            if let Some(control) = patches.control {
                // ComfyUI's `apply_control(hsp, control, 'output')`, before FreeU's output patch.
                skip = (skip + &control.skips[skips.len()])?;
            }
            if let Some(f) = freeu {
                (h, skip) = f.apply(&h, &skip, self.model_channels)?;
            }
            h = Tensor::cat(&[&h, &skip], 1)?;
            // Upsample to the size of the next skip connection (handles odd latent sizes).
            let target = skips.last().map(|s| s.dims4()).transpose()?.map(|(_, _, sh, sw)| (sh, sw));
            h = block.forward(&h, &emb, &context, target, patches.extra_context)?;
            if let Some(t) = trace.as_deref_mut() {
                if self.level_ends_out.contains(&i) {
                    t.up.push(h.clone());
                }
            }
        }
        self.out_conv.forward_normalized(&self.out_norm, &h)
    }
}

/// What patches a UNet call (ComfyUI's model patches that Fooocus uses).
#[derive(Default, Clone, Copy)]
pub struct Patches<'a> {
    /// FreeU's output-block scaling.
    pub freeu: Option<&'a FreeU>,
    /// Added to the output of `input_blocks.0` (the inpaint head's feature, `[1, C, h, w]`).
    pub first_block_feature: Option<&'a Tensor>,
    /// Tokens appended to cross-attention contexts (image prompts).
    pub extra_context: Option<&'a dyn ExtraContext>,
    /// ControlNet residuals added to the skip connections and the middle block's output.
    pub control: Option<&'a ControlResiduals>,
}

/// What ControlNets add to a UNet call: one tensor per input block (its skip connection) and
/// one for the middle block, batched like the call.
pub struct ControlResiduals {
    pub skips: Vec<Tensor>,
    pub middle: Tensor,
}

pub(crate) fn has_block(vb: &VarBuilder) -> bool {
    let l = vb.pp(0);
    ["weight", "in_layers.0.weight", "op.weight"].iter().any(|n| l.contains_tensor(n))
}

/// An input block ends a level when the next one is a downsampler (or it is the last block).
fn ends_level_in(blocks: &[Block], i: usize) -> bool {
    let is_down = |b: &Block| b.0.iter().any(|l| matches!(l, Layer::Down(_)));
    if is_down(&blocks[i]) {
        return true;
    }
    i + 1 == blocks.len()
}
