//! RGB images in and out of the engine: PNG files and conversions to/from tensors.

use std::io::Cursor;

use candle_core::{Device, Tensor};

use crate::error::{EngineError, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// Row-major RGB, 3 bytes per pixel.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// `[3, H, W]` values in [0, 1] → bytes by truncation of `255·x` (ComfyUI's SaveImage).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (c, h, w) = t.dims3()?;
        if c != 3 {
            return Err(EngineError::Image(format!("expected 3 channels, got {c}")));
        }
        let v: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.clamp(0f32, 1f32)?.permute((1, 2, 0))?.flatten_all()?.to_vec1()?;
        Ok(Self { width: w as u32, height: h as u32, data: v.iter().map(|x| (x * 255.0).clamp(0.0, 255.0) as u8).collect() })
    }

    /// `[1, 3, H, W]` in [0, 1].
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let v: Vec<f32> = self.data.iter().map(|&b| b as f32 / 255.0).collect();
        Ok(Tensor::from_vec(v, (self.height as usize, self.width as usize, 3), device)?.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?)
    }

    pub fn encode_png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| EngineError::Image(e.to_string()))?;
        writer.write_image_data(&self.data).map_err(|e| EngineError::Image(e.to_string()))?;
        writer.finish().map_err(|e| EngineError::Image(e.to_string()))?;
        Ok(out)
    }

    /// Decode a PNG (gray, RGB or RGBA, 8 bit; alpha is dropped).
    pub fn decode_png(bytes: &[u8]) -> Result<Self> {
        let mut decoder = png::Decoder::new(Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().map_err(|e| EngineError::Image(format!("not a readable PNG: {e}")))?;
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).map_err(|e| EngineError::Image(format!("not a readable PNG: {e}")))?;
        let buf = &buf[..info.buffer_size()];
        let data = match info.color_type {
            png::ColorType::Rgb => buf.to_vec(),
            png::ColorType::Rgba => buf.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
            png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
            png::ColorType::GrayscaleAlpha => buf.chunks(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
            png::ColorType::Indexed => return Err(EngineError::Image("unexpanded indexed PNG".into())),
        };
        Ok(Self { width: info.width, height: info.height, data })
    }
}

/// SDXL latent → approximate RGB (ComfyUI's linear preview factors), one pixel per latent pixel.
pub fn latent_preview(latent: &Tensor) -> Result<RgbImage> {
    const FACTORS: [[f32; 3]; 4] =
        [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]];
    const BIAS: [f32; 3] = [0.1084, -0.0175, -0.0011];
    let l = latent.get(0)?.to_dtype(candle_core::DType::F32)?;
    let (c, h, w) = l.dims3()?;
    let v: Vec<f32> = l.flatten_all()?.to_vec1()?;
    let mut data = Vec::with_capacity(h * w * 3);
    for p in 0..h * w {
        for ch in 0..3 {
            let mut acc = BIAS[ch];
            for (k, f) in FACTORS.iter().enumerate().take(c.min(4)) {
                acc += v[k * h * w + p] * f[ch];
            }
            data.push((((acc + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8);
        }
    }
    Ok(RgbImage { width: w as u32, height: h as u32, data })
}
