//! The discrete SDXL noise schedule (ComfyUI `ModelSamplingDiscrete`, EPS) and the sigma
//! schedulers Fooocus offers. Arithmetic follows ComfyUI's tensor dtypes (tables built in f64 and
//! stored as f32, schedules computed in f32) so results agree to ~1 ulp.

/// Number of training timesteps of SDXL.
pub const TIMESTEPS: usize = 1000;

/// How the model's output becomes a denoised estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// `x0 = x − σ·ε`.
    Eps,
    /// LCM: `c_out·(x − σ·ε) + c_skip·x` with σ_data 0.5 and the timestep scaled by 10.
    Lcm,
    /// Playground v2.5's EDM preconditioning (σ_data 0.5): input `x/√(σ²+¼)`,
    /// `D = x·¼/(σ²+¼) + out·σ·½/√(σ²+¼)`, timestep `¼·ln σ` (continuous).
    Edm,
}

/// σ_data of the EDM parameterisation Playground v2.5 uses.
pub const EDM_SIGMA_DATA: f64 = 0.5;

/// Sigma table of a discrete-time model with the scaled-linear beta schedule. A distilled table
/// (Fooocus's `lcm`/`tcd` schedulers) keeps every 20th of the 1000 sigmas, timestep `20·i + 19`.
#[derive(Debug, Clone)]
pub struct ModelSampling {
    pub sigmas: Vec<f32>,
    pub log_sigmas: Vec<f32>,
    /// Training timesteps per table entry (1, or 20 when distilled).
    pub skip_steps: usize,
    pub prediction: Prediction,
    /// ᾱ of every training timestep (the full 1000 even when distilled; empty for EDM, which
    /// has none): the `tcd` sampler reads it.
    pub alphas_cumprod: Vec<f32>,
}

impl ModelSampling {
    /// SDXL: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2.
    pub fn sdxl() -> Self {
        Self::scaled_linear(0.00085, 0.012, TIMESTEPS)
    }

    pub fn scaled_linear(beta_start: f64, beta_end: f64, n: usize) -> Self {
        let (a, b) = (beta_start.sqrt(), beta_end.sqrt());
        let mut alpha_cumprod = 1.0f64;
        let mut sigmas = Vec::with_capacity(n);
        let mut log_sigmas = Vec::with_capacity(n);
        let mut alphas_cumprod = Vec::with_capacity(n);
        for i in 0..n {
            let beta = (a + (b - a) * i as f64 / (n - 1) as f64).powi(2);
            alpha_cumprod *= 1.0 - beta;
            let sigma = ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt();
            sigmas.push(sigma as f32);
            log_sigmas.push(sigma.ln() as f32);
            alphas_cumprod.push(alpha_cumprod as f32);
        }
        Self { sigmas, log_sigmas, skip_steps: 1, prediction: Prediction::Eps, alphas_cumprod }
    }

    /// ComfyUI `ModelSamplingContinuousEDM` as Fooocus sets it for `edm_playground_v2.5`:
    /// 1000 log-spaced sigmas in [0.002, 120].
    pub fn edm_playground() -> Self {
        let log_sigmas: Vec<f32> = linspace_f32(0.002f64.ln() as f32, 120f64.ln() as f32, TIMESTEPS);
        let sigmas = log_sigmas.iter().map(|l| l.exp()).collect::<Vec<f32>>();
        let log_sigmas = sigmas.iter().map(|s| s.ln()).collect();
        Self { sigmas, log_sigmas, skip_steps: 1, prediction: Prediction::Edm, alphas_cumprod: Vec::new() }
    }

    /// ComfyUI's `ModelSamplingDiscreteDistilled`: 50 of the 1000 sigmas (timesteps 19, 39, …, 999).
    pub fn distilled(&self, prediction: Prediction) -> Self {
        const KEPT: usize = 50;
        let skip = self.sigmas.len() / KEPT;
        let sigmas: Vec<f32> = (0..KEPT).map(|k| self.sigmas[skip - 1 + skip * k]).collect();
        let log_sigmas = sigmas.iter().map(|s| (*s as f64).ln() as f32).collect();
        Self { sigmas, log_sigmas, skip_steps: skip, prediction, alphas_cumprod: self.alphas_cumprod.clone() }
    }

    /// The sampling a scheduler runs on: `lcm` and `tcd` use the distilled table (LCM or EPS
    /// prediction), everything else the full one.
    pub fn for_scheduler(scheduler: Scheduler) -> Self {
        match scheduler {
            Scheduler::Lcm => Self::sdxl().distilled(Prediction::Lcm),
            Scheduler::Tcd => Self::sdxl().distilled(Prediction::Eps),
            Scheduler::EdmPlaygroundV25 => Self::edm_playground(),
            _ => Self::sdxl(),
        }
    }

    pub fn sigma_min(&self) -> f32 {
        self.sigmas[0]
    }

    pub fn sigma_max(&self) -> f32 {
        self.sigmas[self.sigmas.len() - 1]
    }

    /// Nearest integer timestep in log-sigma (ComfyUI quantises; k-diffusion would interpolate).
    pub fn timestep(&self, sigma: f32) -> usize {
        let ls = sigma.ln();
        let mut best = 0;
        let mut best_d = f32::INFINITY;
        for (i, l) in self.log_sigmas.iter().enumerate() {
            let d = (ls - l).abs();
            if d < best_d {
                best_d = d;
                best = i;
            }
        }
        best * self.skip_steps + (self.skip_steps - 1)
    }

    /// The timestep the model is called with: the nearest table entry, or `¼·ln σ` for EDM.
    pub fn model_timestep(&self, sigma: f32) -> f32 {
        match self.prediction {
            Prediction::Edm => 0.25 * sigma.ln(),
            _ => self.timestep(sigma) as f32,
        }
    }

    /// Sigma at a (fractional) timestep, interpolating log-sigma linearly.
    pub fn sigma(&self, t: f32) -> f32 {
        let skip = self.skip_steps as f32;
        let t = ((t - (skip - 1.0)) / skip).clamp(0.0, (self.sigmas.len() - 1) as f32);
        let (lo, hi) = (t.floor() as usize, t.ceil() as usize);
        let w = t - t.floor();
        ((1.0 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()
    }
}

/// `torch.linspace(start, end, n)` in f32 (torch fills the two halves from opposite ends).
pub fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n).map(|i| if i < half { start + step * i as f32 } else { end - step * (n - i - 1) as f32 }).collect()
}

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn name(self) -> &'static str { match self { $($name::$variant => $text),+ } }
            pub fn names() -> Vec<&'static str> { Self::ALL.iter().map(|v| v.name()).collect() }
        }
        impl std::str::FromStr for $name {
            type Err = $crate::error::EngineError;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| $crate::error::EngineError::InvalidRequest {
                    field: stringify!($name).to_lowercase(),
                    message: format!("unknown name '{}'; valid: {}", s, Self::names().join(", ")),
                })
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.name()) }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use named_enum;

named_enum!(
    /// Sigma schedulers by their Fooocus/ComfyUI names.
    Scheduler {
        Normal = "normal",
        Karras = "karras",
        Exponential = "exponential",
        SgmUniform = "sgm_uniform",
        Simple = "simple",
        DdimUniform = "ddim_uniform",
        Lcm = "lcm",
        Turbo = "turbo",
        AlignYourSteps = "align_your_steps",
        Tcd = "tcd",
        EdmPlaygroundV25 = "edm_playground_v2.5",
    }
);

/// NVIDIA's Align Your Steps noise levels for SDXL (as ComfyUI/Fooocus ship them).
const AYS_SDXL: [f64; 11] = [
    14.6146412293,
    6.3184485287,
    3.7681790315,
    2.1811480769,
    1.3405244945,
    0.8620721141,
    0.5550693289,
    0.3798540708,
    0.2332364134,
    0.1114188177,
    0.0291671582,
];

/// AYS table log-linearly resampled to `steps + 1` levels, last set to 0 (ComfyUI
/// `loglinear_interp` over reversed logs, numpy `interp` semantics).
fn align_your_steps(steps: usize) -> Vec<f32> {
    let n = AYS_SDXL.len();
    let mut levels: Vec<f64> = if steps + 1 == n {
        AYS_SDXL.to_vec()
    } else {
        let ys: Vec<f64> = AYS_SDXL.iter().rev().map(|v| v.ln()).collect();
        let xs = |i: usize, count: usize| if count == 1 { 0.0 } else { i as f64 / (count - 1) as f64 };
        let mut out: Vec<f64> = (0..=steps)
            .map(|k| {
                let x = xs(k, steps + 1);
                let j = ((x * (n - 1) as f64).floor() as usize).min(n - 2);
                let (x0, x1) = (xs(j, n), xs(j + 1, n));
                (ys[j] + (x - x0) * (ys[j + 1] - ys[j]) / (x1 - x0)).exp()
            })
            .collect();
        out.reverse();
        out
    };
    levels.pop(); // the last level becomes the trailing 0 added by the caller
    levels.into_iter().map(|v| v as f32).collect()
}

impl Scheduler {
    /// The schedule Fooocus 2.5.5 actually samples with when asked for this one: its
    /// `KSampler` replaces names missing from ComfyUI's `SCHEDULER_NAMES` (`turbo`,
    /// `align_your_steps`) by `normal` (checked against Fooocus's own code in
    /// tests/fixtures/fooocus-oracle). The Fooocus-API plugin applies the same rule.
    pub fn as_fooocus_samples(self) -> Scheduler {
        match self {
            Scheduler::Turbo | Scheduler::AlignYourSteps => Scheduler::Normal,
            other => other,
        }
    }

    /// `steps` sigmas from high to low followed by a trailing 0.
    pub fn sigmas(self, ms: &ModelSampling, steps: usize) -> Vec<f32> {
        let mut s = match self {
            // Fooocus runs `edm_playground_v2.5` as karras on the EDM table.
            Scheduler::Karras | Scheduler::EdmPlaygroundV25 => karras(steps, ms.sigma_min(), ms.sigma_max(), 7.0),
            Scheduler::Exponential => {
                let (hi, lo) = ((ms.sigma_max() as f64).ln() as f32, (ms.sigma_min() as f64).ln() as f32);
                linspace_f32(hi, lo, steps).into_iter().map(f32::exp).collect()
            }
            Scheduler::Normal => normal(ms, steps, false),
            // On the distilled table (see `ModelSampling::for_scheduler`), as Fooocus runs them.
            Scheduler::SgmUniform | Scheduler::Lcm | Scheduler::Tcd => normal(ms, steps, true),
            Scheduler::Simple => {
                let stride = ms.sigmas.len() as f64 / steps as f64;
                (0..steps).map(|i| ms.sigmas[ms.sigmas.len() - 1 - (i as f64 * stride) as usize]).collect()
            }
            // SD-Turbo: timesteps 999, 899, …, 99 (the first `steps`, at most 10).
            Scheduler::Turbo => (0..steps.min(10)).map(|i| ms.sigma((999 - 100 * i) as f32)).collect(),
            Scheduler::AlignYourSteps => align_your_steps(steps),
            Scheduler::DdimUniform => {
                let stride = (ms.sigmas.len() / steps).max(1);
                let mut v: Vec<f32> = (1..ms.sigmas.len()).step_by(stride).map(|i| ms.sigmas[i]).collect();
                v.reverse();
                v
            }
        };
        s.push(0.0);
        s
    }
}

/// k-diffusion `get_sigmas_karras` without the trailing zero.
pub fn karras(n: usize, sigma_min: f32, sigma_max: f32, rho: f64) -> Vec<f32> {
    let min_inv = (sigma_min as f64).powf(1.0 / rho);
    let max_inv = (sigma_max as f64).powf(1.0 / rho);
    let span = (min_inv - max_inv) as f32;
    linspace_f32(0.0, 1.0, n).into_iter().map(|r| (max_inv as f32 + r * span).powf(rho as f32)).collect()
}

/// ComfyUI `normal_scheduler`: uniform in timestep, sigma by log-linear interpolation.
fn normal(ms: &ModelSampling, steps: usize, sgm: bool) -> Vec<f32> {
    let start = ms.timestep(ms.sigma_max()) as f32;
    let end = ms.timestep(ms.sigma_min()) as f32;
    let ts = if sgm {
        let mut t = linspace_f32(start, end, steps + 1);
        t.pop();
        t
    } else {
        linspace_f32(start, end, steps)
    };
    ts.into_iter().map(|t| ms.sigma(t)).collect()
}

/// The sigmas a sampling run uses: `denoise < 1` computes `int(steps/denoise)` and keeps the
/// tail; samplers that need it (dpm_2, uni_pc) get one extra step with the penultimate dropped.
pub fn sampling_sigmas(ms: &ModelSampling, scheduler: Scheduler, steps: usize, denoise: f32, discard_penultimate: bool) -> Vec<f32> {
    let compute = |n: usize| {
        if discard_penultimate {
            let mut s = scheduler.sigmas(ms, n + 1);
            let last = s.pop().unwrap();
            s.pop();
            s.push(last);
            s
        } else {
            scheduler.sigmas(ms, n)
        }
    };
    if denoise > 0.9999 {
        compute(steps)
    } else {
        let full = compute((steps as f64 / denoise as f64) as usize);
        full[full.len() - (steps + 1)..].to_vec()
    }
}
