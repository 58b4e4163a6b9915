//! BLIP's image encoder (`extras/BLIP/models/vit.py:VisionTransformer`, keys under
//! `visual_encoder.`): 16-pixel patches by a strided convolution, a class token, learned positions,
//! pre-norm blocks (LayerNorm ε 1e-6, fused `qkv` attention, exact-GELU MLP), a final LayerNorm.
//! Width and depth come from the weights; heads are 64 wide (ViT-B: 768 / 12).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use focal_engine::nn::{attention, layer_norm, linear, LayerNorm, Linear};

const EPS: f64 = 1e-6;
pub const PATCH: usize = 16;

/// Heads of a transformer whose heads are 64 wide (BLIP's ViT and BERT); one for narrower models.
pub fn heads_for_width(width: usize) -> usize {
    (width / 64).max(1)
}

struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn new(vb: &VarBuilder) -> Result<Self> {
        Ok(Block {
            norm1: layer_norm(&vb.pp("norm1"), EPS)?,
            qkv: linear(&vb.pp("attn.qkv"))?,
            proj: linear(&vb.pp("attn.proj"))?,
            norm2: layer_norm(&vb.pp("norm2"), EPS)?,
            fc1: linear(&vb.pp("mlp.fc1"))?,
            fc2: linear(&vb.pp("mlp.fc2"))?,
        })
    }

    fn forward(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let width = x.dim(D::Minus1)?;
        let qkv = self.qkv.forward(&self.norm1.forward(x)?)?;
        let part = |i: usize| qkv.narrow(D::Minus1, i * width, width);
        let attended = attention(&part(0)?, &part(1)?, &part(2)?, heads, None)?;
        let x = (x + self.proj.forward(&attended)?)?;
        let mlp = self.fc2.forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?)?;
        x + mlp
    }
}

pub struct VisionTransformer {
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    heads: usize,
    pub width: usize,
    /// The square input side the positions were learned for (`16 · √(tokens − 1)`).
    pub image_size: usize,
}

impl VisionTransformer {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let patch_weight = vb.get_unchecked("patch_embed.proj.weight")?;
        let (width, channels, ph, pw) = patch_weight.dims4()?;
        if channels != 3 || ph != PATCH || pw != PATCH {
            candle_core::bail!("patch_embed.proj.weight is {:?}, not [width, 3, 16, 16]", patch_weight.dims());
        }
        let pos_embed = vb.get_unchecked("pos_embed")?;
        let tokens = pos_embed.dim(1)?;
        let grid = ((tokens.saturating_sub(1)) as f64).sqrt() as usize;
        if grid == 0 || grid * grid + 1 != tokens || pos_embed.dims() != [1, tokens, width] {
            candle_core::bail!("pos_embed is {:?}, not [1, 1 + n², {width}]", pos_embed.dims());
        }
        let mut blocks = Vec::new();
        while vb.contains_tensor(&format!("blocks.{}.norm1.weight", blocks.len())) {
            blocks.push(Block::new(&vb.pp(format!("blocks.{}", blocks.len())))?);
        }
        if blocks.is_empty() {
            candle_core::bail!("no blocks.0 in visual_encoder");
        }
        Ok(VisionTransformer {
            patch_bias: vb.get_unchecked("patch_embed.proj.bias")?,
            cls_token: vb.get_unchecked("cls_token")?,
            norm: layer_norm(&vb.pp("norm"), EPS)?,
            patch_weight,
            pos_embed,
            blocks,
            heads: heads_for_width(width),
            width,
            image_size: grid * PATCH,
        })
    }

    /// `[1, 3, S, S]` normalised pixels → `[1, 1 + (S/16)², width]` image embeddings.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let patches = pixels.conv2d(&self.patch_weight, 0, PATCH, 1, 1)?;
        let patches = patches.broadcast_add(&self.patch_bias.reshape((1, self.width, 1, 1))?)?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?;
        let mut x = Tensor::cat(&[&self.cls_token, &patches], 1)?.broadcast_add(&self.pos_embed)?;
        for block in &self.blocks {
            x = block.forward(&x, self.heads)?;
        }
        self.norm.forward(&x)
    }
}
