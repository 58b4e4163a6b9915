//! Fooocus's size rules for image tasks (`modules/util.py`): the "shape ceil" of a size is
//! `ceil(sqrt(H·W) / 64) · 64`; `set_image_shape_ceil` rescales both sides in multiples of 64
//! until the shape ceil is the wanted one.

use crate::pixels::Pixels;
use crate::resample::resize_lanczos;

/// `get_shape_ceil(h, w)`.
pub fn shape_ceil(height: f64, width: f64) -> f64 {
    ((height * width).sqrt() / 64.0).ceil() * 64.0
}

pub fn image_shape_ceil(image: &Pixels) -> f64 {
    shape_ceil(image.height as f64, image.width as f64)
}

/// Python's `round` (half to even) on a float.
pub fn round_half_even(v: f64) -> f64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - v.signum()
    } else {
        r
    }
}

/// The `(width, height)` `set_image_shape_ceil` resizes a `width`×`height` image to.
pub fn shape_ceil_size(width: u32, height: u32, wanted: f64) -> (u32, u32) {
    let (mut h, mut w) = (height as i64, width as i64);
    for _ in 0..256 {
        let current = shape_ceil(h as f64, w as f64);
        if (current - wanted).abs() < 0.1 {
            break;
        }
        let k = wanted / current;
        h = (round_half_even(h as f64 * k / 64.0) * 64.0) as i64;
        w = (round_half_even(w as f64 * k / 64.0) * 64.0) as i64;
    }
    (w.max(0) as u32, h.max(0) as u32)
}

/// `set_image_shape_ceil(im, shape_ceil)`: the image itself when the size does not change.
pub fn set_image_shape_ceil(image: &Pixels, wanted: f64) -> Pixels {
    let (w, h) = shape_ceil_size(image.width, image.height, wanted);
    if (w, h) == (image.width, image.height) {
        image.clone()
    } else {
        resize_lanczos(image, w, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(2.4), 2.0);
    }

    #[test]
    fn shape_ceil_rounds_up_to_64() {
        assert_eq!(shape_ceil(1024.0, 1024.0), 1024.0);
        assert_eq!(shape_ceil(100.0, 100.0), 128.0);
        assert_eq!(shape_ceil(896.0, 1152.0), 1024.0);
    }

    #[test]
    fn set_shape_ceil_sizes() {
        assert_eq!(shape_ceil_size(128, 128, 1024.0), (1024, 1024));
        assert_eq!(shape_ceil_size(1152, 896, 1024.0), (1152, 896));
        // Values from Fooocus's own function.
        assert_eq!(shape_ceil_size(192, 128, 1024.0), (1152, 832));
        assert_eq!(shape_ceil_size(150, 100, 1024.0), (1216, 768));
    }
}
