//! Layers built straight from checkpoint tensors: every dimension comes from a weight's shape,
//! so one code path serves full-size SDXL and any smaller model of the same topology.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

pub use crate::attention::attention;
pub use crate::conv::Conv2d;
pub use crate::linear::Linear;
pub use crate::norm::GroupNorm;
use crate::profile::{self, Op};

pub fn conv2d(vb: &VarBuilder, stride: usize, padding: usize) -> Result<Conv2d> {
    let w = vb.get_unchecked("weight")?;
    let b = if vb.contains_tensor("bias") { Some(vb.get_unchecked("bias")?) } else { None };
    Conv2d::new(w, b, stride, padding)
}

/// A linear layer; 1x1-conv weights (`[out, in, 1, 1]`) are accepted as `[out, in]`.
pub fn linear(vb: &VarBuilder) -> Result<Linear> {
    let (w, b) = linear_parts(vb)?;
    Ok(Linear::new(w, b))
}

/// A linear layer of a model that runs few rows at a time (see [`Linear::for_few_rows`]).
pub fn linear_few_rows(vb: &VarBuilder) -> Result<Linear> {
    let (w, b) = linear_parts(vb)?;
    Ok(Linear::for_few_rows(w, b))
}

fn linear_parts(vb: &VarBuilder) -> Result<(Tensor, Option<Tensor>)> {
    let w = vb.get_unchecked("weight")?;
    let w = if w.rank() == 4 { w.flatten_from(1)? } else { w };
    let b = if vb.contains_tensor("bias") { Some(vb.get_unchecked("bias")?) } else { None };
    Ok((w, b))
}

/// `torch.nn.BatchNorm2d` in eval mode (ε 1e-5): torch's per-channel `x·scale + shift`, with
/// `scale = w / √(var + ε)` and `shift = b − mean·scale`.
pub struct BatchNorm {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        let get = |n: &str| -> Result<Tensor> { vb.get_unchecked(n)?.to_dtype(candle_core::DType::F32)?.reshape((1, (), 1, 1)) };
        let (w, b, mean, var) = (get("weight")?, get("bias")?, get("running_mean")?, get("running_var")?);
        let scale = (w / (var + 1e-5)?.sqrt()?)?;
        let shift = (b - (mean * &scale)?)?;
        Ok(Self { scale, shift })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)
    }
}

pub fn group_norm(vb: &VarBuilder, groups: usize, eps: f64) -> Result<GroupNorm> {
    GroupNorm::new(vb.get_unchecked("weight")?, vb.get_unchecked("bias")?, groups, eps)
}

pub fn layer_norm(vb: &VarBuilder, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(vb.get_unchecked("weight")?, vb.get_unchecked("bias")?, eps))
}

/// candle's layer normalisation, timed by the profiler.
#[derive(Clone, Debug)]
pub struct LayerNorm(candle_nn::LayerNorm);

impl LayerNorm {
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self(candle_nn::LayerNorm::new(weight, bias, eps))
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        profile::time(Op::LayerNorm, || self.0.forward(x))
    }
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
