//! FreeU as Fooocus applies it (`core.apply_freeu` → ComfyUI's `FreeU_V2` output-block patch):
//! before each UNet output block whose incoming hidden state `h` has 4× (b1, s1) or 2× (b2, s2)
//! the model's base channels,
//! * the first half of `h`'s channels is scaled by `(b − 1)·m + 1`, `m` the channel-mean map
//!   normalised to [0, 1] per sample;
//! * the skip connection is Fourier-filtered: its lowest frequencies (the 2×2 bins around the
//!   centre after `fftshift`, i.e. frequencies {0, −1} on each axis) are scaled by `s`.
//!
//! The filter is computed without an FFT: scaling a set of DFT bins by `s` adds `(s − 1)` times
//! the projection onto those frequencies, which is separable: `Re(A_H·x·A_Wᵀ)` with
//! `A_N = (1/N)·Σ_k e_k e_kᴴ`, i.e. `R_H·x·R_Wᵀ − I_H·x·I_Wᵀ` for its real and imaginary parts.

use candle_core::{DType, Device, Result, Tensor, D};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreeU {
    pub b1: f64,
    pub b2: f64,
    pub s1: f64,
    pub s2: f64,
}

impl FreeU {
    /// The (backbone, skip) factors for an output block whose incoming `h` has `channels`.
    pub fn factors(&self, channels: usize, model_channels: usize) -> Option<(f64, f64)> {
        if channels == model_channels * 4 {
            Some((self.b1, self.s1))
        } else if channels == model_channels * 2 {
            Some((self.b2, self.s2))
        } else {
            None
        }
    }

    /// Patch `(h, skip)` as the output block would receive them.
    pub fn apply(&self, h: &Tensor, skip: &Tensor, model_channels: usize) -> Result<(Tensor, Tensor)> {
        let Some((b, s)) = self.factors(h.dim(1)?, model_channels) else { return Ok((h.clone(), skip.clone())) };
        Ok((scale_backbone(h, b)?, fourier_filter(skip, s)?))
    }
}

/// `h[:, :C/2] *= (b − 1)·m + 1` with `m` the per-sample min-max normalised channel mean.
fn scale_backbone(h: &Tensor, b: f64) -> Result<Tensor> {
    let (n, c, height, width) = h.dims4()?;
    let dtype = h.dtype();
    let hf = h.to_dtype(DType::F32)?;
    let mean = hf.mean_keepdim(1)?; // [B,1,H,W]
    let flat = mean.reshape((n, height * width))?;
    let min = flat.min_keepdim(D::Minus1)?.reshape((n, 1, 1, 1))?;
    let max = flat.max_keepdim(D::Minus1)?.reshape((n, 1, 1, 1))?;
    let m = mean.broadcast_sub(&min)?.broadcast_div(&(max - &min)?)?;
    let factor = ((m * (b - 1.0))? + 1.0)?;
    let half = c / 2;
    let first = hf.narrow(1, 0, half)?.broadcast_mul(&factor)?;
    let rest = hf.narrow(1, half, c - half)?;
    Tensor::cat(&[first, rest], 1)?.to_dtype(dtype)
}

/// The real and imaginary parts of `A_N = (1/N)·Σ_{k∈{0,−1}} e_k e_kᴴ` (`k` taken mod N, once).
fn low_pass_projection(n: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let freqs: Vec<usize> = if n == 1 { vec![0] } else { vec![0, n - 1] };
    let mut re = vec![0f32; n * n];
    let mut im = vec![0f32; n * n];
    for m in 0..n {
        for j in 0..n {
            for &k in &freqs {
                let angle = 2.0 * std::f64::consts::PI * (k * ((m + n - j) % n)) as f64 / n as f64;
                re[m * n + j] += (angle.cos() / n as f64) as f32;
                im[m * n + j] += (angle.sin() / n as f64) as f32;
            }
        }
    }
    Ok((Tensor::from_vec(re, (n, n), device)?, Tensor::from_vec(im, (n, n), device)?))
}

/// ComfyUI's `Fourier_filter(x, threshold=1, scale=s)`, in float32.
pub fn fourier_filter(x: &Tensor, s: f64) -> Result<Tensor> {
    let (_, _, height, width) = x.dims4()?;
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let (rh, ih) = low_pass_projection(height, x.device())?;
    let (rw, iw) = low_pass_projection(width, x.device())?;
    let real = rh.broadcast_matmul(&xf)?.broadcast_matmul(&rw.t()?)?;
    let imag = ih.broadcast_matmul(&xf)?.broadcast_matmul(&iw.t()?)?;
    let low = (real - imag)?;
    (xf + (low * (s - 1.0))?)?.to_dtype(dtype)
}
