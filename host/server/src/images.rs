//! `focal:plugin/images` on the server: images decoded under the request limits, kept as the
//! encoded file (`focal_core::Image`), decoded again where pixels are needed.

use std::sync::Arc;

use focal_core::services::ImageService;
use focal_core::Image;
use focal_engine::image::RgbImage;

use crate::decode::{self, ImageLimits};
use crate::outputs::{self, Format};

/// An image from a file already checked to be `width`×`height`.
pub fn image_from_encoded(encoded: Vec<u8>, width: u32, height: u32) -> Image {
    Image { width, height, encoded: Arc::from(encoded) }
}

/// An engine image as a PNG-encoded host image.
pub fn image_from_rgb(rgb: &RgbImage) -> Result<Image, String> {
    let png = outputs::encode(rgb, Format::Png, None).map_err(|e| format!("encoding the image: {e:#}"))?;
    Ok(image_from_encoded(png, rgb.width, rgb.height))
}

pub struct Images {
    pub limits: ImageLimits,
}

impl Images {
    /// The pixels of a host image (it was checked when made; the limits apply again).
    pub fn pixels(&self, image: &Image) -> Result<RgbImage, String> {
        decode::decode(&image.encoded, &self.limits).map_err(|e| e.to_string())
    }
}

impl ImageService for Images {
    fn decode(&self, encoded: &[u8]) -> Result<Image, String> {
        let rgb = decode::decode(encoded, &self.limits).map_err(|e| e.to_string())?;
        Ok(image_from_encoded(encoded.to_vec(), rgb.width, rgb.height))
    }

    fn encode_rgb(&self, width: u32, height: u32, pixels: Vec<u8>) -> Result<Image, String> {
        let expected = width as u64 * height as u64 * 3;
        if width == 0 || height == 0 || pixels.len() as u64 != expected {
            return Err(format!("{width}×{height} RGB needs {expected} bytes, got {}", pixels.len()));
        }
        if width as u64 * height as u64 > self.limits.max_pixels {
            return Err(format!("{width}×{height} is over the limit of {} pixels", self.limits.max_pixels));
        }
        image_from_rgb(&RgbImage { width, height, data: pixels })
    }

    fn rgb(&self, image: &Image) -> Result<Vec<u8>, String> {
        Ok(self.pixels(image)?.data)
    }

    fn png(&self, image: &Image) -> Result<Vec<u8>, String> {
        if image.encoded.starts_with(b"\x89PNG") {
            return Ok(image.encoded.to_vec());
        }
        image_from_rgb(&self.pixels(image)?).map(|png| png.encoded.to_vec())
    }
}
