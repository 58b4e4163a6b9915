#![allow(dead_code)]
use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// Model A: the fixture the code was developed against.
pub const MODEL_A: &str = "tiny-sdxl";
/// Model B: other widths, depths and layer counts, added after the code passed on model A, to
/// show the architecture is read from the checkpoint rather than tuned to one model.
pub const MODEL_B: &str = "tiny-sdxl-b";

pub fn fixture_dir(model: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(model)
}

pub fn fixtures() -> PathBuf {
    fixture_dir(MODEL_A)
}

/// The single-file checkpoint of a fixture model.
pub fn checkpoint(model: &str) -> PathBuf {
    let name = if model == MODEL_A { "tiny-sdxl-a.safetensors".to_string() } else { format!("{model}.safetensors") };
    fixture_dir(model).join(name)
}

pub fn reference(name: &str) -> HashMap<String, Tensor> {
    model_reference(MODEL_A, name)
}

pub fn model_reference(model: &str, name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir(model).join("reference").join(name), &Device::Cpu)
        .unwrap_or_else(|e| panic!("loading reference {model}/{name}: {e}"))
}

pub fn to_vec(t: &Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// ||a - b|| / ||b||
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((*x - *y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
