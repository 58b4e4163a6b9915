//! The SDXL autoencoder (LDM naming), with the number of levels, res blocks and channels read
//! from the checkpoint.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, GroupNorm, Linear, VarBuilder};

use crate::nn::{attention, conv2d, group_norm, linear, silu};

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
        let h = self.conv1.forward(&silu(&self.norm1.forward(x)?)?)?;
        let h = self.conv2.forward(&silu(&self.norm2.forward(&h)?)?)?;
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
        Ok(Self { encoder, decoder, scaling_factor: SDXL_SCALING_FACTOR, downscale })
    }

    /// Decode scaled latents `[B, 4, h, w]` to images in [-1, 1] (not clamped) `[B, 3, 8h, 8w]`.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        let z = (latent / self.scaling_factor)?;
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
                let (_, _, hh, ww) = h.dims4()?;
                h = up.forward(&h.upsample_nearest2d(hh * 2, ww * 2)?)?;
            }
        }
        d.conv_out.forward(&silu(&d.norm_out.forward(&h)?)?)
    }

    /// Posterior mean of images in [-1, 1] `[B, 3, H, W]`, unscaled.
    pub fn encode_mean(&self, image: &Tensor) -> Result<Tensor> {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(image)?;
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
        let h = e.conv_out.forward(&silu(&e.norm_out.forward(&h)?)?)?;
        let moments = match &e.quant_conv {
            Some(c) => c.forward(&h)?,
            None => h,
        };
        let z = moments.dim(1)? / 2;
        moments.narrow(1, 0, z)
    }

    /// Scaled latent of images in [-1, 1]: `encode_mean · scaling_factor`.
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        self.encode_mean(image)? * self.scaling_factor
    }
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

/// Start offsets of tiles of `tile` with `overlap` covering `len`.
fn tile_starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let stride = (tile - overlap).max(1);
    let mut starts: Vec<usize> = (0..).map(|i| i * stride).take_while(|&s| s + tile < len).collect();
    starts.push(len - tile);
    starts
}

/// Blend weights for a tile: a ramp over `feather` pixels at every edge that touches a
/// neighbour, 1 elsewhere.
fn feather_mask(h: usize, w: usize, feather: usize, edges: [bool; 4], device: &candle_core::Device) -> Result<Tensor> {
    let ramp = |i: usize, n: usize, lo: bool, hi: bool| -> f32 {
        let mut v = 1.0f32;
        if lo && i < feather {
            v = v.min((i + 1) as f32 / (feather + 1) as f32);
        }
        if hi && n - 1 - i < feather {
            v = v.min((n - i) as f32 / (feather + 1) as f32);
        }
        v
    };
    let [top, bottom, left, right] = edges;
    let data: Vec<f32> = (0..h).flat_map(|y| (0..w).map(move |x| ramp(y, h, top, bottom) * ramp(x, w, left, right))).collect();
    Tensor::from_vec(data, (1, 1, h, w), device)
}

impl AutoEncoder {
    /// Run `f` over overlapping `tile`×`tile` crops of `input` (`[B, C, H, W]`, sizes in input
    /// pixels) and blend the outputs, whose spatial size is the input's times `num/den`.
    fn tiled(
        &self,
        input: &Tensor,
        tile: usize,
        overlap: usize,
        (num, den): (usize, usize),
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (_, _, h, w) = input.dims4()?;
        let ys = tile_starts(h, tile, overlap);
        let xs = tile_starts(w, tile, overlap);
        let (full_h, full_w) = (h * num / den, w * num / den);
        let mut acc: Option<Tensor> = None;
        let mut weight: Option<Tensor> = None;
        for (iy, &y0) in ys.iter().enumerate() {
            for (ix, &x0) in xs.iter().enumerate() {
                let crop = input.narrow(2, y0, tile.min(h))?.narrow(3, x0, tile.min(w))?;
                let out = f(&crop)?.to_dtype(candle_core::DType::F32)?;
                let (b, c, oh, ow) = out.dims4()?;
                let edges = [iy > 0, iy + 1 < ys.len(), ix > 0, ix + 1 < xs.len()];
                let mask = feather_mask(oh, ow, overlap * num / den, edges, out.device())?;
                let (oy, ox) = (y0 * num / den, x0 * num / den);
                let place =
                    |t: &Tensor| -> Result<Tensor> { t.pad_with_zeros(2, oy, full_h - oy - oh)?.pad_with_zeros(3, ox, full_w - ox - ow) };
                let contrib = place(&out.broadcast_mul(&mask)?)?;
                let m = place(&mask.broadcast_as((b, c, oh, ow))?.contiguous()?)?;
                acc = Some(match acc {
                    Some(a) => (a + contrib)?,
                    None => contrib,
                });
                weight = Some(match weight {
                    Some(wt) => (wt + m)?,
                    None => m,
                });
            }
        }
        acc.expect("at least one tile") / weight.expect("at least one tile")
    }

    /// Decode in overlapping tiles; identical to [`decode`](Self::decode) when one tile covers it.
    pub fn decode_tiled(&self, latent: &Tensor, tiling: Tiling) -> Result<Tensor> {
        let (_, _, h, w) = latent.dims4()?;
        if h <= tiling.tile && w <= tiling.tile {
            return self.decode(latent);
        }
        self.tiled(latent, tiling.tile, tiling.overlap, (self.downscale, 1), |t| self.decode(t))
    }

    /// Encode in overlapping tiles (tile sizes in latent pixels).
    pub fn encode_tiled(&self, image: &Tensor, tiling: Tiling) -> Result<Tensor> {
        let (_, _, h, w) = image.dims4()?;
        let tile_px = tiling.tile * self.downscale;
        if h <= tile_px && w <= tile_px {
            return self.encode(image);
        }
        let d = self.downscale;
        self.tiled(image, tiling.tile * d, tiling.overlap * d, (1, d), |t| self.encode(t))
    }
}
