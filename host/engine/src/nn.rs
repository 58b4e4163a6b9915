//! Layers built straight from checkpoint tensors: every dimension comes from a weight's shape,
//! so one code path serves full-size SDXL and any smaller model of the same topology.

use candle_core::{Module, Result, Tensor};
use candle_nn::{GroupNorm, LayerNorm, Linear, VarBuilder};

pub use crate::conv::Conv2d;

pub fn conv2d(vb: &VarBuilder, stride: usize, padding: usize) -> Result<Conv2d> {
    let w = vb.get_unchecked("weight")?;
    let b = if vb.contains_tensor("bias") { Some(vb.get_unchecked("bias")?) } else { None };
    Conv2d::new(w, b, stride, padding)
}

/// A linear layer; 1x1-conv weights (`[out, in, 1, 1]`) are accepted as `[out, in]`.
pub fn linear(vb: &VarBuilder) -> Result<Linear> {
    let w = vb.get_unchecked("weight")?;
    let w = if w.rank() == 4 { w.flatten_from(1)? } else { w };
    let b = if vb.contains_tensor("bias") { Some(vb.get_unchecked("bias")?) } else { None };
    Ok(Linear::new(w, b))
}

pub fn group_norm(vb: &VarBuilder, groups: usize, eps: f64) -> Result<GroupNorm> {
    let w = vb.get_unchecked("weight")?;
    let b = vb.get_unchecked("bias")?;
    let channels = w.dim(0)?;
    GroupNorm::new(w, b, channels, groups, eps)
}

pub fn layer_norm(vb: &VarBuilder, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(vb.get_unchecked("weight")?, vb.get_unchecked("bias")?, eps))
}

/// Out-channels of a conv/linear weight.
pub fn out_dim(vb: &VarBuilder) -> Result<usize> {
    vb.get_unchecked("weight")?.dim(0)
}

/// `[cos(t·f), sin(t·f)]` with `f_i = 10000^(-i/half)` (LDM `timestep_embedding`, cos first).
pub fn timestep_embedding(values: &[f32], dim: usize, device: &candle_core::Device) -> Result<Tensor> {
    let half = dim / 2;
    let mut data = Vec::with_capacity(values.len() * dim);
    for &v in values {
        let freqs = (0..half).map(|i| (-(10000f32.ln()) * i as f32 / half as f32).exp());
        let args: Vec<f32> = freqs.map(|f| v * f).collect();
        data.extend(args.iter().map(|a| a.cos()));
        data.extend(args.iter().map(|a| a.sin()));
    }
    Tensor::from_vec(data, (values.len(), dim), device)
}

/// Multi-head scaled dot-product attention on `[B, N, heads·head_dim]` inputs.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, n, inner) = q.dims3()?;
    let m = k.dim(1)?;
    let hd = inner / heads;
    let split = |t: &Tensor, len: usize| t.reshape((b, len, heads, hd))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(q, n)?, split(k, m)?, split(v, m)?);
    let in_dtype = q.dtype();
    // Scores and softmax in f32 for stability in half precision.
    let q = (q.to_dtype(candle_core::DType::F32)? * (1.0 / (hd as f64).sqrt()))?;
    let k = k.to_dtype(candle_core::DType::F32)?;
    let k_t = k.t()?;
    let rows_of = |q: &Tensor| -> Result<Tensor> {
        let mut scores = q.matmul(&k_t)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(in_dtype)?.matmul(&v)
    };
    // Softmax is per query row, so queries can go in chunks: the score matrix never exceeds
    // SCORE_BUDGET elements, whatever the image size (a full one is quadratic in pixels).
    let rows = (SCORE_BUDGET / (b * heads * m).max(1)).max(1);
    // (Masked attention is CLIP's, 77 tokens: never chunked, so the mask needs no slicing.)
    let out = if n <= rows || mask.is_some() {
        rows_of(&q)?
    } else {
        let chunks = (0..n)
            .step_by(rows)
            .map(|start| rows_of(&q.narrow(2, start, rows.min(n - start))?.contiguous()?))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&chunks, 2)?
    };
    out.transpose(1, 2)?.reshape((b, n, inner))
}

/// Most attention scores held at once (f32): 32 Mi elements, 128 MiB.
const SCORE_BUDGET: usize = 32 << 20;

pub fn silu(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::silu(x)
}

/// `Sequential(Linear, SiLU, Linear)` as used by the time and label embeddings.
pub struct Mlp2 {
    first: Linear,
    second: Linear,
}

impl Mlp2 {
    pub fn new(first: &VarBuilder, second: &VarBuilder) -> Result<Self> {
        Ok(Self { first: linear(first)?, second: linear(second)? })
    }
}

impl Module for Mlp2 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.second.forward(&silu(&self.first.forward(x)?)?)
    }
}
