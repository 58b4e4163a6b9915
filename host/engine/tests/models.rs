//! Parity of each model stage with the PyTorch reference tensors of the tiny SDXL fixture.
mod common;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use focal_engine::sdxl::{LoadOptions, SdxlModel, SizeIds};
use focal_engine::unet::UNetTrace;

fn model(name: &str) -> &'static SdxlModel {
    static A: OnceLock<SdxlModel> = OnceLock::new();
    static B: OnceLock<SdxlModel> = OnceLock::new();
    let cell = if name == common::MODEL_A { &A } else { &B };
    cell.get_or_init(|| SdxlModel::load(&common::checkpoint(name), &LoadOptions::default()).unwrap())
}

/// Each check runs on both fixture models.
macro_rules! on_both_models {
    ($check:ident) => {
        mod $check {
            #[test]
            fn model_a() {
                super::$check(crate::common::MODEL_A)
            }
            #[test]
            fn model_b() {
                super::$check(crate::common::MODEL_B)
            }
        }
    };
}

fn assert_rel(name: &str, got: &Tensor, expected: &Tensor, tol: f64) {
    assert_eq!(got.dims(), expected.dims(), "{name}: shape");
    let r = common::rel_l2(&common::to_vec(got), &common::to_vec(expected));
    assert!(r <= tol, "{name}: relative L2 error {r:e} > {tol:e}");
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|v| v as u32).collect()
}

on_both_models!(text_conditioning_and_pooled_match);
fn text_conditioning_and_pooled_match(name: &str) {
    let refs = common::model_reference(name, "text_conditioning.safetensors");
    let m = model(name);
    for p in ["prompt0", "prompt1", "prompt2"] {
        let l = ids(&refs[&format!("{p}.clip_l_ids")]);
        let g = ids(&refs[&format!("{p}.clip_g_ids")]);
        let hl = m.clip_l.encode(&[l], 2, false, &Device::Cpu).unwrap();
        let hg = m.clip_g.encode(&[g], 2, true, &Device::Cpu).unwrap();
        assert_rel(&format!("{p} clip_l"), &hl.hidden, &refs[&format!("{p}.clip_l_penultimate")], 1e-4);
        assert_rel(&format!("{p} clip_g"), &hg.hidden, &refs[&format!("{p}.clip_g_penultimate")], 1e-4);
        assert_rel(&format!("{p} pooled"), hg.pooled.as_ref().unwrap(), &refs[&format!("{p}.pooled")], 1e-4);
        let pooled = hg.pooled.unwrap();
        assert_rel(&format!("{p} y 128"), &m.adm(&pooled, SizeIds::plain(128, 128)).unwrap(), &refs[&format!("{p}.y_128x128")], 1e-5);
        assert_rel(&format!("{p} y 192x128"), &m.adm(&pooled, SizeIds::plain(192, 128)).unwrap(), &refs[&format!("{p}.y_w192_h128")], 1e-5);
    }
}

on_both_models!(prompt_text_gives_the_reference_context);
fn prompt_text_gives_the_reference_context(name: &str) {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture_dir(name).join("reference/cases.json")).unwrap()).unwrap();
    let m = model(name);
    let c = m.encode_prompt(cases["cases"][0]["prompt"].as_str().unwrap(), 2).unwrap();
    let t2i = common::model_reference(name, "t2i_euler_karras.safetensors");
    assert_rel("context", &c.context, &t2i["cond.context"], 1e-4);
    assert_rel("pooled", &c.pooled, &t2i["cond.pooled"], 1e-4);
}

on_both_models!(unet_eps_and_intermediates_match);
fn unet_eps_and_intermediates_match(name: &str) {
    let r = common::model_reference(name, "unet_eps.safetensors");
    let m = model(name);
    let t = r["timestep"].to_vec1::<i64>().unwrap()[0] as f32;
    let mut trace = UNetTrace::default();
    let eps = m.unet.forward_traced(&r["x_in"], &[t], &r["context"], &r["y"], Some(&mut trace)).unwrap();
    assert_rel("emb", trace.emb.as_ref().unwrap(), &r["intermediate.emb"], 1e-4);
    for (i, d) in trace.down.iter().enumerate() {
        assert_rel(&format!("down {i}"), d, &r[&format!("intermediate.down_blocks.{i}")], 1e-4);
    }
    assert_rel("mid", trace.mid.as_ref().unwrap(), &r["intermediate.mid_block"], 1e-4);
    for (i, u) in trace.up.iter().enumerate() {
        assert_rel(&format!("up {i}"), u, &r[&format!("intermediate.up_blocks.{i}")], 1e-4);
    }
    assert_eq!(trace.down.len(), 3);
    assert_eq!(trace.up.len(), 3);
    assert_rel("eps", &eps, &r["eps"], 1e-3);
}

on_both_models!(vae_decode_matches);
fn vae_decode_matches(name: &str) {
    let r = common::model_reference(name, "vae_decode.safetensors");
    let decoded = model(name).vae.decode(&r["latent"]).unwrap();
    assert_rel("decoded_raw", &decoded, &r["decoded_raw"], 1e-3);
}

#[test]
fn tiled_vae_blends_overlapping_tiles() {
    use focal_engine::vae::Tiling;
    let m = model(common::MODEL_A);
    let r = common::reference("vae_decode.safetensors");
    let latent = &r["latent"]; // 16x24 latent
                               // One tile covering everything is exactly the plain decode.
    let whole = m.vae.decode_tiled(latent, Tiling { tile: 32, overlap: 8 }).unwrap();
    assert_rel("single tile", &whole, &r["decoded_raw"], 1e-3);
    // Real tiling: the right size, finite, and close to the plain decode away from the seams.
    let tiled = m.vae.decode_tiled(latent, Tiling { tile: 12, overlap: 4 }).unwrap();
    assert_eq!(tiled.dims(), r["decoded_raw"].dims());
    let v = common::to_vec(&tiled);
    assert!(v.iter().all(|x| x.is_finite()));
    // Top-left corner: covered by one tile only, but that tile sees less context than the full
    // image, so it matches only approximately (GroupNorm statistics and attention are global).
    let corner = |t: &Tensor| t.narrow(2, 0, 32).unwrap().narrow(3, 0, 32).unwrap();
    let rel = common::rel_l2(&common::to_vec(&corner(&tiled)), &common::to_vec(&corner(&r["decoded_raw"])));
    assert!(rel < 0.5, "corner relative L2 {rel}");
    let img = (r["decoded_raw"].clone() * 0.5).unwrap().clamp(-1f32, 1f32).unwrap();
    let enc = m.vae.encode_tiled(&img, Tiling { tile: 8, overlap: 2 }).unwrap();
    assert_eq!(enc.dims(), &[1, 4, 16, 24]);
}

#[test]
fn long_prompts_are_encoded_in_77_token_chunks() {
    let m = model(common::MODEL_A);
    let long = "a very detailed painting of a lighthouse on a cliff above a stormy sea ".repeat(8);
    let c = m.encode_prompt(&long, 2).unwrap();
    assert_eq!(c.context.dims(), &[1, 77 * 2, 128]);
    // The first chunk is the first 75 tokens encoded on their own.
    let ids = m.tokenizer.encode(&long);
    let first = m.encode_tokens(&ids[..75], 2).unwrap();
    assert_rel("first chunk", &c.context.narrow(1, 0, 77).unwrap(), &first.context, 1e-6);
    assert_rel("pooled from the first chunk", &c.pooled, &first.pooled, 1e-6);
}

#[test]
fn half_precision_compute_stays_close_to_f32() {
    let r = common::reference("unet_eps.safetensors");
    let bf16 = LoadOptions { dtype: DType::BF16, ..Default::default() };
    let err = SdxlModel::load(&common::checkpoint(common::MODEL_A), &bf16).err().unwrap().to_string();
    assert!(err.contains("bf16"), "{err}");
    let dtype = DType::F16;
    let m = SdxlModel::load(&common::checkpoint(common::MODEL_A), &LoadOptions { dtype, ..Default::default() }).unwrap();
    let t = r["timestep"].to_vec1::<i64>().unwrap()[0] as f32;
    let x = r["x_in"].to_dtype(dtype).unwrap();
    let eps = m.unet.forward(&x, &[t], &r["context"], &r["y"]).unwrap();
    assert_eq!(eps.dtype(), dtype);
    let err = common::rel_l2(&common::to_vec(&eps), &common::to_vec(&r["eps"]));
    // f16 keeps 11 mantissa bits: errors of a few per mille.
    assert!(err < 0.02, "{dtype:?}: relative L2 {err}");
}

#[test]
fn the_vae_keeps_its_own_precision_beside_a_half_precision_unet() {
    let path = common::checkpoint(common::MODEL_A);
    let load = |dtype, vae_dtype| SdxlModel::load(&path, &LoadOptions { dtype, vae_dtype, ..Default::default() }).unwrap();
    let (f32_model, f16_unet) = (load(DType::F32, None), load(DType::F16, None));
    // On the CPU the VAE stays in f32 unless asked (SDXL's VAE overflows f16).
    assert_eq!((f16_unet.dtype, f16_unet.vae.dtype), (DType::F16, DType::F32));
    let latent = Tensor::randn(0f32, 1f32, (1, 4, 8, 8), &Device::Cpu).unwrap();
    let reference = f32_model.decode_latent(&latent).unwrap();
    // The same f32 decode whatever the latent's dtype on the way in.
    assert_eq!(f16_unet.decode_latent(&latent).unwrap().data, reference.data);
    // Asked for by name, it computes in f16: close to f32, not the same.
    let f16_vae = load(DType::F16, Some(DType::F16));
    assert_eq!(f16_vae.vae.dtype, DType::F16);
    let half = f16_vae.decode_latent(&latent).unwrap();
    let worst = half.data.iter().zip(&reference.data).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    assert!(worst <= 3, "f16 VAE: worst pixel {worst}/255");
    assert_ne!(half.data, reference.data, "an f16 VAE that rounds like f32 did not run in f16");
    // bf16 has no CPU matrix product: refused, naming the option.
    let err = SdxlModel::load(&path, &LoadOptions { vae_dtype: Some(DType::BF16), ..Default::default() }).err().unwrap().to_string();
    assert!(err.contains("vae_dtype"), "{err}");
}
