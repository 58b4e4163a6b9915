//! Where Fooocus inpaints (`inpaint_worker.py`: `compute_initial_abcd`, `solve_abcd`) and how an
//! outpaint grows the canvas (Fooocus-API's `apply_outpaint`).

use crate::Pixels;

/// Rows `top..bottom`, columns `left..right` (Fooocus's `a, b, c, d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub top: u32,
    pub bottom: u32,
    pub left: u32,
    pub right: u32,
}

impl CropBox {
    pub fn width(&self) -> u32 {
        self.right - self.left
    }
    pub fn height(&self) -> u32 {
        self.bottom - self.top
    }
}

/// The area Fooocus samples for `mask` (`width`×`height`, 255 = repaint) with respective field
/// `k` (0–1; 1 = the whole image): a square around the pixels above 0, 1.15× their half extent,
/// grown a pixel a side (the shorter side first) until it covers `k` of each dimension.
/// `None` when the mask is empty.
pub fn inpaint_area(mask: &[u8], width: u32, height: u32, k: f64) -> Option<CropBox> {
    let (w, h) = (width as i64, height as i64);
    if k >= 1.0 {
        return Some(CropBox { top: 0, bottom: height, left: 0, right: width });
    }
    let (mut a, mut b, mut c, mut d) = (i64::MAX, i64::MIN, i64::MAX, i64::MIN);
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m > 0) {
        let (y, x) = (i as i64 / w, i as i64 % w);
        (a, b, c, d) = (a.min(y), b.max(y), c.min(x), d.max(x));
    }
    if a > b {
        return None;
    }
    let regulate = |a: i64, b: i64, c: i64, d: i64| (a.clamp(0, h), b.clamp(0, h), c.clamp(0, w), d.clamp(0, w));
    let (abp, abm, cdp, cdm) = ((b + a) / 2, (b - a) / 2, (d + c) / 2, (d - c) / 2);
    let l = (abm.max(cdm) as f64 * 1.15) as i64;
    let (mut a, mut b, mut c, mut d) = regulate(abp - l, abp + l + 1, cdp - l, cdp + l + 1);
    while !((b - a) as f64 >= h as f64 * k && (d - c) as f64 >= w as f64 * k) {
        let mut add_h = (b - a) < (d - c);
        let mut add_w = !add_h;
        if b - a == h {
            add_w = true;
        }
        if d - c == w {
            add_h = true;
        }
        if add_h {
            (a, b) = (a - 1, b + 1);
        }
        if add_w {
            (c, d) = (c - 1, d + 1);
        }
        (a, b, c, d) = regulate(a, b, c, d);
    }
    Some(CropBox { top: a as u32, bottom: b as u32, left: c as u32, right: d as u32 })
}

/// The pixels of `area`.
pub fn crop(image: &Pixels, area: CropBox) -> Pixels {
    let ch = image.channels as usize;
    let mut data = Vec::with_capacity(area.width() as usize * area.height() as usize * ch);
    for y in area.top..area.bottom {
        let row = (y as usize * image.width as usize + area.left as usize) * ch;
        data.extend_from_slice(&image.data[row..row + area.width() as usize * ch]);
    }
    Pixels { width: area.width(), height: area.height(), data, ..image.clone() }
}

/// `image` with `patch` written over `area` (same size as the area).
pub fn paste(image: &Pixels, patch: &Pixels, area: CropBox) -> Pixels {
    let ch = image.channels as usize;
    let mut out = image.clone();
    let n = area.width() as usize * ch;
    for (i, y) in (area.top..area.bottom).enumerate() {
        let row = (y as usize * image.width as usize + area.left as usize) * ch;
        out.data[row..row + n].copy_from_slice(&patch.data[i * n..(i + 1) * n]);
    }
    out
}

/// Pixels added on each side of an outpaint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Margins {
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
}

/// `np.pad(image, …, mode='edge')`: the margins filled by repeating the nearest edge pixel.
pub fn pad_edge(image: &Pixels, m: Margins) -> Pixels {
    pad_with(image, m, |src, x, y| src.pixel(x, y).to_vec())
}

/// `np.pad(…, constant_values=value)` on a one-channel mask.
pub fn pad_constant(mask: &Pixels, m: Margins, value: u8) -> Pixels {
    pad_with(mask, m, move |src, _, _| vec![value; src.channels as usize])
}

fn pad_with(src: &Pixels, m: Margins, margin: impl Fn(&Pixels, u32, u32) -> Vec<u8>) -> Pixels {
    let (w, h) = (src.width + m.left + m.right, src.height + m.top + m.bottom);
    let mut data = Vec::with_capacity(w as usize * h as usize * src.channels as usize);
    for y in 0..h {
        for x in 0..w {
            let inside = x >= m.left && x < m.left + src.width && y >= m.top && y < m.top + src.height;
            let sx = x.saturating_sub(m.left).min(src.width - 1);
            let sy = y.saturating_sub(m.top).min(src.height - 1);
            if inside {
                data.extend_from_slice(src.pixel(sx, sy));
            } else {
                data.extend(margin(src, sx, sy));
            }
        }
    }
    Pixels { width: w, height: h, channels: src.channels, data }
}
