//! ESRGAN's RRDBNet (`ldm_patched/pfn/architecture/RRDB.py`), the super-resolution network
//! Fooocus runs before every upscale and for small inpaint crops, with its shape read from the
//! weights: filters and growth channels from conv shapes, the number of RRDB blocks from the
//! keys, the scale from the number of up-convolutions, Real-ESRGAN's pixel-unshuffle input from
//! the input channels. Loads the old layout (`model.N…`, Fooocus's
//! `fooocus_upscaler_s409985e5.bin` after its `residual_block_` → `RDB` rename) and the new
//! one (`conv_first`, `body.N.rdbK`, `conv_up1` …, Real-ESRGAN, 4x-UltraSharp), from torch
//! files or safetensors. Runs in ComfyUI's 512 px tiles with 32 px overlap.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};

use crate::error::{EngineError, Result};
use crate::image::RgbImage;
use crate::nn::Conv2d;
use crate::tiles::tiled_scale;

/// Fooocus's upscaler file (`models/upscale_models/`).
pub const FOOOCUS_UPSCALER: &str = "fooocus_upscaler_s409985e5.bin";

/// `ImageUpscaleWithModel`'s tiling.
const TILE: usize = 512;
const TILE_OVERLAP: usize = 32;

/// On the GEMM forms: their sums round the upscaler's 8-bit output exactly as Fooocus's
/// PyTorch does on the parity fixtures (a fast upscale is byte-identical); the direct form's
/// order moves a few pixels by one level, which Fooocus's upscale diffusion then amplifies.
fn conv(weight: Tensor, bias: Option<Tensor>) -> candle_core::Result<Conv2d> {
    Conv2d::on_gemm(weight, bias, 1, 1)
}

fn leaky_relu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.maximum(&(x * 0.2)?)
}

/// Five densely connected convolutions (`ResidualDenseBlock_5C`).
struct DenseBlock {
    convs: [Conv2d; 5],
}

impl DenseBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut features = vec![x.clone()];
        for (i, c) in self.convs.iter().enumerate() {
            let input = Tensor::cat(&features, 1)?;
            let y = c.forward(&input)?;
            if i == 4 {
                return (y * 0.2)? + x;
            }
            features.push(leaky_relu(&y)?);
        }
        unreachable!("five convolutions")
    }
}

pub struct Esrgan {
    first: Conv2d,
    blocks: Vec<[DenseBlock; 3]>,
    trunk: Conv2d,
    ups: Vec<Conv2d>,
    hr: Conv2d,
    last: Conv2d,
    /// Real-ESRGAN x2/x1 models take a pixel-unshuffled input.
    unshuffle: usize,
    /// Output pixels per input pixel.
    pub scale: usize,
}

/// Old-layout names for a new-layout state dict (`RRDB.py:new_to_old_arch`), the Fooocus file's
/// `residual_block_` rename, and `params_ema` unwrapped by the caller.
fn old_layout(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let tensors: HashMap<String, Tensor> = tensors.into_iter().map(|(k, v)| (k.replace("residual_block_", "RDB"), v)).collect();
    if !tensors.contains_key("conv_first.weight") {
        return tensors;
    }
    let blocks =
        tensors.keys().filter_map(|k| k.strip_prefix("body.")?.split('.').next()?.parse::<usize>().ok()).max().map_or(0, |m| m + 1);
    let mut out = HashMap::new();
    for (k, v) in tensors {
        let parts: Vec<&str> = k.split('.').collect();
        let name = match parts.as_slice() {
            ["conv_first", kind] => format!("model.0.{kind}"),
            ["trunk_conv" | "conv_body", kind] => format!("model.1.sub.{blocks}.{kind}"),
            ["body" | "RRDB_trunk", n, rdb, conv, kind] => {
                let r = rdb.trim_start_matches("rdb").trim_start_matches("RDB");
                format!("model.1.sub.{n}.RDB{r}.{conv}.0.{kind}")
            }
            [up, kind] if up.starts_with("conv_up") || up.starts_with("upconv") => {
                let n: usize = up.trim_start_matches("conv_up").trim_start_matches("upconv").parse().unwrap_or(0);
                format!("model.{}.{kind}", n * 3)
            }
            ["HRconv" | "conv_hr", kind] => format!("hr.{kind}"),
            ["conv_last", kind] => format!("last.{kind}"),
            _ => k,
        };
        out.insert(name, v);
    }
    // HR and last convolutions follow the up-convolutions: model.{3n+2}, model.{3n+4}.
    let ups =
        out.keys().filter_map(|k| k.strip_prefix("model.")?.strip_suffix(".weight")?.parse::<usize>().ok()).filter(|&n| n >= 3).count();
    for (from, to) in [("hr", 3 * ups + 2), ("last", 3 * ups + 4)] {
        for kind in ["weight", "bias"] {
            if let Some(t) = out.remove(&format!("{from}.{kind}")) {
                out.insert(format!("model.{to}.{kind}"), t);
            }
        }
    }
    out
}

impl Esrgan {
    /// From a `.pth`/`.bin` torch file or `.safetensors`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = crate::torch_file::state_dict(path, &["params_ema", "params"])?.into_iter().collect();
        Self::from_tensors(tensors, device).map_err(|e| match e {
            EngineError::InvalidRequest { message, .. } => EngineError::checkpoint(path, message),
            other => other,
        })
    }

    pub fn from_tensors(tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let unsupported =
            |what: &str| EngineError::invalid("upscale_model", format!("not an ESRGAN/RRDBNet model this engine runs: {what}"));
        if tensors.keys().any(|k| k.contains("conv1x1")) {
            return Err(unsupported("ESRGAN+ (conv1x1 residuals)"));
        }
        let mut t = old_layout(tensors);
        let nb = (0..).take_while(|i| t.contains_key(&format!("model.1.sub.{i}.RDB1.conv1.0.weight"))).count();
        let mut take = |name: &str| -> Result<Tensor> {
            let v = t.remove(name).ok_or_else(|| unsupported(&format!("missing {name}")))?;
            Ok(v.to_dtype(DType::F32)?.to_device(device)?)
        };
        let first_w = take("model.0.weight")?;
        if first_w.dim(3)? != 3 {
            return Err(unsupported("2×2 convolutions"));
        }
        let in_nc = first_w.dim(1)?;
        let first = conv(first_w, Some(take("model.0.bias")?))?;
        let mut blocks = Vec::new();
        for i in 0..nb {
            let mut dense = |r: usize| -> Result<DenseBlock> {
                let mut convs = Vec::new();
                for c in 1..=5 {
                    let p = format!("model.1.sub.{i}.RDB{r}.conv{c}.0");
                    convs.push(conv(take(&format!("{p}.weight"))?, Some(take(&format!("{p}.bias"))?))?);
                }
                Ok(DenseBlock { convs: convs.try_into().map_err(|_| unsupported("dense block"))? })
            };
            blocks.push([dense(1)?, dense(2)?, dense(3)?]);
        }
        if nb == 0 {
            return Err(unsupported("no RRDB blocks"));
        }
        let trunk = conv(take(&format!("model.1.sub.{nb}.weight"))?, Some(take(&format!("model.1.sub.{nb}.bias"))?))?;
        let mut ups = Vec::new();
        while let Ok(w) = take(&format!("model.{}.weight", 3 * (ups.len() + 1))) {
            let b = take(&format!("model.{}.bias", 3 * (ups.len() + 1)))?;
            ups.push(conv(w, Some(b))?);
            if ups.len() > 4 {
                return Err(unsupported("more than four up-convolutions"));
            }
        }
        let n = ups.len();
        let hr = conv(take(&format!("model.{}.weight", 3 * n + 2))?, Some(take(&format!("model.{}.bias", 3 * n + 2))?))?;
        let last_w = take(&format!("model.{}.weight", 3 * n + 4))?;
        let out_nc = last_w.dim(0)?;
        let last = conv(last_w, Some(take(&format!("model.{}.bias", 3 * n + 4))?))?;
        if out_nc != 3 {
            return Err(unsupported(&format!("{out_nc} output channels")));
        }
        let unshuffle = match in_nc / out_nc {
            1 if in_nc == 3 => 1,
            4 if in_nc == 12 => 2,
            16 if in_nc == 48 => 4,
            _ => return Err(unsupported(&format!("{in_nc} input channels"))),
        };
        let scale = (1usize << n) / unshuffle;
        if scale == 0 {
            return Err(unsupported("scale below 1"));
        }
        Ok(Self { first, blocks, trunk, ups, hr, last, unshuffle, scale })
    }

    /// `[1, 3, h, w]` in [0, 1] → `[1, 3, h·scale, w·scale]` (unclamped).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let input = if self.unshuffle > 1 {
            let f = self.unshuffle;
            let (ph, pw) = ((f - h % f) % f, (f - w % f) % f);
            pixel_unshuffle(&reflect_pad(x, ph, pw)?, f)?
        } else {
            x.clone()
        };
        let fea = self.first.forward(&input)?;
        let mut trunk = fea.clone();
        for rrdb in &self.blocks {
            let out = rrdb[2].forward(&rrdb[1].forward(&rrdb[0].forward(&trunk)?)?)?;
            trunk = ((out * 0.2)? + trunk)?;
        }
        let mut y = (self.trunk.forward(&trunk)? + fea)?;
        for up in &self.ups {
            let (_, _, hh, ww) = y.dims4()?;
            y = leaky_relu(&up.forward(&y.upsample_nearest2d(hh * 2, ww * 2)?)?)?;
        }
        let y = self.last.forward(&leaky_relu(&self.hr.forward(&y)?)?)?;
        if self.unshuffle > 1 {
            y.narrow(2, 0, h * self.scale)?.narrow(3, 0, w * self.scale)
        } else {
            Ok(y)
        }
    }

    /// Fooocus's `perform_upscale`: the image through the network in 512 px tiles, clamped to
    /// [0, 1] and truncated to bytes.
    pub fn upscale(&self, image: &RgbImage, device: &Device) -> Result<RgbImage> {
        let _span = tracing::info_span!("engine.upscale", width = image.width, height = image.height, scale = self.scale).entered();
        let input = image.to_tensor(device)?;
        let out = tiled_scale(&input, TILE, TILE, TILE_OVERLAP, self.scale as f64, 3, &mut |t| self.forward(t))?;
        RgbImage::from_tensor(&out.clamp(0f32, 1f32)?.get(0)?)
    }
}

/// `F.pad(x, (0, pw, 0, ph), "reflect")`.
fn reflect_pad(x: &Tensor, ph: usize, pw: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let mut x = x.clone();
    if pw > 0 {
        let cols: Vec<Tensor> = (0..pw).map(|i| x.narrow(3, w - 2 - i, 1)).collect::<candle_core::Result<_>>()?;
        x = Tensor::cat(&[&[x.clone()], cols.as_slice()].concat(), 3)?;
    }
    if ph > 0 {
        let rows: Vec<Tensor> = (0..ph).map(|i| x.narrow(2, h - 2 - i, 1)).collect::<candle_core::Result<_>>()?;
        x = Tensor::cat(&[&[x.clone()], rows.as_slice()].concat(), 2)?;
    }
    Ok(x)
}

/// `torch.pixel_unshuffle`: `[B, C, H·f, W·f]` → `[B, C·f², H, W]`.
fn pixel_unshuffle(x: &Tensor, f: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h / f, f, w / f, f))?.permute((0, 1, 3, 5, 2, 4))?.reshape((b, c * f * f, h / f, w / f))
}
