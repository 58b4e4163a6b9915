//! Fooocus's preprocessing of a job's controls (`async_worker.py:apply_control_nets`), as an image
//! step (`focal:plugin@0.2.0`, world `image-step`). The host calls `process` once per control with
//! the options `kind` (`image-prompt`, `face`, …) and `preprocess` (`false`: Fooocus's "skip
//! preprocessors"); images arrive RGB with any alpha composed over white (Fooocus's `HWC3`).
//! - `image-prompt`: stretched to 224×224 with PIL's LANCZOS (`resize_image(…, resize_mode=0)`),
//!   the CLIP vision tower's input;
//! - `face`: the same after Fooocus's face crop, which needs a face detector this component does
//!   not have: with `preprocess` on it fails the job, saying so.

wit_bindgen::generate!({ world: "image-step", path: "../../wit/focal-plugin@0.2.0" });

use exports::focal::plugin::image_processor::Guest;
use focal::plugin::images::Image;
use focal_imageops::{resize_lanczos, Pixels};

/// The CLIP vision tower's input side.
const CLIP_SIDE: u32 = 224;

fn option<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
    options.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn stretch(image: &Image, side: u32) -> Result<Image, String> {
    let pixels = Pixels::rgb(image.width(), image.height(), image.rgb()).ok_or("the host handed out an image that is not RGB")?;
    let out = resize_lanczos(&pixels, side, side);
    Image::from_rgb(out.width, out.height, &out.data)
}

struct Controls;

impl Guest for Controls {
    fn process(image: &Image, options: Vec<(String, String)>) -> Result<Image, String> {
        let preprocess = option(&options, "preprocess") != Some("false");
        match option(&options, "kind").unwrap_or_default() {
            "image-prompt" => stretch(image, CLIP_SIDE),
            "face" if preprocess => Err("FaceSwap's face crop needs Fooocus's face detector (RetinaFace), which this focal does \
                 not run yet; send a cropped face with the preprocessor skipped (Fooocus-API: \
                 advanced_params.skipping_cn_preprocessor = true)"
                .into()),
            "face" => stretch(image, CLIP_SIDE),
            other => Err(format!("no preprocessing for control kind '{other}' (this step knows image-prompt and face)")),
        }
    }
}

export!(Controls);
