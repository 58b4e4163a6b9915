//! FaceSwap's crop after detection against Fooocus's `align_warp_face` and OpenCV 4.10
//! (tests/fixtures/faces/make_face_refs.py): `estimateAffinePartial2D(LMEDS)` on landmark sets with
//! outliers, `warpAffine` on random images and matrices, and the whole crop of the fixture images
//! from the landmarks Fooocus's detector found.

use focal_imageops::face_align::{estimate_similarity_lmeds, warp_affine};
use focal_imageops::{face_crop, Pixels};
use serde_json::Value;

fn folder() -> String {
    format!("{}/../../tests/fixtures/faces", env!("CARGO_MANIFEST_DIR"))
}

fn refs() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{}/faces.json", folder())).unwrap()).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap().as_bytes();
    s.chunks_exact(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

fn points(v: &Value) -> Vec<[f32; 2]> {
    v.as_array().unwrap().iter().map(|p| [p[0].as_f64().unwrap() as f32, p[1].as_f64().unwrap() as f32]).collect()
}

fn matrix(v: &Value) -> [f64; 6] {
    let rows: Vec<f64> = v.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect();
    rows.try_into().unwrap()
}

fn png_rgb(name: &str) -> Pixels {
    let decoder = png::Decoder::new(std::fs::File::open(format!("{}/{name}", folder())).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    Pixels::rgb(info.width, info.height, buf).unwrap()
}

#[test]
fn lmeds_fits_match_opencv() {
    let refs = refs();
    let template = points(&refs["lmeds_template"]);
    for (i, case) in refs["lmeds"].as_array().unwrap().iter().enumerate() {
        let got = estimate_similarity_lmeds(&points(&case["from"]), &template);
        match (&case["matrix"], got) {
            (Value::Null, None) => {}
            (want, Some(m)) if !want.is_null() => {
                let want = matrix(want);
                for k in 0..6 {
                    // Coefficients to 1e-6 relative; translations to 1e-4 px.
                    let tol = if k == 2 || k == 5 { 1e-4 } else { 1e-6 * want[k].abs().max(1.0) };
                    assert!((m[k] - want[k]).abs() < tol, "case {i} coefficient {k}: {} vs {}", m[k], want[k]);
                }
            }
            (want, got) => panic!("case {i}: OpenCV {want} vs {got:?}"),
        }
    }
}

#[test]
fn warps_match_opencv() {
    for (i, case) in refs()["warps"].as_array().unwrap().iter().enumerate() {
        let u = |k: &str| case[k].as_u64().unwrap() as u32;
        // The test images are BGR to OpenCV and the border BGR (135, 133, 132); read as RGB,
        // the border is the same three bytes reversed.
        let src = Pixels::rgb(u("width"), u("height"), hex(&case["src"])).unwrap();
        let out = warp_affine(&src, &matrix(&case["matrix"]), u("out_width"), u("out_height"), [135, 133, 132]);
        assert_eq!(out.data, hex(&case["out"]), "warp {i}");
    }
}

#[test]
fn crops_match_fooocus() {
    let mut crops = 0;
    for case in refs()["images"].as_array().unwrap() {
        let Some(crop) = case["crop"].as_str() else { continue };
        let face = &case["faces"][0]["landmarks"];
        let landmarks: [(f32, f32); 5] =
            std::array::from_fn(|k| (face[k][0].as_f64().unwrap() as f32, face[k][1].as_f64().unwrap() as f32));
        let got = face_crop(&png_rgb(case["image"].as_str().unwrap()), &landmarks).unwrap();
        assert_eq!((got.width, got.height), (512, 512));
        assert!(got.data == png_rgb(crop).data, "{crop}");
        crops += 1;
    }
    assert!(crops >= 2);
}
