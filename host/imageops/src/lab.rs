//! CIE Lab as OpenCV 4.10's `cvtColor` computes it (`COLOR_BGR2Lab`, `COLOR_Lab2BGR`: sRGB gamma, D65
//! white), in its own fixed-point and table arithmetic (`imgproc/src/color_lab.cpp`):
//! - 8-bit BGR → Lab (`RGB2Lab_b`): the gamma table (×8), the XYZ matrix in Q12, the cube-root
//!   table in Q15, rounded shifts;
//! - float BGR → Lab (`RGB2Lab_f` with interpolation): each channel rounded to Q14, then a
//!   trilinear interpolation in a 33³ table of Lab values in Q14 (so a and b come in steps of 1/64);
//! - 8-bit Lab → BGR (`Lab2RGBinteger`): tables from L to y and f(y), a/b to x/z, the inverse
//!   matrix in Q12 and a 4096-entry inverse gamma table.
//!
//! The tables are built as OpenCV builds them with its soft-float arithmetic: IEEE single and double
//! operations, which f32/f64 give in the same order, and its cube root ported; its `pow` is taken from
//! the platform (a last-bit difference there moves a table entry only on an exact rounding tie).

use std::sync::OnceLock;

const D65: [f64; 3] = [0.950456, 1.0, 1.088754];
const SRGB_TO_XYZ: [f64; 9] = [0.412453, 0.357580, 0.180423, 0.212671, 0.715160, 0.072169, 0.019334, 0.119193, 0.950227];
const XYZ_TO_SRGB: [f64; 9] = [3.240479, -1.53715, -0.498535, -0.969256, 1.875991, 0.041556, 0.055648, -0.204043, 1.057311];

const LAB_SHIFT: i32 = 12;
const LAB_SHIFT2: i32 = 15;
const GAMMA_SHIFT: i32 = 3;
const LAB_BASE: i32 = 1 << 14;
const LUT_DIM: usize = 33;
const TRILINEAR_SHIFT: i32 = 4;
const INV_GAMMA_SIZE: usize = 4096;
const MIN_AB: i32 = -8145;

/// `cvRound`: to nearest, ties to even.
fn round(v: f64) -> i32 {
    v.round_ties_even() as i32
}

/// `CV_DESCALE`: a rounded arithmetic shift.
fn descale(v: i32, n: i32) -> i32 {
    v.wrapping_add(1 << (n - 1)) >> n
}

fn apply_gamma(x: f32) -> f32 {
    let x = x as f64;
    (if x <= 809.0 / 20000.0 { x / (323.0 / 25.0) } else { ((x + 11.0 / 200.0) / (1.0 + 11.0 / 200.0)).powf(12.0 / 5.0) }) as f32
}

fn apply_inverse_gamma(x: f32) -> f32 {
    let x = x as f64;
    (if x <= 7827.0 / 2500000.0 { x * (323.0 / 25.0) } else { x.powf(1.0 / (12.0 / 5.0)) * (1.0 + 11.0 / 200.0) - 11.0 / 200.0 }) as f32
}

/// Lab's `f(t)`: the cube root above (6/29)³, a line below it.
fn lab_f(t: f32) -> f32 {
    let (threshold, scale, bias) = (216.0f32 / 24389.0, 841.0f32 / 108.0, 16.0f32 / 116.0);
    if t > threshold {
        cube_root(t)
    } else {
        t.mul_add(scale, bias)
    }
}

/// OpenCV's soft-float cube root (Ken Turkowski's): the mantissa scaled into [0.125, 1), a quartic
/// rational approximation in double, its mantissa truncated back to single precision.
fn cube_root(x: f32) -> f32 {
    if x.is_nan() || x.is_infinite() {
        return x;
    }
    let bits = x.to_bits();
    if bits & 0x7fff_ffff == 0 {
        return 0.0;
    }
    let sign = bits >> 31;
    let mut ex = ((bits >> 23) & 0xff) as i32 - 127;
    let mut shx = ex % 3;
    if shx >= 0 {
        shx -= 3;
    }
    ex = (ex - shx) / 3 - 1;
    let fr = f64::from_bits((((shx + 1023) as u64) << 52) | (((bits & 0x7f_ffff) as u64) << 29));
    let c = |raw: u64| f64::from_bits(raw);
    let num = (((c(0x4046a09e6653ba70) * fr + c(0x406808f46c6116e0)) * fr + c(0x405dca97439cae14)) * fr + c(0x402add70d2827500)) * fr
        + c(0x3fc4f15f83f55d2d);
    let den = (((c(0x402d9e20660edb21) * fr + c(0x4062ff15c0285815)) * fr + c(0x406510d06a8112ce)) * fr + c(0x4040fecbc9e2c375)) * fr + 1.0;
    let fr = num / den;
    let mantissa = ((fr.to_bits() & ((1u64 << 52) - 1)) >> 29) as u32;
    f32::from_bits((sign << 31) | (((ex + 127) as u32) << 23) | mantissa)
}

struct Tables {
    gamma_b: [u16; 256],
    cbrt_b: Vec<u16>,
    /// `RGB2Lab_b`'s matrix rows (X, Y, Z) over the stored channels (B, G, R), Q12, white-scaled.
    to_xyz: [i32; 9],
    /// Per LUT cell corner, Lab in Q14, laid out as OpenCV's `RGB2LabLUT_s16` (8 corners × 3).
    lab_lut: Vec<i16>,
    trilinear: Vec<i16>,
    l_to_yf: [(i32, i32); 256],
    ab_to_xz: Vec<i32>,
    /// `Lab2RGBinteger`'s rows (R, G, B) over (x, y, z), Q12, white-scaled.
    to_rgb: [i32; 9],
    inverse_gamma_b: Vec<u16>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(build_tables)
}

fn build_tables() -> Tables {
    let mut gamma_b = [0u16; 256];
    for (i, g) in gamma_b.iter_mut().enumerate() {
        *g = round((255.0f32 * 8.0 * apply_gamma(i as f32 / 255.0)) as f64) as u16;
    }
    let cb_scale = 1.0f32 / (255.0 * (1 << GAMMA_SHIFT) as f32);
    let cbrt_b = (0..256 * 3 / 2 * (1 << GAMMA_SHIFT))
        .map(|i| round(((1 << LAB_SHIFT2) as f32 * lab_f(cb_scale * i as f32)) as f64) as u16)
        .collect();
    let mut to_xyz = [0i32; 9];
    for i in 0..3 {
        let c = &SRGB_TO_XYZ[i * 3..i * 3 + 3];
        // Stored order B, G, R: the blue coefficient first.
        for (k, &coeff) in [c[2], c[1], c[0]].iter().enumerate() {
            to_xyz[i * 3 + k] = round(4096.0 * coeff / D65[i]);
        }
    }

    // The 33³ Lab table over (B, G, R) as stored, then per cell its 8 corners.
    let scaled: Vec<f32> = (0..3).flat_map(|i| [2usize, 1, 0].map(|k| (SRGB_TO_XYZ[i * 3 + k] * (1.0 / D65[i])) as f32)).collect();
    let mut prev = vec![0i16; LUT_DIM * LUT_DIM * LUT_DIM * 3];
    let last = (LUT_DIM - 1) as f32;
    for p in 0..LUT_DIM {
        for q in 0..LUT_DIM {
            for r in 0..LUT_DIM {
                let (c0, c1, c2) = (apply_gamma(p as f32 / last), apply_gamma(q as f32 / last), apply_gamma(r as f32 / last));
                let row = |i: usize| c0 * scaled[i * 3] + c1 * scaled[i * 3 + 1] + c2 * scaled[i * 3 + 2];
                let (x, y, z) = (row(0), row(1), row(2));
                let (fx, fy, fz) = (lab_f(x), lab_f(y), lab_f(z));
                let l = if y > 216.0f32 / 24389.0 { 116.0 * fy - 16.0 } else { (24389.0f32 / 27.0) * y };
                let (a, b) = (500.0 * (fx - fy), 200.0 * (fy - fz));
                let base = LAB_BASE as f32;
                let idx = (p + q * LUT_DIM + r * LUT_DIM * LUT_DIM) * 3;
                prev[idx] = round((base * l / 100.0) as f64) as i16;
                prev[idx + 1] = round((base * (a + 128.0) / 256.0) as f64) as i16;
                prev[idx + 2] = round((base * (b + 128.0) / 256.0) as f64) as i16;
            }
        }
    }
    let mut lab_lut = vec![0i16; LUT_DIM * LUT_DIM * LUT_DIM * 3 * 8];
    for p in 0..LUT_DIM {
        for q in 0..LUT_DIM {
            for r in 0..LUT_DIM {
                for corner in 0..8 {
                    let (dp, dq, dr) = (corner >> 2, (corner >> 1) & 1, corner & 1);
                    let old =
                        ((p + dp).min(LUT_DIM - 1) + (q + dq).min(LUT_DIM - 1) * LUT_DIM + (r + dr).min(LUT_DIM - 1) * LUT_DIM * LUT_DIM)
                            * 3;
                    let new = (p + q * LUT_DIM + r * LUT_DIM * LUT_DIM) * 24 + corner;
                    for k in 0..3 {
                        lab_lut[new + 8 * k] = prev[old + k];
                    }
                }
            }
        }
    }
    let tb = 1i16 << TRILINEAR_SHIFT;
    let mut trilinear = vec![0i16; (tb as usize).pow(3) * 8];
    for p in 0..tb {
        for q in 0..tb {
            for r in 0..tb {
                let (pp, qq, rr) = (tb - p, tb - q, tb - r);
                let at = 8 * (p as usize + tb as usize * q as usize + (tb as usize).pow(2) * r as usize);
                trilinear[at..at + 8].copy_from_slice(&[
                    pp * qq * rr,
                    pp * qq * r,
                    pp * q * rr,
                    pp * q * r,
                    p * qq * rr,
                    p * qq * r,
                    p * q * rr,
                    p * q * r,
                ]);
            }
        }
    }

    let mut l_to_yf = [(0i32, 0i32); 256];
    for (i, entry) in l_to_yf.iter_mut().enumerate() {
        let i = i as i32;
        *entry = if i <= 20 {
            let y = round(((i * LAB_BASE * 20 * 9) as f32 / (17 * 29 * 29 * 29) as f32) as f64);
            let ify = round((LAB_BASE as f32 * (16.0f32 / 116.0 + (i * 5) as f32 / (3 * 17 * 29) as f32)) as f64);
            (y, ify)
        } else {
            let fy = (i * 100 * LAB_BASE) as f32 / (255 * 116) as f32 + (16 * LAB_BASE) as f32 / 116.0;
            (round((fy * fy * fy / (LAB_BASE as f32 * LAB_BASE as f32)) as f64), round(fy as f64))
        };
    }
    let ab_to_xz = (MIN_AB..LAB_BASE * 9 / 4 + MIN_AB)
        .map(|i| if i <= 3390 { i * 108 / 841 - LAB_BASE * 16 / 116 * 108 / 841 } else { i * i / LAB_BASE * i / LAB_BASE })
        .collect();
    let mut to_rgb = [0i32; 9];
    for row in 0..3 {
        for col in 0..3 {
            to_rgb[row * 3 + col] = round(4096.0 * XYZ_TO_SRGB[row * 3 + col] * D65[col]);
        }
    }
    let inverse_gamma_b = (0..INV_GAMMA_SIZE)
        .map(|i| round((255.0f32 * apply_inverse_gamma((1.0f32 / INV_GAMMA_SIZE as f32) * i as f32)) as f64) as u16)
        .collect();
    Tables { gamma_b, cbrt_b, to_xyz, lab_lut, trilinear, l_to_yf, ab_to_xz, to_rgb, inverse_gamma_b }
}

/// 8-bit BGR → 8-bit Lab (`L·255/100`, `a + 128`, `b + 128`).
pub fn bgr_to_lab_u8(bgr: [u8; 3]) -> [u8; 3] {
    let t = tables();
    let c = bgr.map(|v| t.gamma_b[v as usize] as i32);
    let f = |row: usize| {
        let v = descale(c[0] * t.to_xyz[row * 3] + c[1] * t.to_xyz[row * 3 + 1] + c[2] * t.to_xyz[row * 3 + 2], LAB_SHIFT);
        t.cbrt_b[v.clamp(0, t.cbrt_b.len() as i32 - 1) as usize] as i32
    };
    let (fx, fy, fz) = (f(0), f(1), f(2));
    let l_scale = (116 * 255 + 50) / 100;
    let l_shift = -((16 * 255 * (1 << LAB_SHIFT2) + 50) / 100);
    let l = descale(l_scale * fy + l_shift, LAB_SHIFT2);
    let a = descale(500 * (fx - fy) + 128 * (1 << LAB_SHIFT2), LAB_SHIFT2);
    let b = descale(200 * (fy - fz) + 128 * (1 << LAB_SHIFT2), LAB_SHIFT2);
    [l, a, b].map(|v| v.clamp(0, 255) as u8)
}

/// Float BGR (0..1, clipped) → float Lab (L 0..100), through OpenCV's interpolated table.
pub fn bgr_to_lab(bgr: [f32; 3]) -> [f32; 3] {
    let t = tables();
    let [cx, cy, cz] = bgr.map(|v| (v.clamp(0.0, 1.0) * LAB_BASE as f32).round_ties_even() as i32);
    let cell = |c: i32| (c >> (14 - 5)) as usize;
    let base = 24 * (cell(cx) + LUT_DIM * cell(cy) + LUT_DIM * LUT_DIM * cell(cz));
    let frac = |c: i32| ((c >> (14 - 8 - 1)) & ((1 << TRILINEAR_SHIFT) - 1)) as usize;
    let tb = 1usize << TRILINEAR_SHIFT;
    let w = 8 * (frac(cx) + tb * frac(cy) + tb * tb * frac(cz));
    let channel = |k: usize| {
        let sum: i32 = (0..8).map(|i| t.lab_lut[base + 8 * k + i] as i32 * t.trilinear[w + i] as i32).sum();
        descale(sum, TRILINEAR_SHIFT * 3) as f32
    };
    [channel(0) * (100.0 / LAB_BASE as f32), channel(1) * (256.0 / LAB_BASE as f32) - 128.0, channel(2) * (256.0 / LAB_BASE as f32) - 128.0]
}

/// 8-bit Lab → 8-bit BGR.
pub fn lab_to_bgr_u8(lab: [u8; 3]) -> [u8; 3] {
    let t = tables();
    let (y, ify) = t.l_to_yf[lab[0] as usize];
    let (a, b) = (lab[1] as i32, lab[2] as i32);
    let adiv = ((5 * a * 53687 + (1 << 7)) >> 13) - 128 * LAB_BASE / 500;
    let bdiv = ((b * 41943 + (1 << 4)) >> 9) - 128 * LAB_BASE / 200 + 1;
    let xz = |v: i32| t.ab_to_xz[(v - MIN_AB).clamp(0, t.ab_to_xz.len() as i32 - 1) as usize];
    let (x, z) = (xz(ify + adiv), xz(ify - bdiv));
    let shift = LAB_SHIFT + (14 - 12);
    let channel = |row: usize| {
        let m = &t.to_rgb[row * 3..row * 3 + 3];
        let v = descale(m[0].wrapping_mul(x).wrapping_add(m[1].wrapping_mul(y)).wrapping_add(m[2].wrapping_mul(z)), shift);
        t.inverse_gamma_b[v.clamp(0, INV_GAMMA_SIZE as i32 - 1) as usize].min(255) as u8
    };
    [channel(2), channel(1), channel(0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_and_black_land_on_the_axis_and_come_back() {
        let white = bgr_to_lab([1.0, 1.0, 1.0]);
        assert!((white[0] - 100.0).abs() < 0.01 && white[1].abs() < 0.05 && white[2].abs() < 0.05, "{white:?}");
        assert_eq!(bgr_to_lab_u8([0, 0, 0]), [0, 128, 128]);
        for bgr in [[10u8, 200, 30], [255, 0, 0], [128, 128, 128], [3, 250, 251]] {
            let back = lab_to_bgr_u8(bgr_to_lab_u8(bgr));
            assert!(back.iter().zip(bgr).all(|(a, b)| (*a as i32 - b as i32).abs() <= 3), "{bgr:?} -> {back:?}");
        }
    }

    /// Values OpenCV 4.10 gives (cv2.cvtColor on these pixels).
    #[test]
    fn opencv_samples() {
        let bgr = [[10u8, 200, 30], [255, 0, 0], [0, 0, 255], [128, 128, 128], [3, 250, 251], [200, 30, 40]];
        let lab = [[180u8, 58, 196], [82, 207, 20], [136, 208, 195], [137, 128, 128], [244, 107, 221], [72, 186, 45]];
        for (c, l) in bgr.iter().zip(lab) {
            assert_eq!(bgr_to_lab_u8(*c), l, "{c:?}");
        }
        let back = [[92u8, 92, 92], [152, 207, 154], [151, 0, 85], [255, 255, 255], [0, 153, 0]];
        for (l, c) in [[100u8, 128, 128], [200, 100, 150], [50, 200, 60], [255, 128, 128], [128, 0, 255]].iter().zip(back) {
            assert_eq!(lab_to_bgr_u8(*l), c, "{l:?}");
        }
        // float: 0.01/0.02/0.03 (B, G, R) → 1.4587402, 0.296875, 1.171875
        let f = bgr_to_lab([0.01, 0.02, 0.03]);
        assert_eq!(f, [1.4587402, 0.296875, 1.171875]);
    }
}
