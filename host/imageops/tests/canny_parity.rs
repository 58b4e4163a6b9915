//! PyraCanny's preprocessor against Fooocus's own `canny_pyramid` and OpenCV 4.10's steps
//! (tests/fixtures/imageops/make_canny_refs.py, numpy 1.26.4 and OpenCV 4.10 as Fooocus pins them).
mod common;

use common::{bytes, references, u};
use focal_imageops::cv_resize::{resize_area, resize_linear_f32, FloatImage};
use focal_imageops::{canny, canny_pyramid, Pixels};

fn differing(got: &[u8], want: &[u8]) -> usize {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).filter(|(a, b)| a != b).count()
}

#[test]
fn opencv_steps_match() {
    let refs = references("canny.json");
    let noise = refs["cases"].as_array().unwrap().iter().find(|c| c["name"] == "noise").unwrap();
    let image = Pixels::new(u(&noise["width"]), u(&noise["height"]), 3, bytes(&noise["input"])).unwrap();
    let steps = &refs["steps"];
    let area = resize_area(&image, 60, 45).unwrap();
    assert_eq!(differing(&area.data, &bytes(&steps["area_60x45"])), 0, "INTER_AREA 200×150 → 60×45");
    let half = resize_area(&image, 100, 75).unwrap();
    assert_eq!(differing(&half.data, &bytes(&steps["area_100x75"])), 0, "INTER_AREA 200×150 → 100×75");
    let green: Vec<u8> = half.data.iter().skip(1).step_by(3).copied().collect();
    assert_eq!(differing(&canny(&green, 100, 75, 64, 128), &bytes(&steps["canny_green_100x75"])), 0, "Canny");
    let small = FloatImage { width: 60, height: 45, channels: 3, data: area.data.iter().map(|&b| b as f32 / 255.0).collect() };
    let up = resize_linear_f32(&small, 100, 75);
    let want: Vec<f32> = steps["linear_60x45_to_100x75"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    // OpenCV 4.10's wheels hand float INTER_LINEAR to Intel IPP (closed source), whose rounding this
    // does not reproduce (OpenCV's own code, `cv2.ipp.setUseIPP(False)`, is matched exactly): the
    // values agree to a few ULPs.
    let worst = up.data.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst < 4e-6, "INTER_LINEAR f32: {worst}");
}

#[test]
fn canny_pyramid_matches_fooocus() {
    let refs = references("canny.json");
    for case in refs["cases"].as_array().unwrap() {
        let image = Pixels::new(u(&case["width"]), u(&case["height"]), 3, bytes(&case["input"])).unwrap();
        let got = canny_pyramid(&image, 64, 128).unwrap();
        let want = bytes(&case["pyramid"]);
        let worst = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        let n = differing(&got, &want);
        eprintln!("{}: {n} of {} differ, by at most {worst}", case["name"], got.len());
        // Those few ULPs of the linear upscale can move a value across a byte boundary: at most
        // 1 in 10 000 pixels, by 1 (the two prompt images match exactly).
        assert!(worst <= 1 && n * 10_000 <= got.len(), "{}: {n} differ, by up to {worst}", case["name"]);
    }
}
