mod common;
use focal_engine::schedule::{sampling_sigmas, ModelSampling, Scheduler};

fn assert_close(name: &str, got: &[f32], expected: &[f32], tol: f32) {
    assert_eq!(got.len(), expected.len(), "{name}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= tol * e.abs().max(1e-3), "{name}[{i}]: {g} vs {e}");
    }
}

#[test]
fn model_sigma_table_matches_reference() {
    let refs = common::reference("sigmas.safetensors");
    let ms = ModelSampling::sdxl();
    assert_close("model_sigmas", &ms.sigmas, &common::to_vec(&refs["model_sigmas"]), 1e-6);
    assert_close("model_log_sigmas", &ms.log_sigmas, &common::to_vec(&refs["model_log_sigmas"]), 1e-6);
}

#[test]
fn every_reference_schedule_and_its_timesteps_match() {
    let refs = common::reference("sigmas.safetensors");
    let ms = ModelSampling::sdxl();
    let mut checked = 0;
    for (key, tensor) in &refs {
        if key.starts_with("model_") || key.ends_with("_timesteps") {
            continue;
        }
        let (sched, rest) = key.split_once('_').unwrap();
        let (steps, denoise) = match rest.split_once("_denoise") {
            Some((s, d)) => (s.parse::<usize>().unwrap(), d.parse::<f32>().unwrap()),
            None => (rest.parse::<usize>().unwrap(), 1.0),
        };
        let scheduler: Scheduler = sched.parse().unwrap();
        let got = sampling_sigmas(&ms, scheduler, steps, denoise, false);
        assert_close(key, &got, &common::to_vec(tensor), 1e-6);
        let ts: Vec<i64> = refs[&format!("{key}_timesteps")].to_vec1().unwrap();
        let got_ts: Vec<i64> = got[..got.len() - 1].iter().map(|s| ms.timestep(*s) as i64).collect();
        assert_eq!(got_ts, ts, "{key} timesteps");
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} schedules checked");
}

#[test]
fn karras_matches_documented_vector() {
    let ms = ModelSampling::sdxl();
    let s = Scheduler::Karras.sigmas(&ms, 4);
    assert_close("karras4", &s, &[14.61464, 3.16860, 0.44692, 0.02917, 0.0], 1e-4);
}

#[test]
fn unknown_scheduler_names_the_valid_ones() {
    let err = "bogus".parse::<Scheduler>().unwrap_err().to_string();
    assert!(err.contains("karras") && err.contains("bogus"), "{err}");
}
