//! Against values PIL and Fooocus's own functions computed
//! (tests/fixtures/imageops/make_imageops_refs.py, which says how to rerun it).

mod common;

use common::{bytes, pattern, references, u};
use focal_imageops::{image_shape_ceil, resize_lanczos, set_image_shape_ceil};

#[test]
fn lanczos_resize_is_bit_exact_with_pil() {
    for case in references("lanczos.json")["resize"].as_array().unwrap() {
        let src = pattern(u(&case["width"]), u(&case["height"]), u(&case["channels"]) as u8);
        let out = resize_lanczos(&src, u(&case["out_width"]), u(&case["out_height"]));
        let want = bytes(&case["out"]);
        let differing = out.data.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!((out.data.len(), differing), (want.len(), 0), "case {}", case);
    }
}

#[test]
fn set_image_shape_ceil_matches_fooocus() {
    for case in references("lanczos.json")["shape_ceil"].as_array().unwrap() {
        let src = pattern(u(&case["width"]), u(&case["height"]), u(&case["channels"]) as u8).hwc3();
        assert_eq!(image_shape_ceil(&src), case["shape_ceil"].as_f64().unwrap());
        let out = set_image_shape_ceil(&src, case["ceil"].as_f64().unwrap());
        assert_eq!((out.width, out.height), (u(&case["out_width"]), u(&case["out_height"])));
        let want = bytes(&case["out_sha_bytes"]);
        assert_eq!(&out.data[..want.len()], &want[..]);
    }
}
