//! The image-step example: `process` desaturates the image (Rec. 601 luma), by `amount` (0–1,
//! default 1) from the job's step options. Images arrive as host handles; the pixels are copied
//! in once with `rgb()` and the result handed back with `image.from-rgb`.

wit_bindgen::generate!({ world: "image-step", path: "../../wit/focal-plugin@0.2.0" });

use exports::focal::plugin::image_processor::Guest;
use focal::plugin::images::Image;

struct Grayscale;

impl Guest for Grayscale {
    fn process(image: &Image, options: Vec<(String, String)>) -> Result<Image, String> {
        let amount = match options.iter().find(|(k, _)| k == "amount") {
            Some((_, v)) => v.parse::<f32>().map_err(|_| format!("amount '{v}' is not a number"))?.clamp(0.0, 1.0),
            None => 1.0,
        };
        let mut pixels = image.rgb();
        for px in pixels.chunks_exact_mut(3) {
            let luma = 0.299 * px[0] as f32 + 0.587 * px[1] as f32 + 0.114 * px[2] as f32;
            for c in px.iter_mut() {
                *c = (*c as f32 + (luma - *c as f32) * amount).round().clamp(0.0, 255.0) as u8;
            }
        }
        Image::from_rgb(image.width(), image.height(), &pixels)
    }
}

export!(Grayscale);
