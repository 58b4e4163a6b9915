//! CPDS's preprocessor against Fooocus's own `cpds` and OpenCV 4.10's steps
//! (tests/fixtures/imageops/make_cpds_refs.py, numpy 1.26.4 and OpenCV 4.10 as Fooocus pins them).
mod common;

use common::{references, u};
use focal_imageops::lab::{bgr_to_lab, bgr_to_lab_u8, lab_to_bgr_u8};
use focal_imageops::{cpds, decolor, gaussian_blur, Pixels};
use serde_json::Value;

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap().as_bytes();
    s.chunks_exact(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

/// `make_cpds_refs.py:tiles`.
fn tiles(w: u32, h: u32) -> Pixels {
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            data.extend([(((x / 40 + y / 30) % 2) * 180 + x % 40) as u8, ((x * y / 97) % 256) as u8, (255 - (x + 2 * y) % 256) as u8]);
        }
    }
    Pixels::new(w, h, 3, data).unwrap()
}

fn input(case: &Value) -> Pixels {
    let (w, h) = (u(&case["width"]), u(&case["height"]));
    match case.get("input") {
        Some(bytes) => Pixels::new(w, h, 3, hex(bytes)).unwrap(),
        None => tiles(w, h),
    }
}

/// (pixels that differ, largest difference)
fn compare(got: &[u8], want: &[u8]) -> (usize, i32) {
    assert_eq!(got.len(), want.len());
    let diffs: Vec<i32> = got.iter().zip(want).map(|(a, b)| (*a as i32 - *b as i32).abs()).filter(|d| *d > 0).collect();
    (diffs.len(), diffs.into_iter().max().unwrap_or(0))
}

/// Equal to Fooocus's function and OpenCV's steps on every image decolor does not shrink. One that
/// is larger than 800 in width plus height is shrunk first with a float INTER_LINEAR resize, which
/// OpenCV's wheels hand to Intel IPP (closed source; its values differ from OpenCV's own code by
/// ~1e-5): there the grey image differs on a few pixels per ten thousand by one level, and the map
/// around them.
#[test]
fn cpds_matches_fooocus() {
    let refs = references("cpds.json");
    for case in refs["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let image = input(case);
        let blurred = gaussian_blur(&image, 0.8);
        if let Some(want) = case.get("blurred") {
            assert_eq!(compare(&blurred.data, &hex(want)), (0, 0), "{name}: GaussianBlur");
        }
        let d = decolor(&blurred).unwrap();
        let pixels = d.gray.len();
        let (gray_off, gray_max) = compare(&d.gray, &hex(&case["gray"]));
        let (map_off, map_max) = compare(&cpds(&image).unwrap(), &hex(&case["cpds"]));
        eprintln!("{name}: grey {gray_off} of {pixels} pixels differ (max {gray_max}); CPDS map {map_off} (max {map_max})");
        if case.get("color_boost").is_some() {
            assert_eq!((gray_off, map_off), (0, 0), "{name}: decolor's grey image, the CPDS map");
            assert_eq!(compare(&d.color_boost.data, &hex(&case["color_boost"])), (0, 0), "{name}: colour boost");
        } else {
            assert!(gray_off <= pixels / 2000 && gray_max <= 1, "{name}: decolor's grey");
            assert!(map_off <= 5 * pixels / 1000 && map_max <= 6, "{name}: the CPDS map");
        }
    }
}

#[test]
fn lab_conversions_match_opencv() {
    let lab = &references("cpds.json")["lab"];
    let floats = |k: &str| -> Vec<f32> { lab[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect() };
    let (bgr, want) = (floats("float_bgr"), floats("float_lab"));
    for (px, want) in bgr.chunks_exact(3).zip(want.chunks_exact(3)) {
        assert_eq!(bgr_to_lab([px[0], px[1], px[2]]), [want[0], want[1], want[2]], "float {px:?}");
    }
    let (bytes, to_lab, to_bgr) = (hex(&lab["bytes"]), hex(&lab["bytes_bgr2lab"]), hex(&lab["bytes_lab2bgr"]));
    for ((px, l), b) in bytes.chunks_exact(3).zip(to_lab.chunks_exact(3)).zip(to_bgr.chunks_exact(3)) {
        let px = [px[0], px[1], px[2]];
        assert_eq!(bgr_to_lab_u8(px).as_slice(), l, "8-bit BGR {px:?}");
        assert_eq!(lab_to_bgr_u8(px).as_slice(), b, "8-bit Lab {px:?}");
    }
}

#[test]
fn empty_or_grey_inputs_are_refused_not_crashed() {
    assert!(decolor(&Pixels::new(4, 4, 1, vec![0; 16]).unwrap()).is_none());
    // A flat image has no gradients to fit: black, as Fooocus's map comes out (its 0/0 cast to 0).
    let flat = Pixels::new(8, 8, 3, vec![90; 192]).unwrap();
    assert_eq!(decolor(&flat).unwrap().gray, vec![0; 64]);
    assert_eq!(cpds(&flat).unwrap(), vec![0; 64]);
}
