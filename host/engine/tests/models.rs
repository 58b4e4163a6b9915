//! Parity of each model stage with the PyTorch reference tensors of the tiny SDXL fixture.
mod common;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use focal_engine::sdxl::{LoadOptions, SdxlModel, SizeIds};
use focal_engine::unet::UNetTrace;

fn model() -> &'static SdxlModel {
    static M: OnceLock<SdxlModel> = OnceLock::new();
    M.get_or_init(|| SdxlModel::load(&common::fixtures().join("tiny-sdxl-a.safetensors"), &LoadOptions::default()).unwrap())
}

fn assert_rel(name: &str, got: &Tensor, expected: &Tensor, tol: f64) {
    assert_eq!(got.dims(), expected.dims(), "{name}: shape");
    let r = common::rel_l2(&common::to_vec(got), &common::to_vec(expected));
    assert!(r <= tol, "{name}: relative L2 error {r:e} > {tol:e}");
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|v| v as u32).collect()
}

#[test]
fn text_conditioning_and_pooled_match() {
    let refs = common::reference("text_conditioning.safetensors");
    let m = model();
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

#[test]
fn prompt_text_gives_the_reference_context() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixtures().join("reference/cases.json")).unwrap()).unwrap();
    let m = model();
    let c = m.encode_prompt(cases["cases"][0]["prompt"].as_str().unwrap(), 2).unwrap();
    let t2i = common::reference("t2i_euler_karras.safetensors");
    assert_rel("context", &c.context, &t2i["cond.context"], 1e-4);
    assert_rel("pooled", &c.pooled, &t2i["cond.pooled"], 1e-4);
}

#[test]
fn unet_eps_and_intermediates_match() {
    let r = common::reference("unet_eps.safetensors");
    let m = model();
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

#[test]
fn vae_decode_matches() {
    let r = common::reference("vae_decode.safetensors");
    let decoded = model().vae.decode(&r["latent"]).unwrap();
    assert_rel("decoded_raw", &decoded, &r["decoded_raw"], 1e-3);
}
