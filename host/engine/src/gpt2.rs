//! GPT-2 language model (transformers `GPT2LMHeadModel` naming: `transformer.wte`, `.wpe`,
//! `.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}`, `.ln_f`; the LM head
//! is tied to `wte`). GPT-2's `Conv1D` layers store weights `[in, out]`: `y = x·W + b`.
//! Used by the Fooocus V2 prompt expansion (`crate::expansion`).

use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::nn::{layer_norm, LayerNorm};

#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Config {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub n_positions: usize,
    pub vocab_size: usize,
    pub layer_norm_epsilon: f64,
}

impl Gpt2Config {
    /// From a transformers `config.json`; fields it lacks keep GPT-2's values.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("config.json: {e}"))?;
        let int = |key: &str, default: usize| v.get(key).and_then(|x| x.as_u64()).map_or(default, |x| x as usize);
        if let Some(act) = v.get("activation_function").and_then(|a| a.as_str()) {
            if act != "gelu_new" {
                return Err(format!("config.json: activation_function '{act}' is not GPT-2's gelu_new"));
            }
        }
        Ok(Self {
            n_layer: int("n_layer", 12),
            n_head: int("n_head", 12),
            n_embd: int("n_embd", 768),
            n_positions: int("n_positions", 1024),
            vocab_size: int("vocab_size", 50257),
            layer_norm_epsilon: v.get("layer_norm_epsilon").and_then(|x| x.as_f64()).unwrap_or(1e-5),
        })
    }
}

/// `x · W` for `W` `[in, out]`, with `W` stored as column blocks: decoding multiplies one row at
/// a time, which the CPU GEMM runs on a single thread; the blocks run on one thread each.
struct ColumnBlocks {
    blocks: Vec<Tensor>,
}

impl ColumnBlocks {
    fn new(weight: &Tensor) -> Result<Self> {
        let out = weight.dim(1)?;
        let n = candle_core::utils::get_num_threads().clamp(1, 8).min(out);
        let step = out.div_ceil(n);
        let blocks =
            (0..out).step_by(step).map(|start| weight.narrow(1, start, step.min(out - start))?.contiguous()).collect::<Result<_>>()?;
        Ok(Self { blocks })
    }

    /// `x` `[rows, in]` → `[rows, out]`.
    fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        if self.blocks.len() == 1 {
            return x.matmul(&self.blocks[0]);
        }
        let parts = if x.dim(0)? == 1 {
            std::thread::scope(|s| {
                let running: Vec<_> = self.blocks.iter().map(|w| s.spawn(move || x.matmul(w))).collect();
                running.into_iter().map(|r| r.join().expect("a GEMM thread panicked")).collect::<Result<Vec<_>>>()
            })?
        } else {
            // Several rows: the GEMM is multi-threaded on its own.
            self.blocks.iter().map(|w| x.matmul(w)).collect::<Result<Vec<_>>>()?
        };
        Tensor::cat(&parts, 1)
    }
}

/// `Conv1D`: weight `[in, out]`.
struct Conv1d {
    weight: ColumnBlocks,
    bias: Tensor,
}

impl Conv1d {
    fn new(vb: &VarBuilder) -> Result<Self> {
        Ok(Self { weight: ColumnBlocks::new(&vb.get_unchecked("weight")?)?, bias: vb.get_unchecked("bias")? })
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        self.weight.matmul(&x.reshape((b * t, d))?)?.broadcast_add(&self.bias)?.reshape((b, t, ()))
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Conv1d,
    attn_proj: Conv1d,
    ln_2: LayerNorm,
    c_fc: Conv1d,
    mlp_proj: Conv1d,
}

/// Keys and values of the positions seen so far, per layer: `[B, heads, T, head_dim]`.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Block {
    fn new(vb: VarBuilder, eps: f64) -> Result<Self> {
        Ok(Self {
            ln_1: layer_norm(&vb.pp("ln_1"), eps)?,
            c_attn: Conv1d::new(&vb.pp("attn.c_attn"))?,
            attn_proj: Conv1d::new(&vb.pp("attn.c_proj"))?,
            ln_2: layer_norm(&vb.pp("ln_2"), eps)?,
            c_fc: Conv1d::new(&vb.pp("mlp.c_fc"))?,
            mlp_proj: Conv1d::new(&vb.pp("mlp.c_proj"))?,
        })
    }

    fn forward(&self, x: &Tensor, heads: usize, cache: &mut Option<(Tensor, Tensor)>) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / heads;
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)?)?;
        let split = |i: usize| qkv.narrow(2, i * d, d)?.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous();
        let (q, mut k, mut v) = (split(0)?, split(1)?, split(2)?);
        if let Some((past_k, past_v)) = cache.as_ref() {
            k = Tensor::cat(&[past_k, &k], 2)?;
            v = Tensor::cat(&[past_v, &v], 2)?;
        }
        *cache = Some((k.clone(), v.clone()));
        let past = k.dim(2)? - t;
        let mut scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        if t > 1 {
            // Query i (absolute position past+i) sees keys 0..=past+i.
            let mask: Vec<f32> =
                (0..t).flat_map(|i| (0..past + t).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })).collect();
            let mask = Tensor::from_vec(mask, (t, past + t), x.device())?.to_dtype(scores.dtype())?;
            scores = scores.broadcast_add(&mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let a = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let x = (x + self.attn_proj.forward(&a)?)?;
        // gelu_new is the tanh approximation, candle's `gelu`.
        let h = self.c_fc.forward(&self.ln_2.forward(&x)?)?.gelu()?;
        x + self.mlp_proj.forward(&h)?
    }
}

pub struct Gpt2Model {
    pub config: Gpt2Config,
    wte: Embedding,
    /// `wteᵀ` `[n_embd, vocab]`, laid out once (a transposed view would be copied per token).
    lm_head: ColumnBlocks,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    device: Device,
}

impl Gpt2Model {
    pub fn new(vb: VarBuilder, config: Gpt2Config) -> Result<Self> {
        let t = vb.pp("transformer");
        let wte = t.get_unchecked("wte.weight")?;
        let wpe = t.get_unchecked("wpe.weight")?;
        let blocks = (0..config.n_layer).map(|i| Block::new(t.pp(format!("h.{i}")), config.layer_norm_epsilon)).collect::<Result<_>>()?;
        let ln_f = layer_norm(&t.pp("ln_f"), config.layer_norm_epsilon)?;
        let device = wte.device().clone();
        let lm_head = ColumnBlocks::new(&wte.t()?)?;
        Ok(Self { wte: Embedding::new(wte, config.n_embd), lm_head, wpe, blocks, ln_f, device, config })
    }

    /// Weights from `model.safetensors` or a transformers `pytorch_model.bin` (torch zip pickle;
    /// non-weight buffers such as `attn.bias` are ignored), computed in `dtype`.
    pub fn load(weights: &Path, config: Gpt2Config, dtype: DType, device: &Device) -> Result<Self> {
        let is_safetensors = weights.extension().is_some_and(|e| e == "safetensors");
        let tensors = if is_safetensors {
            candle_core::safetensors::load(weights, device)?
        } else {
            candle_core::pickle::read_all(weights)?.into_iter().collect()
        };
        Self::from_tensors(tensors, config, dtype, device)
    }

    /// From named tensors (transformers names; non-weight buffers and the tied `lm_head` are
    /// dropped, a missing `transformer.` prefix is added).
    pub fn from_tensors(
        tensors: std::collections::HashMap<String, Tensor>,
        config: Gpt2Config,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let tensors = tensors
            .into_iter()
            .filter(|(name, _)| !name.ends_with(".attn.bias") && !name.ends_with(".attn.masked_bias") && name != "lm_head.weight")
            .map(|(name, t)| {
                let name = if name.starts_with("transformer.") { name } else { format!("transformer.{name}") };
                Ok((name, t.to_dtype(dtype)?.to_device(device)?))
            })
            .collect::<Result<std::collections::HashMap<_, _>>>()?;
        Self::new(VarBuilder::from_tensors(tensors, dtype, device), config)
    }

    /// Logits `[B, T, vocab]` for `ids` `[B, T]` following the cached positions.
    pub fn forward(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.lm_head(&self.hidden(ids, cache)?)
    }

    /// Final hidden states `[B, T, n_embd]` (after `ln_f`).
    fn hidden(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let past = cache.len();
        if past + t > self.config.n_positions {
            candle_core::bail!("GPT-2 context is {} positions; asked for {}", self.config.n_positions, past + t);
        }
        cache.layers.resize_with(self.blocks.len(), || None);
        let positions = self.wpe.narrow(0, past, t)?;
        let mut x = self.wte.forward(ids)?.broadcast_add(&positions)?;
        for (block, layer_cache) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(&x, self.config.n_head, layer_cache)?;
        }
        self.ln_f.forward(&x)
    }

    /// The tied LM head: `x · wteᵀ`.
    fn lm_head(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        self.lm_head.matmul(&x.reshape((b * t, d))?)?.reshape((b, t, ()))
    }

    /// Logits of the last position only, as a flat f32 vector.
    pub fn next_logits(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let hidden = self.hidden(&input, cache)?;
        let last = hidden.narrow(1, ids.len() - 1, 1)?;
        self.lm_head(&last)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
    }

    /// Greedy (argmax) continuation by `n` tokens, as transformers' plain `generate`.
    pub fn greedy(&self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        let mut cache = KvCache::default();
        let mut out = Vec::with_capacity(n);
        let mut logits = self.next_logits(prompt, &mut cache)?;
        while out.len() < n {
            let next = argmax(&logits);
            out.push(next);
            if out.len() < n {
                logits = self.next_logits(&[next], &mut cache)?;
            }
        }
        Ok(out)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// Index of the largest value (the first on ties, as torch's argmax).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}
