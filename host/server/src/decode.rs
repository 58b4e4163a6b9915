//! Decoding untrusted images (uploads, base64, fetched URLs) without letting a header decide
//! an allocation: the size a header claims is checked against [`ImageLimits`] before any
//! pixel buffer exists, and each decoder is given the same byte budget.

use anyhow::{bail, Context, Result};
use focal_engine::image::RgbImage;

/// Bounds on one decoded image.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Width × height at most.
    pub max_pixels: u64,
}

impl ImageLimits {
    /// 64 megapixels (e.g. 8192 × 8192): far above anything Fooocus works on, small enough that
    /// the decode buffers (≤ 8 bytes a pixel for 16-bit RGBA) stay well inside memory.
    pub const DEFAULT_MAX_PIXELS: u64 = 64 << 20;

    /// Largest buffer a decoder may allocate: 16-bit RGBA at the pixel limit.
    fn max_bytes(&self) -> usize {
        usize::try_from(self.max_pixels.saturating_mul(8)).unwrap_or(usize::MAX)
    }

    /// Refuse a header that claims more than the limit (or nothing at all).
    fn check(&self, width: u32, height: u32) -> Result<()> {
        let pixels = width as u64 * height as u64;
        if width == 0 || height == 0 {
            bail!("image is {width}×{height} pixels: it has no pixels");
        }
        if pixels > self.max_pixels {
            bail!("image is {width}×{height} pixels ({pixels}); the limit is {} pixels", self.max_pixels);
        }
        Ok(())
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_pixels: Self::DEFAULT_MAX_PIXELS }
    }
}

/// Decode a PNG, JPEG or WebP into RGB within `limits`: grey expanded, alpha composed over
/// white (Fooocus's `HWC3`).
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
    if bytes.starts_with(b"\x89PNG") {
        let mut dec = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), png::Limits { bytes: limits.max_bytes() });
        dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = dec.read_info()?;
        let (w, h) = (reader.info().width, reader.info().height);
        limits.check(w, h)?;
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf)?;
        let channels = info.color_type.samples();
        Ok(to_rgb(info.width, info.height, &buf[..info.buffer_size()], channels))
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        let mut dec = jpeg_decoder::Decoder::new(bytes);
        dec.set_max_decoding_buffer_size(limits.max_bytes());
        dec.read_info()?;
        let info = dec.info().context("JPEG without a frame header")?;
        limits.check(info.width as u32, info.height as u32)?;
        let pixels = dec.decode()?;
        let channels = match info.pixel_format {
            jpeg_decoder::PixelFormat::L8 => 1,
            jpeg_decoder::PixelFormat::RGB24 => 3,
            other => bail!("unsupported JPEG pixel format {other:?}"),
        };
        Ok(to_rgb(info.width as u32, info.height as u32, &pixels, channels))
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        let mut dec = image_webp::WebPDecoder::new(std::io::Cursor::new(bytes))?;
        dec.set_memory_limit(limits.max_bytes());
        let (w, h) = dec.dimensions();
        limits.check(w, h)?;
        let channels = if dec.has_alpha() { 4 } else { 3 };
        let mut buf = vec![0; dec.output_buffer_size().context("WebP too large")?];
        dec.read_image(&mut buf)?;
        Ok(to_rgb(w, h, &buf, channels))
    } else {
        bail!("not a PNG, JPEG or WebP image")
    }
}

fn to_rgb(width: u32, height: u32, pixels: &[u8], channels: usize) -> RgbImage {
    let data = match channels {
        3 => pixels.to_vec(),
        1 => pixels.iter().flat_map(|&g| [g, g, g]).collect(),
        2 => pixels.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        _ => {
            let rgba = focal_imageops::Pixels::new(width, height, 4, pixels[..width as usize * height as usize * 4].to_vec());
            return rgba.map(|p| RgbImage { width, height, data: p.hwc3().data }).unwrap_or(RgbImage { width, height, data: vec![] });
        }
    };
    RgbImage { width, height, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_is_bounded_from_its_header() {
        let img = RgbImage { width: 16, height: 8, data: vec![7; 16 * 8 * 3] };
        let small = ImageLimits { max_pixels: 100 };
        for format in [crate::outputs::Format::Jpeg, crate::outputs::Format::Webp, crate::outputs::Format::Png] {
            let bytes = crate::outputs::encode(&img, format, None).unwrap();
            assert!(decode(&bytes, &ImageLimits::default()).is_ok(), "{format:?}");
            let err = decode(&bytes, &small).unwrap_err().to_string();
            assert!(err.contains("16×8"), "{format:?}: {err}");
        }
    }
}
