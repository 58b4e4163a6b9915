//! The detector against Fooocus's own face crop (`tests/fixtures/faces/make_face_refs.py`: facexlib's
//! RetinaFace on a tiny random-weight model in the real format and file name): the same faces, in
//! the same order, with boxes and landmarks within a hundredth of a pixel and scores within 1e-5.

use std::path::PathBuf;

use candle_core::Device;
use focal_faces::RetinaFace;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/faces")
}

fn rgb(name: &str) -> (Vec<u8>, usize, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(fixtures().join(name)).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (buf, info.width as usize, info.height as usize)
}

#[test]
fn detections_match_fooocus() {
    let refs: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("faces.json")).unwrap()).unwrap();
    let model = RetinaFace::load(&fixtures().join(focal_faces::retinaface::FILE_NAME), &Device::Cpu).unwrap();
    let mut faces_seen = 0;
    for case in refs["images"].as_array().unwrap() {
        let name = case["image"].as_str().unwrap();
        let (pixels, w, h) = rgb(name);
        let found = model.detect(&pixels, w, h, 0.97).unwrap();
        let expected = case["faces"].as_array().unwrap();
        assert_eq!(found.len(), expected.len(), "{name}: number of faces");
        for (i, (f, e)) in found.iter().zip(expected).enumerate() {
            let b: Vec<f64> = e["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let got = [f.left, f.top, f.right, f.bottom];
            for k in 0..4 {
                assert!((got[k] as f64 - b[k]).abs() < 0.01, "{name} face {i} box {k}: {} vs {}", got[k], b[k]);
            }
            assert!((f.score as f64 - e["score"].as_f64().unwrap()).abs() < 1e-5, "{name} face {i} score");
            for (k, p) in e["landmarks"].as_array().unwrap().iter().enumerate() {
                let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
                let (gx, gy) = f.landmarks[k];
                assert!(
                    (gx as f64 - x).abs() < 0.01 && (gy as f64 - y).abs() < 0.01,
                    "{name} face {i} landmark {k}: ({gx}, {gy}) vs ({x}, {y})"
                );
            }
        }
        faces_seen += expected.len();
    }
    assert!(faces_seen >= 2, "the fixtures must contain faces");
}
