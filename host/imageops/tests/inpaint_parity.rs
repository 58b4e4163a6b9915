//! The inpaint helpers against Fooocus's own functions
//! (tests/fixtures/imageops/make_inpaint_ops_refs.py, which says how to rerun it).

use focal_imageops::mask::{blend, erode_or_dilate, fooocus_fill, soft_mask};
mod common;

use common::{bytes, pattern, references, u};
use focal_imageops::{box_blur, inpaint_area, pad_constant, pad_edge, CropBox, Margins, Pixels};
use serde_json::Value;

fn rect_mask(w: u32, h: u32, boxes: &Value) -> Vec<u8> {
    let mut m = vec![0u8; (w * h) as usize];
    for b in boxes.as_array().unwrap() {
        let b: Vec<u32> = b.as_array().unwrap().iter().map(u).collect();
        for y in b[1]..b[3] {
            for x in b[0]..b[2] {
                m[(y * w + x) as usize] = b[4] as u8;
            }
        }
    }
    m
}

fn differing(a: &[u8], b: &[u8]) -> usize {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

#[test]
fn box_blur_is_bit_exact_with_pil() {
    for case in references("inpaint_ops.json")["box_blur"].as_array().unwrap() {
        let src = pattern(u(&case["width"]), u(&case["height"]), u(&case["channels"]) as u8);
        let out = box_blur(&src, u(&case["radius"]));
        assert_eq!(differing(&out.data, &bytes(&case["out"])), 0, "radius {}", case["radius"]);
    }
}

#[test]
fn masks_fill_and_area_match_fooocus() {
    for case in references("inpaint_ops.json")["masks"].as_array().unwrap() {
        let (w, h) = (u(&case["width"]), u(&case["height"]));
        let m = rect_mask(w, h, &case["boxes"]);
        let name = case["name"].as_str().unwrap();
        assert_eq!(differing(&soft_mask(&m, w, h), &bytes(&case["soft"])), 0, "{name}: soft mask");
        assert_eq!(differing(&erode_or_dilate(&m, w, h, 3), &bytes(&case["dilate3"])), 0, "{name}: dilate");
        assert_eq!(differing(&erode_or_dilate(&m, w, h, -2), &bytes(&case["erode2"])), 0, "{name}: erode");
        assert_eq!(differing(&fooocus_fill(&pattern(w, h, 3), &m).data, &bytes(&case["fill"])), 0, "{name}: fill");
        for area in case["areas"].as_array().unwrap() {
            let a: Vec<u32> = area["area"].as_array().unwrap().iter().map(u).collect();
            let want = CropBox { top: a[0], bottom: a[1], left: a[2], right: a[3] };
            assert_eq!(inpaint_area(&m, w, h, area["k"].as_f64().unwrap()), Some(want), "{name}: k {}", area["k"]);
        }
    }
}

#[test]
fn blend_and_outpaint_padding_match_fooocus() {
    let refs = references("inpaint_ops.json");
    let b = &refs["blend"];
    let (w, h) = (u(&b["width"]), u(&b["height"]));
    let bg = pattern(w, h, 3);
    // The script's foreground: the pattern of the transposed size, transposed back.
    let t = pattern(h, w, 3);
    let mut fg = bg.clone();
    for y in 0..h {
        for x in 0..w {
            let at = ((y * w + x) * 3) as usize;
            fg.data[at..at + 3].copy_from_slice(t.pixel(y, x));
        }
    }
    let soft = soft_mask(&rect_mask(w, h, &b["boxes"]), w, h);
    assert_eq!(differing(&blend(&fg, &bg, &soft).data, &bytes(&b["out"])), 0);
    let src = pattern(7, 5, 3);
    let zeros = Pixels::new(7, 5, 1, vec![0; 35]).unwrap();
    for p in refs["pad"].as_array().unwrap() {
        let m = Margins { left: u(&p["left"]), right: u(&p["right"]), top: u(&p["top"]), bottom: u(&p["bottom"]) };
        assert_eq!(differing(&pad_edge(&src, m).data, &bytes(&p["out"])), 0, "{m:?}");
        assert_eq!(differing(&pad_constant(&zeros, m, 255).data, &bytes(&p["mask"])), 0, "{m:?}");
    }
}
