//! IP-Adapter Plus's image projection (tencent-ailab `resampler.py`, Fooocus `extras/resampler.py`): a
//! perceiver that turns the vision tower's hidden states into a few learned query tokens. Keys as in
//! the adapter's `image_proj` dict: `latents`, `proj_in`, `layers.N.0` (attention), `layers.N.1`
//! (feed-forward), `proj_out`, `norm_out`. Widths and depth come from the weights; 64-wide heads.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::{attention, layer_norm, linear, LayerNorm, Linear};

const HEAD_DIM: usize = 64;

/// Queries attend to the image features and themselves: `softmax(q·[x; l]ᵀ/√d)·[x; l]`.
struct PerceiverAttention {
    norm_features: LayerNorm,
    norm_latents: LayerNorm,
    to_q: Linear,
    to_kv: Linear,
    to_out: Linear,
    heads: usize,
}

impl PerceiverAttention {
    fn new(vb: VarBuilder) -> Result<Self> {
        let to_q = linear(&vb.pp("to_q"))?;
        let heads = (to_q.weight().dim(0)? / HEAD_DIM).max(1);
        Ok(Self {
            norm_features: layer_norm(&vb.pp("norm1"), 1e-5)?,
            norm_latents: layer_norm(&vb.pp("norm2"), 1e-5)?,
            to_kv: linear(&vb.pp("to_kv"))?,
            to_out: linear(&vb.pp("to_out"))?,
            to_q,
            heads,
        })
    }

    fn forward(&self, features: &Tensor, latents: &Tensor) -> Result<Tensor> {
        let features = self.norm_features.forward(features)?;
        let latents = self.norm_latents.forward(latents)?;
        let q = self.to_q.forward(&latents)?;
        let kv = self.to_kv.forward(&Tensor::cat(&[&features, &latents], 1)?)?;
        let inner = kv.dim(2)? / 2;
        let (k, v) = (kv.narrow(2, 0, inner)?, kv.narrow(2, inner, inner)?);
        self.to_out.forward(&attention(&q, &k.contiguous()?, &v.contiguous()?, self.heads, None)?)
    }
}

/// `LayerNorm → Linear → GELU → Linear`, no biases on the linears.
struct FeedForward {
    norm: LayerNorm,
    up: Linear,
    down: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self { norm: layer_norm(&vb.pp("0"), 1e-5)?, up: linear(&vb.pp("1"))?, down: linear(&vb.pp("3"))? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&self.up.forward(&self.norm.forward(x)?)?.gelu_erf()?)
    }
}

pub struct Resampler {
    latents: Tensor,
    proj_in: Linear,
    layers: Vec<(PerceiverAttention, FeedForward)>,
    proj_out: Linear,
    norm_out: LayerNorm,
}

impl Resampler {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let depth = (0..).take_while(|i| vb.contains_tensor(&format!("layers.{i}.0.to_q.weight"))).count();
        Ok(Self {
            latents: vb.get_unchecked("latents")?,
            proj_in: linear(&vb.pp("proj_in"))?,
            layers: (0..depth)
                .map(|i| Ok((PerceiverAttention::new(vb.pp(format!("layers.{i}.0")))?, FeedForward::new(vb.pp(format!("layers.{i}.1")))?)))
                .collect::<Result<_>>()?,
            proj_out: linear(&vb.pp("proj_out"))?,
            norm_out: layer_norm(&vb.pp("norm_out"), 1e-5)?,
        })
    }

    /// The width the vision features must have.
    pub fn input_width(&self) -> Result<usize> {
        self.proj_in.weight().dim(1)
    }

    /// Hidden states `[B, T, width]` → tokens `[B, queries, output width]`.
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let b = features.dim(0)?;
        let (_, queries, dim) = self.latents.dims3()?;
        let mut latents = self.latents.broadcast_as((b, queries, dim))?.contiguous()?;
        let x = self.proj_in.forward(features)?;
        for (attn, ff) in &self.layers {
            latents = (attn.forward(&x, &latents)? + &latents)?;
            latents = (ff.forward(&latents)? + &latents)?;
        }
        self.norm_out.forward(&self.proj_out.forward(&latents)?)
    }
}
