//! BLIP's caption decoder (`extras/BLIP/models/med.py:BertLMHeadModel`, keys under `text_decoder.`):
//! BERT with learned positions, post-norm layers (LayerNorm ε 1e-12) of causal self-attention,
//! cross-attention to the image embeddings and an exact-GELU feed-forward, then the masked-LM
//! head (dense, GELU, LayerNorm, the vocabulary projection plus `cls.predictions.bias`).
//!
//! Tokens go in one at a time with the self-attention's keys and values kept, so no causal mask is
//! needed (transformers' BLIP recomputes the whole prefix each step; the results are the same up
//! to rounding). The cross-attention's keys and values are computed once per image.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use focal_engine::nn::{attention, layer_norm, linear_few_rows, LayerNorm, Linear};

use super::vision::heads_for_width;

const EPS: f64 = 1e-12;

/// `BertAttention`: projections, then `LayerNorm(dense(context) + input)`.
struct AttentionBlock {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    norm: LayerNorm,
}

impl AttentionBlock {
    fn new(vb: &VarBuilder) -> Result<Self> {
        Ok(AttentionBlock {
            query: linear_few_rows(&vb.pp("self.query"))?,
            key: linear_few_rows(&vb.pp("self.key"))?,
            value: linear_few_rows(&vb.pp("self.value"))?,
            dense: linear_few_rows(&vb.pp("output.dense"))?,
            norm: layer_norm(&vb.pp("output.LayerNorm"), EPS)?,
        })
    }

    fn keys_values(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.key.forward(x)?, self.value.forward(x)?))
    }

    fn forward(&self, x: &Tensor, keys: &Tensor, values: &Tensor, heads: usize) -> Result<Tensor> {
        let context = attention(&self.query.forward(x)?, keys, values, heads, None)?;
        self.norm.forward(&(self.dense.forward(&context)? + x)?)
    }
}

struct Layer {
    self_attention: AttentionBlock,
    cross_attention: AttentionBlock,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// What one caption carries between tokens: per layer, the self-attention's keys and values so
/// far and the cross-attention's over the image.
pub struct DecoderState {
    past: Vec<Option<(Tensor, Tensor)>>,
    image: Vec<(Tensor, Tensor)>,
    position: usize,
}

pub struct TextDecoder {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    head_dense: Linear,
    head_norm: LayerNorm,
    head_decoder: Linear,
    heads: usize,
    /// Ids the output layer scores.
    pub vocab_size: usize,
}

impl TextDecoder {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let embeddings = vb.pp("bert.embeddings");
        let word_embeddings = embeddings.get_unchecked("word_embeddings.weight")?;
        let (vocab_size, width) = word_embeddings.dims2()?;
        let mut layers = Vec::new();
        while vb.contains_tensor(&format!("bert.encoder.layer.{}.attention.self.query.weight", layers.len())) {
            let l = vb.pp(format!("bert.encoder.layer.{}", layers.len()));
            layers.push(Layer {
                self_attention: AttentionBlock::new(&l.pp("attention"))?,
                cross_attention: AttentionBlock::new(&l.pp("crossattention"))?,
                intermediate: linear_few_rows(&l.pp("intermediate.dense"))?,
                output: linear_few_rows(&l.pp("output.dense"))?,
                output_norm: layer_norm(&l.pp("output.LayerNorm"), EPS)?,
            });
        }
        if layers.is_empty() {
            candle_core::bail!("no bert.encoder.layer.0 in text_decoder");
        }
        let head = vb.pp("cls.predictions");
        let decoder_weight = head.get_unchecked("decoder.weight")?;
        let bias = head.get_unchecked("bias")?;
        if decoder_weight.dims2()? != (vocab_size, width) || bias.dims1()? != vocab_size {
            candle_core::bail!(
                "cls.predictions.decoder.weight {:?} / bias {:?} do not match the embeddings",
                decoder_weight.dims(),
                bias.dims()
            );
        }
        Ok(TextDecoder {
            position_embeddings: embeddings.get_unchecked("position_embeddings.weight")?,
            embeddings_norm: layer_norm(&embeddings.pp("LayerNorm"), EPS)?,
            layers,
            head_dense: linear_few_rows(&head.pp("transform.dense"))?,
            head_norm: layer_norm(&head.pp("transform.LayerNorm"), EPS)?,
            head_decoder: Linear::for_few_rows(decoder_weight, Some(bias)),
            heads: heads_for_width(width),
            word_embeddings,
            vocab_size,
        })
    }

    /// The longest sequence the learned positions cover.
    pub fn max_positions(&self) -> usize {
        self.position_embeddings.dim(0).unwrap_or(0)
    }

    /// A fresh caption over `image_embeds` (`[1, tokens, width]`).
    pub fn start(&self, image_embeds: &Tensor) -> Result<DecoderState> {
        let image = self.layers.iter().map(|l| l.cross_attention.keys_values(image_embeds)).collect::<Result<_>>()?;
        Ok(DecoderState { past: vec![None; self.layers.len()], image, position: 0 })
    }

    /// Feeds one token; the scores of the next one (`vocab_size` values).
    pub fn next_scores(&self, state: &mut DecoderState, token: u32) -> Result<Vec<f32>> {
        if state.position >= self.max_positions() || token as usize >= self.vocab_size {
            candle_core::bail!("token {token} at position {} is outside the decoder's tables", state.position);
        }
        let word = self.word_embeddings.narrow(0, token as usize, 1)?;
        let position = self.position_embeddings.narrow(0, state.position, 1)?;
        let mut x = self.embeddings_norm.forward(&(word + position)?.unsqueeze(0)?)?;
        for ((layer, past), (image_keys, image_values)) in self.layers.iter().zip(&mut state.past).zip(&state.image) {
            let (k, v) = layer.self_attention.keys_values(&x)?;
            let (keys, values) = match past.take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
                None => (k, v),
            };
            x = layer.self_attention.forward(&x, &keys, &values, self.heads)?;
            *past = Some((keys, values));
            x = layer.cross_attention.forward(&x, image_keys, image_values, self.heads)?;
            let hidden = layer.output.forward(&layer.intermediate.forward(&x)?.gelu_erf()?)?;
            x = layer.output_norm.forward(&(hidden + x)?)?;
        }
        state.position += 1;
        let x = self.head_norm.forward(&self.head_dense.forward(&x)?.gelu_erf()?)?;
        self.head_decoder.forward(&x)?.flatten_all()?.to_vec1::<f32>()
    }
}
