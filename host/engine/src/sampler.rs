//! k-diffusion samplers in sigma space with ComfyUI semantics. Each takes a denoiser
//! `D(x; σ)` (the model's estimate of the clean latent) and walks the sigma schedule.

use candle_core::Tensor;

use crate::error::Result;
use crate::sampling::{lin, to_d};
pub use crate::sampling::{Denoiser, NoiseSource, StepCallback};
use crate::schedule::{named_enum, ModelSampling};
use crate::solvers;

named_enum!(
    /// Samplers by their Fooocus/ComfyUI names, in Fooocus's order.
    Sampler {
        Euler = "euler",
        EulerAncestral = "euler_ancestral",
        Heun = "heun",
        HeunPP2 = "heunpp2",
        Dpm2 = "dpm_2",
        Dpm2Ancestral = "dpm_2_ancestral",
        Lms = "lms",
        DpmFast = "dpm_fast",
        DpmAdaptive = "dpm_adaptive",
        DpmPP2SAncestral = "dpmpp_2s_ancestral",
        DpmPPSde = "dpmpp_sde",
        DpmPPSdeGpu = "dpmpp_sde_gpu",
        DpmPP2M = "dpmpp_2m",
        DpmPP2MSde = "dpmpp_2m_sde",
        DpmPP2MSdeGpu = "dpmpp_2m_sde_gpu",
        DpmPP3MSde = "dpmpp_3m_sde",
        DpmPP3MSdeGpu = "dpmpp_3m_sde_gpu",
        Ddpm = "ddpm",
        Lcm = "lcm",
        Tcd = "tcd",
        Restart = "restart",
        Ddim = "ddim",
        UniPc = "uni_pc",
        UniPcBh2 = "uni_pc_bh2",
    }
);

impl Sampler {
    /// ComfyUI computes one extra sigma and drops the penultimate one for these.
    pub fn discards_penultimate_sigma(self) -> bool {
        matches!(self, Sampler::Dpm2 | Sampler::Dpm2Ancestral | Sampler::UniPc | Sampler::UniPcBh2)
    }

    /// Whether this sampler can run on `sampling` (TCD needs the discrete ᾱ table, which EDM
    /// models lack; Fooocus fails on that pair with an attribute error).
    pub fn check_compatible(self, sampling: &ModelSampling) -> Result<()> {
        if self == Sampler::Tcd && sampling.alphas_cumprod.is_empty() {
            return Err(crate::error::EngineError::invalid(
                "sampler_name",
                "'tcd' needs a discrete-time schedule; it cannot run with the edm_playground_v2.5 scheduler",
            ));
        }
        Ok(())
    }

    /// Model evaluations per step (for progress reporting).
    pub fn evals_per_step(self) -> usize {
        match self {
            Sampler::HeunPP2 => 3,
            Sampler::Heun
            | Sampler::Dpm2
            | Sampler::Dpm2Ancestral
            | Sampler::DpmPP2SAncestral
            | Sampler::DpmPPSde
            | Sampler::DpmPPSdeGpu
            | Sampler::Restart => 2,
            _ => 1,
        }
    }
}

/// k-diffusion `linear_multistep_coeff`: ∫ over [t_i, t_{i+1}] of the Lagrange basis polynomial
/// of node `j` (nodes t_i, t_{i−1}, …). The polynomial has degree < 4, so 4-point
/// Gauss–Legendre quadrature is exact.
fn lms_coeff(order: usize, t: &[f64], i: usize, j: usize) -> f64 {
    let basis = |tau: f64| (0..order).filter(|&k| k != j).fold(1.0, |p, k| p * (tau - t[i - k]) / (t[i - j] - t[i - k]));
    const NODES: [(f64, f64); 4] = [
        (-0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
        (-0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
        (0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
        (0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
    ];
    let (a, b) = (t[i], t[i + 1]);
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    NODES.iter().map(|(x, w)| w * basis(mid + half * x)).sum::<f64>() * half
}

/// k-diffusion `get_ancestral_step` with η: (σ_down, σ_up).
fn ancestral_step(from: f64, to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 || to == 0.0 {
        return (to, 0.0);
    }
    let up = to.min(eta * (to * to * (from * from - to * to) / (from * from)).sqrt());
    ((to * to - up * up).sqrt(), up)
}

/// Walk `sigmas` (high to low, usually ending in 0) from `x` with `sampler`. `sampling` is the
/// model's noise schedule (TCD reads its ᾱ table and timesteps).
pub fn sample(
    sampler: Sampler,
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f32],
    sampling: &ModelSampling,
    noise: &mut NoiseSource,
    on_step: &mut StepCallback,
) -> Result<Tensor> {
    sampler.check_compatible(sampling)?;
    match sampler {
        Sampler::DpmFast => return solvers::dpm_fast(model, x, sigmas, on_step),
        Sampler::DpmAdaptive => return solvers::dpm_adaptive(model, x, sigmas, on_step),
        Sampler::UniPc => return solvers::uni_pc(model, x, sigmas, solvers::UniPcVariant::Bh1, on_step),
        Sampler::UniPcBh2 => return solvers::uni_pc(model, x, sigmas, solvers::UniPcVariant::Bh2, on_step),
        Sampler::Restart => return solvers::restart(model, x, sigmas, noise, on_step),
        _ => {}
    }
    let n = sigmas.len() - 1;
    // TCD (η = 0.3): the timestep it re-noises to is ⌊0.7·t(σ)⌋ (in f32, as torch), the last 0.
    let tcd_alphas: Vec<f64> = if sampler == Sampler::Tcd {
        let mut ts: Vec<usize> = sigmas.iter().map(|&v| (0.7f32 * sampling.model_timestep(v)).floor().max(0.0) as usize).collect();
        ts[n] = 0;
        ts.iter().map(|&t| sampling.alphas_cumprod[t.min(sampling.alphas_cumprod.len() - 1)] as f64).collect()
    } else {
        Vec::new()
    };
    let s = |i: usize| sigmas[i] as f64;
    let mut old_denoised: Option<Tensor> = None;
    let mut older_denoised: Option<Tensor> = None;
    let mut h_last: Option<f64> = None;
    let mut h_before_last: Option<f64> = None;
    let mut lms_ds: Vec<Tensor> = Vec::new();
    let sigmas64: Vec<f64> = sigmas.iter().map(|&v| v as f64).collect();
    for i in 0..n {
        let (sigma, next) = (s(i), s(i + 1));
        let denoised = model.denoise(&x, sigmas[i])?;
        model.first_eval_done(i);
        x = match sampler {
            Sampler::Euler | Sampler::Ddim => {
                let d = to_d(&x, sigma, &denoised)?;
                (&x + (d * (next - sigma))?)?
            }
            Sampler::EulerAncestral => {
                let (down, up) = ancestral_step(sigma, next, 1.0);
                let d = to_d(&x, sigma, &denoised)?;
                let x = (&x + (d * (down - sigma))?)?;
                if next > 0.0 {
                    (&x + (noise.sample(&x)? * up)?)?
                } else {
                    x
                }
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
            Sampler::HeunPP2 => {
                let d = to_d(&x, sigma, &denoised)?;
                let dt = next - sigma;
                let end = s(n);
                if next == end {
                    (&x + (d * dt)?)?
                } else {
                    let x2 = (&x + (&d * dt)?)?;
                    let d2 = to_d(&x2, next, &model.denoise(&x2, sigmas[i + 1])?)?;
                    if s(i + 2) == end {
                        // Heun, weighted by the noise level.
                        let w2 = next / (2.0 * s(0));
                        (&x + (lin(&d, 1.0 - w2, &d2, w2)? * dt)?)?
                    } else {
                        let x3 = (&x2 + (&d2 * (s(i + 2) - next))?)?;
                        let d3 = to_d(&x3, s(i + 2), &model.denoise(&x3, sigmas[i + 2])?)?;
                        let (w2, w3) = (next / (3.0 * s(0)), s(i + 2) / (3.0 * s(0)));
                        let d_prime = (lin(&d, 1.0 - w2 - w3, &d2, w2)? + (d3 * w3)?)?;
                        (&x + (d_prime * dt)?)?
                    }
                }
            }
            Sampler::Dpm2Ancestral => {
                let (down, up) = ancestral_step(sigma, next, 1.0);
                let d = to_d(&x, sigma, &denoised)?;
                if down == 0.0 {
                    (&x + (d * (down - sigma))?)?
                } else {
                    let mid = ((sigma.ln() + down.ln()) * 0.5).exp();
                    let x2 = (&x + (d * (mid - sigma))?)?;
                    let d2 = to_d(&x2, mid, &model.denoise(&x2, mid as f32)?)?;
                    let x = (&x + (d2 * (down - sigma))?)?;
                    (&x + (noise.sample(&x)? * up)?)?
                }
            }
            Sampler::Lms => {
                const ORDER: usize = 4;
                lms_ds.push(to_d(&x, sigma, &denoised)?);
                if lms_ds.len() > ORDER {
                    lms_ds.remove(0);
                }
                let order = (i + 1).min(ORDER);
                let mut nx = x.clone();
                for (j, d) in lms_ds.iter().rev().enumerate() {
                    nx = (nx + (d * lms_coeff(order, &sigmas64, i, j))?)?;
                }
                nx
            }
            Sampler::DpmPP2SAncestral => {
                let (down, up) = ancestral_step(sigma, next, 1.0);
                let x = if down == 0.0 {
                    let d = to_d(&x, sigma, &denoised)?;
                    (&x + (d * (down - sigma))?)?
                } else {
                    let (t, t_next) = (-sigma.ln(), -down.ln());
                    let h = t_next - t;
                    let s_mid = t + 0.5 * h;
                    let x2 = lin(&x, (-s_mid).exp() / sigma, &denoised, -(-0.5 * h).exp_m1())?;
                    let denoised2 = model.denoise(&x2, (-s_mid).exp() as f32)?;
                    lin(&x, down / sigma, &denoised2, -(-h).exp_m1())?
                };
                if next > 0.0 {
                    (&x + (noise.sample(&x)? * up)?)?
                } else {
                    x
                }
            }
            Sampler::DpmPP3MSde | Sampler::DpmPP3MSdeGpu => {
                // η = 1.
                if next == 0.0 {
                    denoised.clone()
                } else {
                    let h = (-next.ln()) - (-sigma.ln());
                    let h_eta = 2.0 * h;
                    let mut nx = lin(&x, (-h_eta).exp(), &denoised, -(-h_eta).exp_m1())?;
                    let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
                    match (&old_denoised, &older_denoised, h_last, h_before_last) {
                        (Some(d1), Some(d2), Some(h1), Some(h2)) => {
                            let (r0, r1) = (h1 / h, h2 / h);
                            let d1_0 = ((&denoised - d1)? / r0)?;
                            let d1_1 = ((d1 - d2)? / r1)?;
                            let diff = (&d1_0 - &d1_1)?;
                            let first = (&d1_0 + (&diff * (r0 / (r0 + r1)))?)?;
                            let second = (diff / (r0 + r1))?;
                            let phi_3 = phi_2 / h_eta - 0.5;
                            nx = ((nx + (first * phi_2)?)? - (second * phi_3)?)?;
                        }
                        (Some(d1), _, Some(h1), _) => {
                            let d = ((&denoised - d1)? / (h1 / h))?;
                            nx = (nx + (d * phi_2)?)?;
                        }
                        _ => {}
                    }
                    h_before_last = h_last;
                    h_last = Some(h);
                    let scale = next * (-(-2.0 * h).exp_m1()).sqrt();
                    (&nx + (noise.sample(&nx)? * scale)?)?
                }
            }
            Sampler::Ddpm => {
                // DDPM ancestral step in the variance-preserving frame.
                let eps = ((&x - &denoised)? / sigma)?;
                let x_vp = (&x / (1.0 + sigma * sigma).sqrt())?;
                let ac = 1.0 / (sigma * sigma + 1.0);
                let ac_prev = 1.0 / (next * next + 1.0);
                let alpha = ac / ac_prev;
                let mut mu = ((x_vp - (eps * ((1.0 - alpha) / (1.0 - ac).sqrt()))?)? * (1.0 / alpha).sqrt())?;
                if next > 0.0 {
                    let std = ((1.0 - alpha) * (1.0 - ac_prev) / (1.0 - ac)).sqrt();
                    mu = (&mu + (noise.sample(&mu)? * std)?)?;
                    (mu * (1.0 + next * next).sqrt())?
                } else {
                    mu
                }
            }
            Sampler::Lcm => {
                if next > 0.0 {
                    (&denoised + (noise.sample(&denoised)? * next)?)?
                } else {
                    denoised.clone()
                }
            }
            Sampler::Tcd => {
                // Move the clean estimate to the re-noising timestep s (VP frame), then back to
                // σ_next with fresh noise; on the last step the VP latent at s = 0 is the result.
                let a = tcd_alphas[i + 1];
                let eps = ((&x - &denoised)? / sigma)?;
                let at_s = lin(&denoised, a.sqrt(), &eps, (1.0 - a).sqrt())?;
                if next > 0.0 {
                    let scale = (next * next + 1.0 - 1.0 / a).max(0.0).sqrt();
                    lin(&at_s, 1.0 / a.sqrt(), &noise.sample(&at_s)?, scale)?
                } else {
                    (at_s * (1.0 + next * next).sqrt())?
                }
            }
            Sampler::DpmFast | Sampler::DpmAdaptive | Sampler::UniPc | Sampler::UniPcBh2 | Sampler::Restart => {
                unreachable!("dispatched to crate::solvers above")
            }
        };
        on_step(i, n, &x, &denoised)?;
        older_denoised = old_denoised.take();
        old_denoised = Some(denoised);
    }
    Ok(x)
}
