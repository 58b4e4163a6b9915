//! Scalar re-implementations of the single-precision `log` and `sincos` that PyTorch's CPU
//! `randn` uses for Box-Muller (`log256_ps` / `sincos256_ps` of `avx_mathfun.h`: Cephes
//! polynomials, compiled with multiply-adds fused). libm's correctly rounded functions differ
//! from them in the last bit for about one value in six; following the same operation sequence
//! gives the same bits, so a seed gives exactly Fooocus's initial noise. Only positive finite
//! arguments are handled (Box-Muller's `log` of (0, 1] and `sincos` of [0, 2π)).

// The Cephes constants are written as in avx_mathfun.h; the f32 each rounds to is what torch uses.
#![allow(clippy::excessive_precision, clippy::approx_constant)]

fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// Cephes `logf` on a positive normal float.
pub fn log(x: f32) -> f32 {
    const SQRTHF: f32 = 0.707_106_781_186_547_524;
    const P: [f32; 9] = [
        7.037_683_629_2e-2,
        -1.151_461_031_0e-1,
        1.167_699_874_0e-1,
        -1.242_014_084_6e-1,
        1.424_932_278_7e-1,
        -1.666_805_766_5e-1,
        2.000_071_476_5e-1,
        -2.499_999_399_3e-1,
        3.333_333_117_4e-1,
    ];
    const Q1: f32 = -2.121_944_40e-4;
    const Q2: f32 = 0.693_359_375;
    let bits = x.max(f32::MIN_POSITIVE).to_bits();
    // Mantissa in [0.5, 1) and the matching exponent.
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0x3f00_0000);
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    let small = m < SQRTHF;
    let tmp = if small { m } else { 0.0 };
    m -= 1.0;
    if small {
        e -= 1.0;
    }
    m += tmp;
    let z = m * m;
    let mut y = P[0];
    for p in &P[1..] {
        y = fma(y, m, *p);
    }
    y *= m;
    // The compiler fused `y·z + e·Q1` this way round (checked bit for bit against torch).
    y = fma(y, z, e * Q1);
    y = fma(-z, 0.5, y);
    fma(e, Q2, m + y)
}

/// Cephes `sincosf` of a non-negative float: `(sin, cos)`.
pub fn sincos(x: f32) -> (f32, f32) {
    const FOPI: f32 = 1.273_239_544_735_16; // 4/π
    let mut j = (x * FOPI) as i32;
    j = (j + 1) & !1;
    let y = j as f32;
    let swap_sin = j & 4 != 0;
    let use_sin_poly = j & 2 == 0;
    let cos_negative = (!(j - 2)) & 4 != 0;
    // Extended-precision reduction x − y·π/4.
    let mut r = fma(y, -0.785_156_25, x);
    r = fma(y, -2.418_756_484_985_351_562_5e-4, r);
    r = fma(y, -3.774_894_977_445_941_08e-8, r);
    let z = r * r;
    let mut c = fma(2.443_315_711_809_948e-5, z, -1.388_731_625_493_765e-3);
    c = fma(c, z, 4.166_664_568_298_827e-2);
    c *= z;
    c = fma(c, z, -(z * 0.5));
    c += 1.0;
    let mut s = fma(-1.951_529_589_1e-4, z, 8.332_160_873_6e-3);
    s = fma(s, z, -1.666_665_461_1e-1);
    s *= z;
    s = fma(s, r, r);
    let (sin, cos) = if use_sin_poly { (s, c) } else { (c, s) };
    (if swap_sin { -sin } else { sin }, if cos_negative { -cos } else { cos })
}
