//! Samplers that do not walk the sigma schedule one model call per step: DPM-Solver fast and
//! adaptive (k-diffusion `DPMSolver`, which only take the schedule's end points), UniPC
//! (ComfyUI's `uni_pc.py`: multistep predictor–corrector in the variance-preserving frame) and
//! Restart (k-diffusion `sample_restart`: Heun steps with re-noised restart intervals).

use candle_core::Tensor;

use crate::error::{EngineError, Result};
use crate::sampling::{lin, to_d, Denoiser, NoiseSource, StepCallback};
use crate::schedule::karras;

/// ε prediction at log-SNR time `t = −ln σ` (DPM-Solver's parameterisation).
fn eps_at(model: &mut dyn Denoiser, x: &Tensor, t: f64) -> Result<Tensor> {
    let sigma = (-t).exp();
    Ok(((x - model.denoise(x, sigma as f32)?)? / sigma)?)
}

/// One DPM-Solver step of order 1–3 from `t` to `t_next` given ε at `t`. `r1` is the first
/// intermediate point of the order-2 step (½ normally, ⅓ as the adaptive solver's low-order
/// estimate, which then shares its evaluation with the order-3 step).
fn dpm_solver_step(model: &mut dyn Denoiser, x: &Tensor, t: f64, t_next: f64, order: usize, eps: &Tensor, r1: f64) -> Result<Tensor> {
    let h = t_next - t;
    let sigma = |v: f64| (-v).exp();
    let first = |x: &Tensor| lin(x, 1.0, eps, -sigma(t_next) * h.exp_m1());
    match order {
        1 => first(x),
        2 => {
            let s1 = t + r1 * h;
            let u1 = lin(x, 1.0, eps, -sigma(s1) * (r1 * h).exp_m1())?;
            let e1 = eps_at(model, &u1, s1)?;
            Ok((first(x)? - ((e1 - eps)? * (sigma(t_next) / (2.0 * r1) * h.exp_m1()))?)?)
        }
        _ => {
            let (r1, r2) = (1.0 / 3.0, 2.0 / 3.0);
            let (s1, s2) = (t + r1 * h, t + r2 * h);
            let u1 = lin(x, 1.0, eps, -sigma(s1) * (r1 * h).exp_m1())?;
            let d1 = (eps_at(model, &u1, s1)? - eps)?;
            let u2 = lin(x, 1.0, eps, -sigma(s2) * (r2 * h).exp_m1())?;
            let u2 = (u2 - (&d1 * (sigma(s2) * (r2 / r1) * ((r2 * h).exp_m1() / (r2 * h) - 1.0)))?)?;
            let d2 = (eps_at(model, &u2, s2)? - eps)?;
            Ok((first(x)? - (d2 * (sigma(t_next) / r2 * (h.exp_m1() / h - 1.0)))?)?)
        }
    }
}

/// ComfyUI hands DPM-Solver the first sigma and the last non-zero one.
fn sigma_range(sigmas: &[f32]) -> Result<(f64, f64)> {
    let n = sigmas.len();
    let lo = if sigmas[n - 1] != 0.0 || n < 2 { sigmas[n - 1] } else { sigmas[n - 2] };
    if lo <= 0.0 || sigmas[0] <= 0.0 {
        return Err(EngineError::invalid("steps", "dpm_fast/dpm_adaptive need at least one non-zero sigma below the first"));
    }
    Ok((lo as f64, sigmas[0] as f64))
}

/// DPM-Solver-fast: as many order-3 steps as `len(sigmas) − 1` model calls allow, uniform in
/// log-SNR between the schedule's ends (the schedule's shape itself is not used).
pub fn dpm_fast(model: &mut dyn Denoiser, mut x: Tensor, sigmas: &[f32], on_step: &mut StepCallback) -> Result<Tensor> {
    let (lo, hi) = sigma_range(sigmas)?;
    let nfe = sigmas.len() - 1;
    let (t_start, t_end) = (-hi.ln(), -lo.ln());
    let m = nfe / 3 + 1;
    let ts: Vec<f64> = (0..=m).map(|k| t_start + (t_end - t_start) * k as f64 / m as f64).collect();
    let mut orders = vec![3; m - 1];
    if nfe.is_multiple_of(3) {
        orders.truncate(m - 2);
        orders.extend([2, 1]);
    } else {
        orders.push(nfe % 3);
    }
    let mut evals = 0;
    for (i, &order) in orders.iter().enumerate() {
        let (t, t_next) = (ts[i], ts[i + 1]);
        let eps = eps_at(model, &x, t)?;
        model.first_eval_done(evals);
        let denoised = lin(&x, 1.0, &eps, -(-t).exp())?;
        x = dpm_solver_step(model, &x, t, t_next, order, &eps, 0.5)?;
        evals += order;
        on_step(evals.min(nfe) - 1, nfe, &x, &denoised)?;
    }
    Ok(x)
}

/// DPM-Solver-23 with adaptive step size (k-diffusion defaults: rtol 0.05, atol 0.0078,
/// h_init 0.05, integral-only PID controller, accept safety 0.81). Progress is reported in
/// schedule steps by how far log-SNR has advanced.
pub fn dpm_adaptive(model: &mut dyn Denoiser, mut x: Tensor, sigmas: &[f32], on_step: &mut StepCallback) -> Result<Tensor> {
    const ORDER: f64 = 3.0;
    const RTOL: f64 = 0.05;
    const ATOL: f64 = 0.0078;
    const ACCEPT_SAFETY: f64 = 0.81;
    let (lo, hi) = sigma_range(sigmas)?;
    let total = sigmas.len() - 1;
    let (t_start, t_end) = (-hi.ln(), -lo.ln());
    let mut t = t_start;
    let mut h = 0.05;
    let mut x_prev = x.clone();
    let mut inv_errors: Option<[f64; 3]> = None;
    let numel = x.elem_count() as f64;
    while t < t_end - 1e-5 {
        let t_next = t_end.min(t + h);
        let eps = eps_at(model, &x, t)?;
        let done = (((t - t_start) / (t_end - t_start)) * total as f64) as usize;
        model.first_eval_done(done.min(total - 1));
        let denoised = lin(&x, 1.0, &eps, -(-t).exp())?;
        let x_low = dpm_solver_step(model, &x, t, t_next, 2, &eps, 1.0 / 3.0)?;
        let x_high = dpm_solver_step(model, &x, t, t_next, 3, &eps, 0.5)?;
        let delta = (x_low.abs()?.maximum(&x_prev.abs()?)? * RTOL)?.maximum(ATOL)?;
        let ratio = ((&x_low - &x_high)? / delta)?;
        let error = ratio.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64 / numel.sqrt();
        let inv = 1.0 / (error + 1e-8);
        let errs = inv_errors.get_or_insert([inv; 3]);
        errs[0] = inv;
        // PID with only the integral term: factor = inv_error^(1/order), softened by 1 + atan(f − 1).
        let factor = 1.0 + (errs[0].powf(1.0 / ORDER) - 1.0).atan();
        if factor >= ACCEPT_SAFETY {
            errs[2] = errs[1];
            errs[1] = errs[0];
            x_prev = x_low;
            x = x_high;
            t = t_next;
        }
        h *= factor;
        let done = (((t - t_start) / (t_end - t_start)) * total as f64) as usize;
        on_step(done.clamp(1, total) - 1, total, &x, &denoised)?;
    }
    Ok(x)
}

/// UniPC's B(h): `bh1` = h, `bh2` = e^h − 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniPcVariant {
    Bh1,
    Bh2,
}

/// Solve the small dense system `a·x = b` (Gaussian elimination with partial pivoting).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            let (upper, lower) = a.split_at_mut(row);
            for (x, &p) in lower[0][col..].iter_mut().zip(&upper[col][col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}

/// UniPC multistep (order ≤ 3, lower order at the end, data prediction) as ComfyUI runs it:
/// the final sigma 0 becomes 0.001, the latent is carried as `x·α(σ)` with α = 1/√(1+σ²).
pub fn uni_pc(model: &mut dyn Denoiser, x: Tensor, sigmas: &[f32], variant: UniPcVariant, on_step: &mut StepCallback) -> Result<Tensor> {
    let mut ts: Vec<f64> = sigmas.iter().map(|&v| v as f64).collect();
    let steps = ts.len() - 1;
    if ts[steps] == 0.0 {
        ts[steps] = 0.001;
    }
    let alpha = |v: f64| 1.0 / (v * v + 1.0).sqrt();
    let lambda = |v: f64| -v.ln();
    let order = 3.min(ts.len().saturating_sub(2));
    let mut xv = (x * alpha(ts[0]))?;
    let eval = |model: &mut dyn Denoiser, xv: &Tensor, v: f64| model.denoise(&(xv / alpha(v))?, v as f32);
    let mut models = vec![eval(model, &xv, ts[0])?];
    model.first_eval_done(0);
    let mut times = vec![ts[0]];
    // ComfyUI's loop spends its only iteration on the first evaluation when there is one step.
    let updates = if steps < 2 { 0 } else { steps };
    for (step, &t) in ts.iter().enumerate().take(updates + 1).skip(1) {
        let k = step.min(order).min(steps + 1 - step);
        let (t0, m0) = (times[times.len() - 1], models[models.len() - 1].clone());
        let h = lambda(t) - lambda(t0);
        let mut rks = Vec::with_capacity(k);
        let mut d1s = Vec::with_capacity(k);
        for i in 1..k {
            let rk = (lambda(times[times.len() - 1 - i]) - lambda(t0)) / h;
            rks.push(rk);
            d1s.push(((&models[models.len() - 1 - i] - &m0)? / rk)?);
        }
        rks.push(1.0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = match variant {
            UniPcVariant::Bh1 => hh,
            UniPcVariant::Bh2 => hh.exp_m1(),
        };
        let (mut r, mut b) = (Vec::with_capacity(k), Vec::with_capacity(k));
        let (mut h_phi_k, mut factorial) = (h_phi_1 / hh - 1.0, 1.0);
        for i in 1..=k {
            r.push(rks.iter().map(|v| v.powi(i as i32 - 1)).collect::<Vec<f64>>());
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        let sigma_ratio = (t * alpha(t)) / (t0 * alpha(t0));
        let base = lin(&xv, sigma_ratio, &m0, -alpha(t) * h_phi_1)?;
        let weighted = |coeffs: &[f64]| -> Result<Option<Tensor>> {
            let mut acc: Option<Tensor> = None;
            for (c, d) in coeffs.iter().zip(&d1s) {
                let term = (d * *c)?;
                acc = Some(match acc {
                    Some(a) => (a + term)?,
                    None => term,
                });
            }
            Ok(acc)
        };
        let predicted = if d1s.is_empty() {
            base.clone()
        } else {
            let rhos_p =
                if k == 2 { vec![0.5] } else { solve(r[..k - 1].iter().map(|row| row[..k - 1].to_vec()).collect(), b[..k - 1].to_vec()) };
            match weighted(&rhos_p)? {
                Some(p) => (&base - (p * (alpha(t) * b_h))?)?,
                None => base.clone(),
            }
        };
        if step == steps {
            // No corrector (and no model call) at the last step.
            xv = predicted;
            on_step(step - 1, steps, &(&xv / alpha(t))?, &m0)?;
            break;
        }
        let model_t = eval(model, &predicted, t)?;
        let rhos_c = if k == 1 { vec![0.5] } else { solve(r, b) };
        let mut correction = ((&model_t - &m0)? * rhos_c[k - 1])?;
        if let Some(c) = weighted(&rhos_c[..k - 1])? {
            correction = (correction + c)?;
        }
        xv = (&base - (correction * (alpha(t) * b_h))?)?;
        model.first_eval_done(step);
        on_step(step - 1, steps, &(&xv / alpha(t))?, &model_t)?;
        models.push(model_t);
        times.push(t);
        if models.len() > order {
            models.remove(0);
            times.remove(0);
        }
    }
    Ok((xv / alpha(ts[steps]))?)
}

/// Restart sampling with k-diffusion's default plan: below 20 steps plain Heun; from 20 steps
/// the schedule is rebuilt as karras over fewer steps and the interval from σ≈0.1 back up to
/// σ≈2 is re-run once (twice from 36 steps), re-noised to its top with the seeded noise.
pub fn restart(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f32],
    noise: &mut NoiseSource,
    on_step: &mut StepCallback,
) -> Result<Tensor> {
    let steps = sigmas.len() - 1;
    let nearest =
        |sig: &[f32], target: f32| (0..sig.len()).min_by(|&a, &b| (sig[a] - target).abs().total_cmp(&(sig[b] - target).abs())).unwrap_or(0);
    let mut plan: Option<(usize, usize, usize, f32)> = None; // (at index, restart steps, times, top sigma)
    let sig: Vec<f32> = if steps >= 20 {
        let (restart_steps, times) = if steps >= 36 { (steps / 4, 2) } else { (9, 1) };
        let mut s = karras(steps - restart_steps * times, sigmas[steps - 1], sigmas[0], 7.0);
        s.push(0.0);
        plan = Some((nearest(&s, 0.1), restart_steps + 1, times, 2.0));
        s
    } else {
        sigmas.to_vec()
    };
    let mut pairs: Vec<(f32, f32)> = Vec::new();
    for i in 0..sig.len() - 1 {
        pairs.push((sig[i], sig[i + 1]));
        if let Some((at, n, times, top)) = plan {
            let high = nearest(&sig, top);
            if i + 1 == at && high < at {
                let restart_sigmas = karras(n, sig[at], sig[high], 7.0);
                for _ in 0..times {
                    pairs.extend(restart_sigmas.windows(2).map(|w| (w[0], w[1])));
                }
            }
        }
    }
    let total = pairs.len();
    let mut last: Option<f32> = None;
    for (step, &(old, new)) in pairs.iter().enumerate() {
        if let Some(l) = last {
            if l < old {
                let scale = ((old as f64).powi(2) - (l as f64).powi(2)).sqrt();
                x = (&x + (noise.sample(&x)? * scale)?)?;
            }
        }
        let (s_old, s_new) = (old as f64, new as f64);
        let denoised = model.denoise(&x, old)?;
        model.first_eval_done(step);
        let d = to_d(&x, s_old, &denoised)?;
        let dt = s_new - s_old;
        x = if new == 0.0 {
            (&x + (d * dt)?)?
        } else {
            let x2 = (&x + (&d * dt)?)?;
            let d2 = to_d(&x2, s_new, &model.denoise(&x2, new)?)?;
            (&x + (((d + d2)? * 0.5)? * dt)?)?
        };
        on_step(step, total, &x, &denoised)?;
        last = Some(new);
    }
    Ok(x)
}
