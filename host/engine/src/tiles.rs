//! ComfyUI's `tiled_scale` (`ldm_patched/modules/utils.py`), which Fooocus runs for the upscaler
//! (512 px tiles, 32 overlap) and its tiled VAE: tiles start every `tile − overlap` pixels until
//! the start passes the edge; each output is weighted by a mask that falls linearly over
//! `round(overlap · scale)` pixels at all four sides, and the sums are divided by the summed
//! weights. The whole output is held, never a whole-image activation.

use candle_core::{DType, Result, Tensor};
use focal_imageops::round_half_even;

/// Per-position weights along one side of a tile output of `len` pixels.
fn feather(len: usize, feather: usize) -> Vec<f32> {
    let mut w = vec![1f32; len];
    for t in 0..feather.min(len) {
        let f = (1.0 / feather as f32) * (t + 1) as f32;
        w[t] *= f;
        w[len - 1 - t] *= f;
    }
    w
}

/// Run `f` over `tile_w`×`tile_h` crops of `input` (`[1, C, H, W]`) and blend its outputs (`[1,
/// out_channels, h·scale, w·scale]`) into an F32 tensor of `round(H·scale)`×`round(W·scale)`.
#[allow(clippy::too_many_arguments)]
pub fn tiled_scale(
    input: &Tensor,
    tile_w: usize,
    tile_h: usize,
    overlap: usize,
    scale: f64,
    out_channels: usize,
    f: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (_, _, h, w) = input.dims4()?;
    let scaled = |v: usize| round_half_even(v as f64 * scale) as usize;
    let (out_h, out_w) = (scaled(h), scaled(w));
    let mut out = vec![0f32; out_channels * out_h * out_w];
    let mut weight = vec![0f32; out_h * out_w];
    let fade = round_half_even(overlap as f64 * scale) as usize;
    let step = |tile: usize| (tile - overlap.min(tile - 1)).max(1);
    for y in (0..h).step_by(step(tile_h)) {
        for x in (0..w).step_by(step(tile_w)) {
            let crop = input.narrow(2, y, tile_h.min(h - y))?.narrow(3, x, tile_w.min(w - x))?;
            let tile = f(&crop)?.to_dtype(DType::F32)?;
            let (_, c, th, tw) = tile.dims4()?;
            let data: Vec<f32> = tile.flatten_all()?.to_vec1()?;
            let (rows, cols) = (feather(th, fade), feather(tw, fade));
            let (oy, ox) = (scaled(y), scaled(x));
            // The slice `out[oy:oy+th, ox:ox+tw]`, clipped at the edges as numpy clips.
            for ty in 0..th.min(out_h.saturating_sub(oy)) {
                for tx in 0..tw.min(out_w.saturating_sub(ox)) {
                    let m = rows[ty] * cols[tx];
                    let at = (oy + ty) * out_w + ox + tx;
                    weight[at] += m;
                    for ch in 0..c.min(out_channels) {
                        out[ch * out_h * out_w + at] += data[(ch * th + ty) * tw + tx] * m;
                    }
                }
            }
        }
    }
    for ch in 0..out_channels {
        for (o, &wt) in out[ch * out_h * out_w..][..out_h * out_w].iter_mut().zip(&weight) {
            *o /= wt;
        }
    }
    Tensor::from_vec(out, (1, out_channels, out_h, out_w), input.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn tiles_of_an_identity_rebuild_the_input() {
        let input = Tensor::arange(0f32, 3.0 * 50.0 * 70.0, &Device::Cpu).unwrap().reshape((1, 3, 50, 70)).unwrap();
        let out = tiled_scale(&input, 32, 24, 8, 1.0, 3, &mut |t| Ok(t.clone())).unwrap();
        let diff = (out - &input).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-2, "{diff}");
    }
}
