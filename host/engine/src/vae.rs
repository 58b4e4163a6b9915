//! The SDXL autoencoder (LDM naming), with the number of levels, res blocks and channels read
//! from the checkpoint.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cpu;
use crate::nn::Conv2d;

use crate::nn::{attention, conv2d, group_norm, linear, GroupNorm, Linear};
use crate::tiles;

/// SDXL's latent scaling factor (SD1.5 uses 0.18215; using that here gives hazy images).
pub const SDXL_SCALING_FACTOR: f64 = 0.13025;
/// SD1.5's latent scaling factor (its VAE has the same architecture).
pub const SD15_SCALING_FACTOR: f64 = 0.18215;

struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(&vb.pp("norm1"), 32, 1e-6)?,
            conv1: conv2d(&vb.pp("conv1"), 1, 1)?,
            norm2: group_norm(&vb.pp("norm2"), 32, 1e-6)?,
            conv2: conv2d(&vb.pp("conv2"), 1, 1)?,
            shortcut: if vb.contains_tensor("nin_shortcut.weight") { Some(conv2d(&vb.pp("nin_shortcut"), 1, 0)?) } else { None },
        })
    }
}

impl Module for ResnetBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward_normalized(&self.norm1, x)?;
        let h = self.conv2.forward_normalized(&self.norm2, &h)?;
        match &self.shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// Single-head self-attention over all pixels.
struct AttnBlock {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    proj_out: Linear,
}

impl AttnBlock {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(&vb.pp("norm"), 32, 1e-6)?,
            q: linear(&vb.pp("q"))?,
            k: linear(&vb.pp("k"))?,
            v: linear(&vb.pp("v"))?,
            proj_out: linear(&vb.pp("proj_out"))?,
        })
    }
}

impl Module for AttnBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self.norm.forward(x)?.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let a = attention(&self.q.forward(&t)?, &self.k.forward(&t)?, &self.v.forward(&t)?, 1, None)?;
        let out = self.proj_out.forward(&a)?.transpose(1, 2)?.reshape((b, c, h, w))?;
        x + out
    }
}

struct Mid {
    block_1: ResnetBlock,
    attn_1: AttnBlock,
    block_2: ResnetBlock,
}

impl Mid {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::new(vb.pp("block_1"))?,
            attn_1: AttnBlock::new(vb.pp("attn_1"))?,
            block_2: ResnetBlock::new(vb.pp("block_2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.block_2.forward(&self.attn_1.forward(&self.block_1.forward(x)?)?)
    }
}

struct Level {
    blocks: Vec<ResnetBlock>,
    resample: Option<Conv2d>,
}

impl Level {
    fn new(vb: VarBuilder, resample: &str, stride: usize, padding: usize) -> Result<Self> {
        let n = (0..).take_while(|j| vb.contains_tensor(&format!("block.{j}.norm1.weight"))).count();
        Ok(Self {
            blocks: (0..n).map(|j| ResnetBlock::new(vb.pp(format!("block.{j}")))).collect::<Result<_>>()?,
            resample: if vb.contains_tensor(&format!("{resample}.conv.weight")) {
                Some(conv2d(&vb.pp(resample).pp("conv"), stride, padding)?)
            } else {
                None
            },
        })
    }
}

fn count_levels(vb: &VarBuilder, prefix: &str) -> usize {
    (0..).take_while(|i| vb.contains_tensor(&format!("{prefix}.{i}.block.0.norm1.weight"))).count()
}

pub struct Encoder {
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
}

pub struct Decoder {
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid: Mid,
    /// Index 0 is the full-resolution level, as in the checkpoint (`up.0`).
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

pub struct AutoEncoder {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub scaling_factor: f64,
    /// Image pixels per latent pixel.
    pub downscale: usize,
    /// What its weights compute in; inputs of any dtype are cast to it on the way in
    /// (the UNet's latents may be f16 while the VAE runs in bf16 or f32).
    pub dtype: DType,
}

impl AutoEncoder {
    /// `vb` points at the `vae` component.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let quant = |name: &str| -> Result<Option<Conv2d>> {
            if vb.contains_tensor(&format!("{name}.weight")) {
                Ok(Some(conv2d(&vb.pp(name), 1, 0)?))
            } else {
                Ok(None)
            }
        };
        let e = vb.pp("encoder");
        let d = vb.pp("decoder");
        let n_down = count_levels(&e, "down");
        let n_up = count_levels(&d, "up");
        let encoder = Encoder {
            conv_in: conv2d(&e.pp("conv_in"), 1, 1)?,
            down: (0..n_down).map(|i| Level::new(e.pp(format!("down.{i}")), "downsample", 2, 0)).collect::<Result<_>>()?,
            mid: Mid::new(e.pp("mid"))?,
            norm_out: group_norm(&e.pp("norm_out"), 32, 1e-6)?,
            conv_out: conv2d(&e.pp("conv_out"), 1, 1)?,
            quant_conv: quant("quant_conv")?,
        };
        let decoder = Decoder {
            post_quant_conv: quant("post_quant_conv")?,
            conv_in: conv2d(&d.pp("conv_in"), 1, 1)?,
            mid: Mid::new(d.pp("mid"))?,
            up: (0..n_up).map(|i| Level::new(d.pp(format!("up.{i}")), "upsample", 1, 1)).collect::<Result<_>>()?,
            norm_out: group_norm(&d.pp("norm_out"), 32, 1e-6)?,
            conv_out: conv2d(&d.pp("conv_out"), 1, 1)?,
        };
        let downscale = 1 << encoder.down.iter().filter(|l| l.resample.is_some()).count();
        Ok(Self { encoder, decoder, scaling_factor: SDXL_SCALING_FACTOR, downscale, dtype: vb.dtype() })
    }

    /// Decode scaled latents `[B, 4, h, w]` to images in [-1, 1] (not clamped) `[B, 3, 8h, 8w]`.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        // The decode's full-resolution activations set a generation's peak memory: first hand
        // back what the sampling freed but the allocator kept (~1 GB at 1024²).
        cpu::return_freed_memory();
        // Unscaled in the latent's own precision, as ComfyUI's `process_out`, then cast.
        let z = (latent / self.scaling_factor)?.to_dtype(self.dtype)?;
        let d = &self.decoder;
        let z = match &d.post_quant_conv {
            Some(c) => c.forward(&z)?,
            None => z,
        };
        let mut h = d.mid.forward(&d.conv_in.forward(&z)?)?;
        for level in d.up.iter().rev() {
            for block in &level.blocks {
                h = block.forward(&h)?;
            }
            if let Some(up) = &level.resample {
                h = up.forward_upsampled(&h)?;
            }
        }
        d.conv_out.forward_normalized(&d.norm_out, &h)
    }

    /// Mean and log-variance of the posterior of images in [-1, 1] `[B, 3, H, W]`, unscaled.
    fn encode_moments(&self, image: &Tensor) -> Result<(Tensor, Tensor)> {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(&image.to_dtype(self.dtype)?)?;
        for level in &e.down {
            for block in &level.blocks {
                h = block.forward(&h)?;
            }
            if let Some(down) = &level.resample {
                // LDM pads right and bottom by one, then convolves with stride 2 and no padding.
                h = down.forward(&h.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?)?;
            }
        }
        let h = e.mid.forward(&h)?;
        let h = e.conv_out.forward_normalized(&e.norm_out, &h)?;
        let moments = match &e.quant_conv {
            Some(c) => c.forward(&h)?,
            None => h,
        };
        let z = moments.dim(1)? / 2;
        Ok((moments.narrow(1, 0, z)?, moments.narrow(1, z, z)?))
    }

    /// Posterior mean of images in [-1, 1] `[B, 3, H, W]`, unscaled.
    pub fn encode_mean(&self, image: &Tensor) -> Result<Tensor> {
        Ok(self.encode_moments(image)?.0)
    }

    /// Scaled latent of images in [-1, 1]: the posterior's mean, or a sample of it as Fooocus
    /// draws one (`mean + std · torch.randn(mean.shape)` from the given generator, log-variance
    /// clamped to [-30, 20]), times `scaling_factor`.
    pub fn encode_with(&self, image: &Tensor, posterior: &mut Posterior<'_>) -> Result<Tensor> {
        let (mean, logvar) = self.encode_moments(image)?;
        let z = match posterior {
            Posterior::Mean => mean,
            Posterior::Sample(rng) => {
                let std = (logvar.to_dtype(DType::F32)?.clamp(-30f32, 20f32)? * 0.5)?.exp()?;
                let noise = Tensor::from_vec(rng.randn(mean.elem_count()), mean.shape(), mean.device())?;
                (mean.to_dtype(DType::F32)? + (std * noise)?)?.to_dtype(mean.dtype())?
            }
        };
        z * self.scaling_factor
    }

    /// Scaled latent of images in [-1, 1]: `encode_mean · scaling_factor`.
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        self.encode_mean(image)? * self.scaling_factor
    }

    /// Fooocus's tiled encode (`VAE.encode_tiled_`): ComfyUI tiles of 512 px with 64 overlap,
    /// run three times with tile shapes 512×512, 1024×256 and 256×1024 and averaged; each tile
    /// draws its own posterior sample.
    pub fn encode_tiled_fooocus(&self, image: &Tensor, posterior: &mut Posterior<'_>) -> Result<Tensor> {
        let d = 1.0 / self.downscale as f64;
        let mut sum: Option<Tensor> = None;
        for (tw, th) in [(512, 512), (1024, 256), (256, 1024)] {
            let pass = tiles::tiled_scale(image, tw, th, 64, d, 4, &mut |t| self.encode_with(t, posterior)?.to_dtype(DType::F32))?;
            sum = Some(match sum {
                Some(s) => (s + pass)?,
                None => pass,
            });
        }
        sum.expect("three passes") / 3.0
    }

    /// Fooocus's tiled decode (`VAE.decode_tiled_`): latent tiles of 64 with 16 overlap, three
    /// passes with shapes 32×128, 128×32 and 64×64, averaged. Images in [-1, 1] `[1, 3, 8h, 8w]`.
    pub fn decode_tiled_fooocus(&self, latent: &Tensor) -> Result<Tensor> {
        let up = self.downscale as f64;
        let mut sum: Option<Tensor> = None;
        for (tw, th) in [(32, 128), (128, 32), (64, 64)] {
            let pass = tiles::tiled_scale(latent, tw, th, 16, up, 3, &mut |t| (self.decode(t)? + 1.0)?.to_dtype(DType::F32))?;
            sum = Some(match sum {
                Some(s) => (s + pass)?,
                None => pass,
            });
        }
        (sum.expect("three passes") / 3.0)? - 1.0
    }
}

/// How an encode turns the posterior into a latent.
pub enum Posterior<'a> {
    Mean,
    /// Fooocus's: a sample drawn from torch's global generator.
    Sample(&'a mut crate::rng::TorchRng),
}

/// Tiling for images too large to run through the VAE at once (the mid-block attention is
/// quadratic in pixels). Tiles overlap and are blended with linear ramps, as ComfyUI does.
#[derive(Clone, Copy, Debug)]
pub struct Tiling {
    /// Tile edge in latent pixels.
    pub tile: usize,
    /// Overlap between neighbouring tiles in latent pixels.
    pub overlap: usize,
}

impl Default for Tiling {
    fn default() -> Self {
        Self { tile: 64, overlap: 16 }
    }
}

impl AutoEncoder {
    /// Decode in overlapping tiles; identical to [`decode`](Self::decode) when one tile covers it.
    pub fn decode_tiled(&self, latent: &Tensor, tiling: Tiling) -> Result<Tensor> {
        let (_, _, h, w) = latent.dims4()?;
        if h <= tiling.tile && w <= tiling.tile {
            return self.decode(latent);
        }
        tiles::tiled_scale(latent, tiling.tile, tiling.tile, tiling.overlap, self.downscale as f64, 3, &mut |t| self.decode(t))
    }

    /// Encode in overlapping tiles (tile sizes in latent pixels).
    pub fn encode_tiled(&self, image: &Tensor, tiling: Tiling) -> Result<Tensor> {
        let (_, _, h, w) = image.dims4()?;
        let tile_px = tiling.tile * self.downscale;
        if h <= tile_px && w <= tile_px {
            return self.encode(image);
        }
        let d = self.downscale;
        tiles::tiled_scale(image, tiling.tile * d, tiling.tile * d, tiling.overlap * d, 1.0 / d as f64, 4, &mut |t| self.encode(t))
    }
}
