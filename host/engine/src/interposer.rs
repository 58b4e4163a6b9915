//! The SDXL → SD1.5 latent interposer Fooocus runs before an SD1.5 refiner
//! (`extras/vae_interpose.py`, city96's SD-Latent-Interposer v4.0,
//! `models/vae_approx/xl-to-v1_interposer-v4.0.safetensors`): a small residual conv net from
//! an unscaled SDXL latent to an unscaled SD1.5 latent, batch norms in inference mode.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::{EngineError, Result};
use crate::nn::{conv2d, silu, BatchNorm, Conv2d};

/// The file Fooocus downloads on first use, and where from.
pub const FILE_NAME: &str = "xl-to-v1_interposer-v4.0.safetensors";
pub const URL: &str = "https://huggingface.co/mashb1t/misc/resolve/main/xl-to-v1_interposer-v4.0.safetensors";

/// `conv → SiLU → conv → SiLU → conv` (the `long` path of both block kinds).
struct Long([Conv2d; 3]);

impl Long {
    fn new(vb: &VarBuilder) -> candle_core::Result<Self> {
        Ok(Self([conv2d(&vb.pp("0"), 1, 1)?, conv2d(&vb.pp("2"), 1, 1)?, conv2d(&vb.pp("4"), 1, 1)?]))
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = silu(&self.0[0].forward(x)?)?;
        let h = silu(&self.0[1].forward(&h)?)?;
        self.0[2].forward(&h)
    }
}

pub struct Interposer {
    head_short: Conv2d,
    head_long: Long,
    /// `norm(x)`, then `relu(long(x) + x)`.
    blocks: Vec<(BatchNorm, Long)>,
    out_norm: BatchNorm,
    tail: Conv2d,
}

impl Interposer {
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bad = |e: candle_core::Error| EngineError::checkpoint(path, format!("not the latent interposer: {e}"));
        // SAFETY: mapped read-only; focal never writes model files while serving.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }.map_err(bad)?;
        let count = (0..).take_while(|i| vb.contains_tensor(&format!("core.{}.norm.weight", i + 1))).count();
        let blocks = (1..=count)
            .map(|i| Ok((BatchNorm::new(&vb.pp(format!("core.{i}.norm")))?, Long::new(&vb.pp(format!("core.{i}.long")))?)))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(bad)?;
        if blocks.is_empty() {
            return Err(EngineError::checkpoint(path, "not the latent interposer: it has no residual blocks"));
        }
        Ok(Self {
            head_short: conv2d(&vb.pp("head.short"), 1, 1).map_err(bad)?,
            head_long: Long::new(&vb.pp("head.long")).map_err(bad)?,
            out_norm: BatchNorm::new(&vb.pp(format!("core.{}", count + 1))).map_err(bad)?,
            tail: conv2d(&vb.pp("tail"), 1, 1).map_err(bad)?,
            blocks,
        })
    }

    /// Unscaled SDXL latent `[B, 4, h, w]` → unscaled SD1.5 latent of the same size.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let mut h = (self.head_long.forward(&x)? + self.head_short.forward(&x)?)?.relu()?;
        for (norm, long) in &self.blocks {
            let n = norm.forward(&h)?;
            h = (long.forward(&n)? + n)?.relu()?;
        }
        let h = silu(&self.out_norm.forward(&h)?)?;
        Ok(self.tail.forward(&h)?)
    }
}
