//! k-diffusion samplers in sigma space with ComfyUI semantics. Each takes a denoiser
//! `D(x; σ)` (the model's estimate of the clean latent) and walks the sigma schedule.

use candle_core::Tensor;

use crate::error::Result;
use crate::rng::TorchRng;
use crate::schedule::named_enum;

named_enum!(
    /// Samplers by their Fooocus/ComfyUI names.
    Sampler {
        Euler = "euler",
        EulerAncestral = "euler_ancestral",
        Heun = "heun",
        Dpm2 = "dpm_2",
        DpmPP2M = "dpmpp_2m",
        DpmPP2MSde = "dpmpp_2m_sde",
        DpmPP2MSdeGpu = "dpmpp_2m_sde_gpu",
        DpmPPSde = "dpmpp_sde",
        DpmPPSdeGpu = "dpmpp_sde_gpu",
        Ddim = "ddim",
        Lcm = "lcm",
    }
);

impl Sampler {
    /// ComfyUI computes one extra sigma and drops the penultimate one for these.
    pub fn discards_penultimate_sigma(self) -> bool {
        matches!(self, Sampler::Dpm2)
    }

    /// Model evaluations per step (for progress reporting).
    pub fn evals_per_step(self) -> usize {
        match self {
            Sampler::Heun | Sampler::Dpm2 | Sampler::DpmPPSde | Sampler::DpmPPSdeGpu => 2,
            _ => 1,
        }
    }
}

/// The model as seen by a sampler.
pub trait Denoiser {
    fn denoise(&mut self, x: &Tensor, sigma: f32) -> Result<Tensor>;
}

/// Standard-normal noise injected by ancestral and SDE samplers, seeded per image. (Fooocus
/// uses a Brownian tree; its increments are i.i.d. normal, so results agree in distribution.)
pub struct NoiseSource(TorchRng);

impl NoiseSource {
    pub fn new(seed: u64) -> Self {
        Self(TorchRng::new(seed))
    }

    pub fn sample(&mut self, like: &Tensor) -> Result<Tensor> {
        let data = self.0.randn(like.elem_count());
        Ok(Tensor::from_vec(data, like.shape(), like.device())?.to_dtype(like.dtype())?)
    }
}

/// Called after every step with (step index, number of steps, current x, denoised estimate);
/// an error (e.g. cancellation) stops sampling.
pub type StepCallback<'a> = dyn FnMut(usize, usize, &Tensor, &Tensor) -> Result<()> + 'a;

/// `a·x + b·y`
fn lin(x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor> {
    Ok(((x * a)? + (y * b)?)?)
}

/// Derivative `(x − D) / σ` (k-diffusion `to_d`).
fn to_d(x: &Tensor, sigma: f64, denoised: &Tensor) -> Result<Tensor> {
    Ok(((x - denoised)? / sigma)?)
}

/// k-diffusion `get_ancestral_step` with η: (σ_down, σ_up).
fn ancestral_step(from: f64, to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 || to == 0.0 {
        return (to, 0.0);
    }
    let up = to.min(eta * (to * to * (from * from - to * to) / (from * from)).sqrt());
    ((to * to - up * up).sqrt(), up)
}

pub fn sample(
    sampler: Sampler,
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f32],
    noise: &mut NoiseSource,
    on_step: &mut StepCallback,
) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    let s = |i: usize| sigmas[i] as f64;
    let mut old_denoised: Option<Tensor> = None;
    let mut h_last: Option<f64> = None;
    for i in 0..n {
        let (sigma, next) = (s(i), s(i + 1));
        let denoised = model.denoise(&x, sigmas[i])?;
        x = match sampler {
            Sampler::Euler | Sampler::Ddim => {
                let d = to_d(&x, sigma, &denoised)?;
                (&x + (d * (next - sigma))?)?
            }
            Sampler::EulerAncestral => {
                let (down, up) = ancestral_step(sigma, next, 1.0);
                let d = to_d(&x, sigma, &denoised)?;
                let x = (&x + (d * (down - sigma))?)?;
                if next > 0.0 { (&x + (noise.sample(&x)? * up)?)? } else { x }
            }
            Sampler::Heun | Sampler::Dpm2 if next == 0.0 => {
                let d = to_d(&x, sigma, &denoised)?;
                (&x + (d * (next - sigma))?)?
            }
            Sampler::Heun => {
                let d = to_d(&x, sigma, &denoised)?;
                let x2 = (&x + (&d * (next - sigma))?)?;
                let d2 = to_d(&x2, next, &model.denoise(&x2, sigmas[i + 1])?)?;
                (&x + (((d + d2)? * 0.5)? * (next - sigma))?)?
            }
            Sampler::Dpm2 => {
                let mid = ((sigma.ln() + next.ln()) * 0.5).exp();
                let d = to_d(&x, sigma, &denoised)?;
                let x2 = (&x + (d * (mid - sigma))?)?;
                let d2 = to_d(&x2, mid, &model.denoise(&x2, mid as f32)?)?;
                (&x + (d2 * (next - sigma))?)?
            }
            Sampler::DpmPP2M => {
                if next == 0.0 {
                    denoised.clone()
                } else {
                    let (t, t_next) = (-sigma.ln(), -next.ln());
                    let h = t_next - t;
                    let coef = -(-h).exp_m1();
                    let d = match (&old_denoised, i) {
                        (Some(old), i) if i > 0 => {
                            let r = (t - (-s(i - 1).ln())) / h;
                            lin(&denoised, 1.0 + 1.0 / (2.0 * r), old, -1.0 / (2.0 * r))?
                        }
                        _ => denoised.clone(),
                    };
                    lin(&x, next / sigma, &d, coef)?
                }
            }
            Sampler::DpmPP2MSde | Sampler::DpmPP2MSdeGpu => {
                if next == 0.0 {
                    h_last = None;
                    denoised.clone()
                } else {
                    // η = 1, midpoint solver.
                    let (t, s_) = (-sigma.ln(), -next.ln());
                    let h = s_ - t;
                    let eta_h = h;
                    let mut nx = lin(&x, next / sigma * (-eta_h).exp(), &denoised, -(-h - eta_h).exp_m1())?;
                    if let (Some(old), Some(hl)) = (&old_denoised, h_last) {
                        let r = hl / h;
                        let diff = (&denoised - old)?;
                        nx = (nx + (diff * (0.5 * -(-h - eta_h).exp_m1() / r))?)?;
                    }
                    let scale = next * (-(-2.0 * eta_h).exp_m1()).sqrt();
                    h_last = Some(h);
                    (&nx + (noise.sample(&nx)? * scale)?)?
                }
            }
            Sampler::DpmPPSde | Sampler::DpmPPSdeGpu => {
                if next == 0.0 {
                    let d = to_d(&x, sigma, &denoised)?;
                    (&x + (d * (next - sigma))?)?
                } else {
                    // r = 1/2, η = 1.
                    let (t, t_next) = (-sigma.ln(), -next.ln());
                    let h = t_next - t;
                    let s_mid = t + h * 0.5;
                    let sigma_s = (-s_mid).exp();
                    let (sd, su) = ancestral_step(sigma, sigma_s, 1.0);
                    let s_ = -sd.ln();
                    let x2 = lin(&x, sd / sigma, &denoised, -(t - s_).exp_m1())?;
                    let x2 = (&x2 + (noise.sample(&x2)? * su)?)?;
                    let denoised2 = model.denoise(&x2, sigma_s as f32)?;
                    let (sd, su) = ancestral_step(sigma, next, 1.0);
                    let t_next_ = -sd.ln();
                    // With r = 1/2 the combination (1 − 1/2r)·D + (1/2r)·D₂ is just D₂.
                    let nx = lin(&x, sd / sigma, &denoised2, -(t - t_next_).exp_m1())?;
                    (&nx + (noise.sample(&nx)? * su)?)?
                }
            }
            Sampler::Lcm => {
                if next > 0.0 { (&denoised + (noise.sample(&denoised)? * next)?)? } else { denoised.clone() }
            }
        };
        on_step(i, n, &x, &denoised)?;
        old_denoised = Some(denoised);
    }
    Ok(x)
}
