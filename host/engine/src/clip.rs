//! CLIP text transformer (transformers naming), used for CLIP-L and OpenCLIP bigG.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::nn::{attention, layer_norm, linear_few_rows, LayerNorm, Linear};

/// Token ids from here on name textual-inversion vectors rather than vocabulary entries.
pub const VECTOR_ID_BASE: u32 = 1 << 24;

/// Both SDXL encoders use 64-dimensional heads (CLIP-L 768/12, bigG 1280/20).
const HEAD_DIM: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    pub fn from_config(name: Option<&str>, default: Activation) -> Activation {
        match name {
            Some("quick_gelu") => Activation::QuickGelu,
            Some("gelu") => Activation::Gelu,
            _ => default,
        }
    }

    pub(crate) fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            Activation::Gelu => x.gelu_erf(),
        }
    }
}

/// One pre-norm transformer layer (the text encoders' and the vision towers').
pub(crate) struct EncoderLayer {
    ln1: LayerNorm,
    ln2: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    act: Activation,
}

impl EncoderLayer {
    /// `heads`: from the layer's width when `None` (64-wide heads, as both text encoders).
    pub(crate) fn new(vb: VarBuilder, act: Activation, heads: Option<usize>) -> Result<Self> {
        let attn = vb.pp("self_attn");
        let q = linear_few_rows(&attn.pp("q_proj"))?;
        let width = q.weight().dim(0)?;
        Ok(Self {
            ln1: layer_norm(&vb.pp("layer_norm1"), 1e-5)?,
            ln2: layer_norm(&vb.pp("layer_norm2"), 1e-5)?,
            k: linear_few_rows(&attn.pp("k_proj"))?,
            v: linear_few_rows(&attn.pp("v_proj"))?,
            out: linear_few_rows(&attn.pp("out_proj"))?,
            fc1: linear_few_rows(&vb.pp("mlp.fc1"))?,
            fc2: linear_few_rows(&vb.pp("mlp.fc2"))?,
            heads: heads.unwrap_or((width / HEAD_DIM).max(1)),
            q,
            act,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let h = self.ln1.forward(x)?;
        let a = attention(&self.q.forward(&h)?, &self.k.forward(&h)?, &self.v.forward(&h)?, self.heads, mask)?;
        let x = (x + self.out.forward(&a)?)?;
        let h = self.fc1.forward(&self.ln2.forward(&x)?)?;
        x + self.fc2.forward(&self.act.apply(&h)?)?
    }
}

pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_ln: LayerNorm,
    projection: Option<Linear>,
    pub width: usize,
}

/// Output of one 77-token chunk.
pub struct ClipOutput {
    /// Hidden state of the selected layer, `[B, 77, width]`, without the final layer norm.
    pub hidden: Tensor,
    /// `text_projection(final_ln(last)[eos])`, `[B, proj]`, when the model has a projection.
    pub pooled: Option<Tensor>,
}

impl ClipTextModel {
    /// The final layer norm alone, on hidden states `[B, T, width]` (Fooocus renormalises the
    /// base's CLIP-L context with it for an SD1.5 refiner).
    pub fn final_norm(&self, hidden: &Tensor) -> Result<Tensor> {
        self.final_ln.forward(hidden)
    }

    /// `vb` points at the component (`clip_l` / `clip_g`); layers are counted in the checkpoint.
    pub fn new(vb: VarBuilder, act: Activation) -> Result<Self> {
        let tm = vb.pp("text_model");
        let tokens = tm.get_unchecked("embeddings.token_embedding.weight")?;
        let width = tokens.dim(1)?;
        let position_embedding = tm.get_unchecked("embeddings.position_embedding.weight")?;
        let n_layers = (0..).take_while(|i| tm.contains_tensor(&format!("encoder.layers.{i}.layer_norm1.weight"))).count();
        let layers =
            (0..n_layers).map(|i| EncoderLayer::new(tm.pp(format!("encoder.layers.{i}")), act, None)).collect::<Result<Vec<_>>>()?;
        let projection = if vb.contains_tensor("text_projection.weight") {
            Some(Linear::new(vb.get_unchecked("text_projection.weight")?, None))
        } else {
            None
        };
        Ok(Self {
            token_embedding: Embedding::new(tokens, width),
            position_embedding,
            layers,
            final_ln: layer_norm(&tm.pp("final_layer_norm"), 1e-5)?,
            projection,
            width,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Encode token ids `[B, T]`. `skip` = 1 returns the last layer's hidden state, 2 the
    /// penultimate (SDXL), … The pooled output is computed only when `pooled` is set.
    pub fn encode(&self, ids: &[Vec<u32>], skip: usize, pooled: bool, device: &Device) -> Result<ClipOutput> {
        self.encode_with_vectors(ids, &[], skip, pooled, device)
    }

    /// [`encode`](Self::encode) where ids from [`VECTOR_ID_BASE`] on stand for `vectors[id − base]`
    /// (textual-inversion embeddings) instead of vocabulary entries.
    pub fn encode_with_vectors(
        &self,
        ids: &[Vec<u32>],
        vectors: &[Option<Tensor>],
        skip: usize,
        pooled: bool,
        device: &Device,
    ) -> Result<ClipOutput> {
        let (b, t) = (ids.len(), ids[0].len());
        let flat: Vec<u32> = ids.iter().flatten().map(|&id| if id >= VECTOR_ID_BASE { 0 } else { id }).collect();
        let ids_t = Tensor::from_vec(flat, (b, t), device)?;
        let pos = self.position_embedding.narrow(0, 0, t)?;
        let mut tokens = self.token_embedding.forward(&ids_t)?;
        if ids.iter().flatten().any(|&id| id >= VECTOR_ID_BASE) {
            let rows = ids
                .iter()
                .enumerate()
                .map(|(i, seq)| {
                    let row = seq
                        .iter()
                        .enumerate()
                        .map(|(j, &id)| match id.checked_sub(VECTOR_ID_BASE).and_then(|v| vectors.get(v as usize)?.as_ref()) {
                            Some(v) => v.to_dtype(tokens.dtype())?.to_device(device)?.reshape((1, self.width)),
                            None => tokens.get(i)?.narrow(0, j, 1),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Tensor::cat(&row, 0)
                })
                .collect::<Result<Vec<_>>>()?;
            tokens = Tensor::stack(&rows, 0)?;
        }
        let mut x = tokens.broadcast_add(&pos)?;
        let mask = causal_mask(t, device)?;
        let keep = self.layers.len().saturating_sub(skip.max(1) - 1);
        let run = if pooled { self.layers.len() } else { keep };
        let mut hidden = None;
        for (i, layer) in self.layers[..run].iter().enumerate() {
            x = layer.forward(&x, Some(&mask))?;
            if i + 1 == keep {
                hidden = Some(x.clone());
            }
        }
        let hidden = hidden.unwrap_or_else(|| x.clone());
        let pooled = match (&self.projection, pooled) {
            (Some(proj), true) => {
                let normed = self.final_ln.forward(&x)?;
                let rows = ids
                    .iter()
                    .enumerate()
                    .map(|(i, seq)| {
                        let eos = seq.iter().position(|&id| id == crate::tokenizer::EOS).unwrap_or(t - 1);
                        normed.get(i)?.get(eos)?.unsqueeze(0)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(proj.forward(&Tensor::cat(&rows, 0)?)?)
            }
            _ => None,
        };
        Ok(ClipOutput { hidden, pooled })
    }
}

impl ClipTextModel {
    /// Fooocus's `patched_encode_token_weights` for one encoder: each 77-token window encoded;
    /// when any token is weighted, every token with weight `w ≠ 1` becomes
    /// `e + (z − e)·w` (`e`: the encoding of an empty window `[BOS, EOS, pad…]`, per position)
    /// and the window is rescaled to keep its mean. Windows concatenate along the sequence; the
    /// pooled output (when asked) is the first window's.
    ///
    /// `vectors` back the embedding ids (see [`encode_with_vectors`](Self::encode_with_vectors));
    /// a `None` (an embedding of another width) is dropped from its window, which is padded at the
    /// end while the weights keep their positions, as ComfyUI's `set_up_textual_embeddings` does.
    pub fn encode_weighted(
        &self,
        windows: &[(Vec<u32>, Vec<f32>)],
        vectors: &[Option<Tensor>],
        pad: u32,
        skip: usize,
        pooled: bool,
        device: &Device,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let usable = |id: u32| id.checked_sub(VECTOR_ID_BASE).is_none_or(|v| vectors[v as usize].is_some());
        let windows: Vec<(Vec<u32>, Vec<f32>)> = windows
            .iter()
            .map(|(ids, w)| {
                let mut kept: Vec<u32> = ids.iter().copied().filter(|&id| usable(id)).collect();
                kept.resize(ids.len(), pad);
                (kept, w.clone())
            })
            .collect();

        let has_weights = windows.iter().any(|(_, w)| w.iter().any(|&x| x != 1.0));
        let empty = if has_weights {
            let len = windows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(crate::tokenizer::CHUNK_LEN);
            let mut ids = vec![crate::tokenizer::BOS, crate::tokenizer::EOS];
            ids.resize(len, pad);
            Some(self.encode(&[ids], skip, false, device)?.hidden)
        } else {
            None
        };
        let mut outputs = Vec::with_capacity(windows.len());
        let mut first_pooled = None;
        for (k, (ids, weights)) in windows.iter().enumerate() {
            let out = self.encode_with_vectors(std::slice::from_ref(ids), vectors, skip, pooled && k == 0, device)?;
            if k == 0 {
                first_pooled = out.pooled;
            }
            let z = out.hidden;
            let z = match &empty {
                Some(e) => {
                    let original_mean = z.mean_all()?;
                    let w = Tensor::from_vec(weights.clone(), (1, weights.len(), 1), device)?.to_dtype(z.dtype())?;
                    let weighted = (&z - e)?.broadcast_mul(&w)?.broadcast_add(e)?;
                    let changed = w.ne(1f64)?.broadcast_as(z.shape())?;
                    let z = changed.where_cond(&weighted, &z)?;
                    let ratio = (original_mean / z.mean_all()?)?;
                    z.broadcast_mul(&ratio)?
                }
                None => z,
            };
            outputs.push(z);
        }
        Ok((Tensor::cat(&outputs, 1)?, first_pooled))
    }
}

fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(data, (t, t), device)
}
