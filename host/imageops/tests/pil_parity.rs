//! Against values PIL and Fooocus's own functions computed
//! (tests/fixtures/imageops/make_imageops_refs.py, which says how to rerun it).

use focal_imageops::{image_shape_ceil, resize_lanczos, set_image_shape_ceil, Pixels};
use serde_json::Value;

fn references() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/imageops/lanczos.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The script's input pattern.
fn pattern(w: u32, h: u32, c: u8) -> Pixels {
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

fn u(v: &Value) -> u32 {
    v.as_u64().unwrap() as u32
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect()
}

#[test]
fn lanczos_resize_is_bit_exact_with_pil() {
    for case in references()["resize"].as_array().unwrap() {
        let src = pattern(u(&case["width"]), u(&case["height"]), u(&case["channels"]) as u8);
        let out = resize_lanczos(&src, u(&case["out_width"]), u(&case["out_height"]));
        let want = bytes(&case["out"]);
        let differing = out.data.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!((out.data.len(), differing), (want.len(), 0), "case {}", case);
    }
}

#[test]
fn set_image_shape_ceil_matches_fooocus() {
    for case in references()["shape_ceil"].as_array().unwrap() {
        let src = pattern(u(&case["width"]), u(&case["height"]), u(&case["channels"]) as u8).hwc3();
        assert_eq!(image_shape_ceil(&src), case["shape_ceil"].as_f64().unwrap());
        let out = set_image_shape_ceil(&src, case["ceil"].as_f64().unwrap());
        assert_eq!((out.width, out.height), (u(&case["out_width"]), u(&case["out_height"])));
        let want = bytes(&case["out_sha_bytes"]);
        assert_eq!(&out.data[..want.len()], &want[..]);
    }
}
