//! What every sampler shares: the model as a denoiser, the noise injected by stochastic
//! samplers, the step callback and k-diffusion's small helpers. `sampler` (the dispatch and the
//! k-diffusion loops) and `solvers` (the longer solvers) both build on it.

use candle_core::Tensor;

use crate::error::Result;
use crate::rng::TorchRng;

/// The model as seen by a sampler.
pub trait Denoiser {
    fn denoise(&mut self, x: &Tensor, sigma: f32) -> Result<Tensor>;

    /// Called right after the first model call of step `step` (where k-diffusion calls its
    /// step callback); Fooocus swaps to the refiner there.
    fn first_eval_done(&mut self, _step: usize) {}
}

/// Standard-normal noise injected by ancestral and SDE samplers, seeded per image. (Fooocus
/// uses a Brownian tree; its increments are i.i.d. normal, so results agree in distribution.)
pub struct NoiseSource(Option<TorchRng>);

impl NoiseSource {
    pub fn new(seed: u64) -> Self {
        Self(Some(TorchRng::new(seed)))
    }

    /// No noise at all: stochastic samplers reduce to their deterministic part (used to check
    /// that part against reference formulas).
    pub fn silent() -> Self {
        Self(None)
    }

    pub fn sample(&mut self, like: &Tensor) -> Result<Tensor> {
        match &mut self.0 {
            Some(rng) => {
                let data = rng.randn(like.elem_count());
                Ok(Tensor::from_vec(data, like.shape(), like.device())?.to_dtype(like.dtype())?)
            }
            None => Ok(like.zeros_like()?),
        }
    }
}

/// Called after every step with (step index, number of steps, current x, denoised estimate);
/// an error (e.g. cancellation) stops sampling.
pub type StepCallback<'a> = dyn FnMut(usize, usize, &Tensor, &Tensor) -> Result<()> + 'a;

/// `a·x + b·y`
pub(crate) fn lin(x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor> {
    Ok(((x * a)? + (y * b)?)?)
}

/// Derivative `(x − D) / σ` (k-diffusion `to_d`).
pub(crate) fn to_d(x: &Tensor, sigma: f64, denoised: &Tensor) -> Result<Tensor> {
    Ok(((x - denoised)? / sigma)?)
}
