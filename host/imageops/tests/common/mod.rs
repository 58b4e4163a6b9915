//! Helpers shared by the parity tests: the reference scripts' input pattern and JSON readers.
#![allow(dead_code)]

use focal_imageops::Pixels;
use serde_json::Value;

/// A reference file of `tests/fixtures/imageops`.
pub fn references(file: &str) -> Value {
    let path = format!("{}/../../tests/fixtures/imageops/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The scripts' input pattern.
pub fn pattern(w: u32, h: u32, c: u8) -> Pixels {
    let mut data = Vec::new();
    for y in 0..h as u64 {
        for x in 0..w as u64 {
            for ch in 0..c as u64 {
                data.push(((x * 37 + y * 91 + ch * 53 + (x * y) % 17 * 11) % 256) as u8);
            }
        }
    }
    Pixels::new(w, h, c, data).unwrap()
}

pub fn u(v: &Value) -> u32 {
    v.as_u64().unwrap() as u32
}

pub fn bytes(v: &Value) -> Vec<u8> {
    v.as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect()
}
