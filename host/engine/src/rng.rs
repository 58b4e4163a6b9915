//! Noise that is bit-identical to PyTorch's CPU generator.
//!
//! Fooocus (through ComfyUI's `prepare_noise`) draws the initial latent with
//! `torch.manual_seed(seed); torch.randn(shape)` on the CPU. Reproducing that exactly means
//! reproducing torch's mt19937 (bit-exact here) and its `normal_fill`: uniforms for the whole tensor first, then
//! Box-Muller over blocks of 16 (first 8 values are the `u1`s, last 8 the `u2`s), and, when the
//! size is not a multiple of 16, a fresh block of 16 uniforms for the last 16 values.

use crate::torch_math;

pub use focal_mt19937::Mt19937;

/// A seeded generator with torch's CPU `randn` semantics.
#[derive(Clone)]
pub struct TorchRng {
    mt: Mt19937,
    /// torch caches the second Box-Muller value of the scalar (double) path.
    cached_normal: Option<f64>,
}

impl TorchRng {
    pub fn new(seed: u64) -> Self {
        // torch seeds mt19937 with the low 32 bits of the 64-bit seed.
        Self { mt: Mt19937::new(seed as u32), cached_normal: None }
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits scaled by 2^-24.
    fn uniform_f32(&mut self) -> f32 {
        ((self.mt.next_u32() & 0x00ff_ffff) as f64 * (1.0 / (1u64 << 24) as f64)) as f32
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits scaled by 2^-53.
    fn uniform_f64(&mut self) -> f64 {
        (self.mt.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `at::normal_distribution<double>` used by torch for tensors with fewer than 16 elements.
    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.cached_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (1.0 - u2).ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.cached_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n, dtype=float32)` on the CPU.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        let mut i = 0;
        while i + 16 <= n {
            box_muller_16(&mut data[i..i + 16]);
            i += 16;
        }
        if !n.is_multiple_of(16) {
            let tail = n - 16;
            for v in &mut data[tail..] {
                *v = self.uniform_f32();
            }
            box_muller_16(&mut data[tail..]);
        }
        data
    }
}

impl TorchRng {
    /// `torch.multinomial(probs, 1)` on the CPU as torch 2.1 (Fooocus's pin, built with MKL)
    /// draws it: `argmax(p / q)` with `q ~ Exp(1)` from `exponential_`, which seeds MKL's
    /// `VSL_BRNG_MCG31` stream with one 32-bit draw and inverts the CDF on single-precision
    /// uniforms. MKL's float logarithm can differ from this one by an ulp, which moves the argmax
    /// only on a near-exact tie (checked against torch 2.1 in `tests/expansion.rs`' references).
    pub fn multinomial_one(&mut self, probs: &[f32]) -> u32 {
        const MODULUS: u64 = (1 << 31) - 1;
        const MULTIPLIER: u64 = 1_132_489_760;
        let mut x = self.mt.next_u32() as u64 % MODULUS;
        if x == 0 {
            x = 1;
        }
        let mut best = (0u32, f32::NEG_INFINITY);
        for (i, &p) in probs.iter().enumerate() {
            let u = (x as f64 / MODULUS as f64) as f32;
            // torch never divides by an exact 0: a uniform that rounds to 1 gives the smallest normal.
            let q = ((-(u as f64).ln()) as f32).max(f32::MIN_POSITIVE);
            let score = p / q;
            if score > best.1 {
                best = (i as u32, score);
            }
            x = x * MULTIPLIER % MODULUS;
        }
        best.0
    }
}

/// torch's vectorised `normal_fill_16_AVX2`: f32 arithmetic, `theta = f32(2π)·u2`, and the
/// Cephes log/sincos it vectorises (see `torch_math`).
fn box_muller_16(block: &mut [f32]) {
    const TWO_PI: f32 = 2.0 * std::f32::consts::PI;
    for j in 0..8 {
        let u1 = 1.0f32 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0f32 * torch_math::log(u1)).sqrt();
        let (sin, cos) = torch_math::sincos(TWO_PI * u2);
        block[j] = radius * cos;
        block[j + 8] = radius * sin;
    }
}

/// torch's process-wide CPU generator as Fooocus leaves it between jobs. ComfyUI's
/// `prepare_noise` reseeds it (`torch.manual_seed(seed)`) and draws the initial noise; Fooocus's
/// VAE encode then samples the posterior from whatever state the last job left. Vary, upscale
/// and inpaint match Fooocus only when that state is carried from job to job, so the host keeps
/// one of these per engine worker and hands it to every generation.
#[derive(Clone, Default)]
pub struct TorchGlobal(std::sync::Arc<std::sync::Mutex<Option<TorchRng>>>);

impl std::fmt::Debug for TorchGlobal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TorchGlobal")
    }
}

impl TorchGlobal {
    /// `torch.manual_seed(seed); torch.randn(n)`, leaving the generator after the draw.
    pub fn reseed_randn(&self, seed: u64, n: usize) -> Vec<f32> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let rng = state.insert(TorchRng::new(seed));
        rng.randn(n)
    }

    /// Run `f` on the generator where the last job left it. Before any job has seeded it, torch's
    /// state depends on everything Python did since start-up; focal starts from torch's default
    /// seed.
    pub fn with<T>(&self, f: impl FnOnce(&mut TorchRng) -> T) -> T {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(state.get_or_insert_with(|| TorchRng::new(TORCH_DEFAULT_SEED)))
    }
}

/// `default_rng_seed_val` in torch's CPU generator.
const TORCH_DEFAULT_SEED: u64 = 67280421310721;
