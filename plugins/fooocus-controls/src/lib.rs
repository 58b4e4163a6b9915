//! Fooocus's preprocessing of a job's controls (`async_worker.py:apply_control_nets`), as an image
//! step (`focal:plugin@0.2.0`, world `image-step`). The host calls `process` once per control with
//! the options `kind` (`image-prompt`, `face`, …) and `preprocess` (`false`: Fooocus's "skip
//! preprocessors"); images arrive RGB with any alpha composed over white (Fooocus's `HWC3`).
//! - `image-prompt`: stretched to 224×224 with PIL's LANCZOS (`resize_image(…, resize_mode=0)`),
//!   the CLIP vision tower's input;
//! - `face`: the same, with `preprocess` on after Fooocus's face crop (`extras/face_crop.py`): the
//!   host's face detector (`faces`, Fooocus's threshold 0.97) finds the best face, whose five
//!   landmarks `focal-imageops::face_align` maps onto FFHQ's template in a 512×512 crop; an image
//!   without a face is used whole, as in Fooocus;
//! - `canny`, `cpds` (ControlNets): cut to the job's `width`×`height` (options) as Fooocus's
//!   `resize_image(…)` fills a size; then PyraCanny's Canny pyramid (`low`/`high` thresholds,
//!   64/128 by default) or CPDS's contrast-preserving decolorization (Fooocus's `cpds`: OpenCV's
//!   GaussianBlur and `decolor`), both from `focal-imageops`, checked against Fooocus's own.

wit_bindgen::generate!({ world: "image-step", path: "../../wit/focal-plugin@0.2.0" });

use exports::focal::plugin::image_processor::Guest;
use focal::plugin::faces;
use focal::plugin::images::Image;
use focal_imageops::{canny_pyramid, cpds, face_crop, resize_fill, resize_lanczos, Pixels};

/// The CLIP vision tower's input side.
const CLIP_SIDE: u32 = 224;
/// `FaceRestoreHelper.get_face_landmarks_5`'s confidence threshold.
const FACE_SCORE: f32 = 0.97;

fn option<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
    options.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn pixels(image: &Image) -> Result<Pixels, String> {
    Pixels::rgb(image.width(), image.height(), image.rgb()).ok_or_else(|| "the host handed out an image that is not RGB".into())
}

fn stretch(image: &Pixels, side: u32) -> Result<Image, String> {
    let out = resize_lanczos(image, side, side);
    Image::from_rgb(out.width, out.height, &out.data)
}

/// Fooocus's `crop_image`: the most confident face aligned to the template, or the whole image
/// when there is none.
fn crop_face(image: &Image) -> Result<Pixels, String> {
    let found = faces::detect(image, FACE_SCORE).map_err(|e| format!("FaceSwap's face crop: {e}"))?;
    let whole = pixels(image)?;
    let Some(face) = found.first() else {
        focal::plugin::log::log(focal::plugin::log::Level::Info, "FaceSwap: no face detected; the whole image is used");
        return Ok(whole);
    };
    let landmarks: [(f32, f32); 5] =
        face.landmarks.clone().try_into().map_err(|_| "the face detector gave other than five landmarks".to_string())?;
    face_crop(&whole, &landmarks).ok_or_else(|| "FaceSwap's face crop: the face's landmarks fix no transform".to_string())
}

fn size(options: &[(String, String)], key: &str) -> Result<u32, String> {
    let v = option(options, key).ok_or_else(|| format!("the control step needs the job's {key}"))?;
    v.parse::<u32>().ok().filter(|v| (1..=16384).contains(v)).ok_or_else(|| format!("{key} '{v}' is not a size"))
}

/// A ControlNet's image at the job's size; its edge/contrast map when `preprocess` is on.
fn control_map(image: &Image, options: &[(String, String)], kind: &str, preprocess: bool) -> Result<Image, String> {
    let out = resize_fill(&pixels(image)?, size(options, "width")?, size(options, "height")?);
    match (kind, preprocess) {
        (_, false) => Image::from_rgb(out.width, out.height, &out.data),
        ("canny", true) => {
            let threshold = |key: &str, default: i32| -> Result<i32, String> {
                option(options, key).map_or(Ok(default), |v| v.parse::<i32>().map_err(|_| format!("{key} threshold '{v}' is not a number")))
            };
            let edges = canny_pyramid(&out, threshold("low", 64)?, threshold("high", 128)?).ok_or("the Canny pyramid needs a downscale")?;
            grey_to_rgb(&out, &edges)
        }
        (_, true) => grey_to_rgb(&out, &cpds(&out).ok_or("CPDS takes an RGB image")?),
    }
}

/// Fooocus's `HWC3` of a one-channel map at `like`'s size.
fn grey_to_rgb(like: &Pixels, map: &[u8]) -> Result<Image, String> {
    let rgb: Vec<u8> = map.iter().flat_map(|&v| [v, v, v]).collect();
    Image::from_rgb(like.width, like.height, &rgb)
}

struct Controls;

impl Guest for Controls {
    fn process(image: &Image, options: Vec<(String, String)>) -> Result<Image, String> {
        let preprocess = option(&options, "preprocess") != Some("false");
        match option(&options, "kind").unwrap_or_default() {
            "image-prompt" => stretch(&pixels(image)?, CLIP_SIDE),
            "face" if preprocess => stretch(&crop_face(image)?, CLIP_SIDE),
            "face" => stretch(&pixels(image)?, CLIP_SIDE),
            kind @ ("canny" | "cpds") => control_map(image, &options, kind, preprocess),
            other => Err(format!("no preprocessing for control kind '{other}' (this step knows image-prompt, face, canny, cpds)")),
        }
    }
}

export!(Controls);
