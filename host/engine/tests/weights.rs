//! Weighted prompts against `tests/fixtures/prompts/weighted.safetensors`, computed with
//! ComfyUI's tokenizer (`tokenize_with_weights`, `token_weights`) and Fooocus's
//! `patched_encode_token_weights` on the tiny SDXL's text encoders in transformers
//! (`tests/fixtures/prompts/make_weighted_refs.py`): token ids and weights per window, then the
//! conditioning (context and pooled); textual-inversion embeddings (SDXL pairs, a single-tensor
//! file, a width that fits no encoder, a missing name, trailing commas) included.
mod common;

use candle_core::Device;
use focal_engine::clip::VECTOR_ID_BASE;
use focal_engine::tokenizer::{parse_weights, EOS};
use focal_engine::{LoadOptions, SdxlModel};

#[test]
fn weighted_prompts_match_comfyui_and_fooocus() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/prompts/weighted.safetensors");
    let refs = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let prompts: Vec<String> = serde_json::from_str(&meta.metadata().as_ref().unwrap()["prompts"]).unwrap();
    let embeddings = path.parent().unwrap().join("embeddings");
    let options = LoadOptions { embeddings_dir: Some(embeddings), ..Default::default() };
    let model = SdxlModel::load(&common::checkpoint(common::MODEL_A), &options).unwrap();
    for (i, prompt) in prompts.iter().enumerate() {
        // -1 marks a textual-inversion vector.
        let ids = |key: &str| -> Vec<Vec<i64>> { refs[&format!("{i}/{key}")].to_vec2::<i64>().unwrap() };
        let marked = |windows: &[(Vec<u32>, Vec<f32>)]| -> Vec<Vec<i64>> {
            windows.iter().map(|(ids, _)| ids.iter().map(|&id| if id >= VECTOR_ID_BASE { -1 } else { id as i64 }).collect()).collect()
        };
        let (windows, _) = model.windows(prompt, EOS, "clip_l", model.clip_l.width);
        assert_eq!(marked(&windows), ids("ids_l"), "{prompt:?}: clip_l windows");
        let (windows_g, _) = model.windows(prompt, 0, "clip_g", model.clip_g.width);
        assert_eq!(marked(&windows_g), ids("ids_g"), "{prompt:?}: clip_g windows");
        let want_w = refs[&format!("{i}/weights")].to_vec2::<f32>().unwrap();
        let got_w: Vec<Vec<f32>> = windows.iter().map(|(_, w)| w.clone()).collect();
        assert_eq!(got_w, want_w, "{prompt:?}: weights");

        let c = model.encode_prompt(prompt, 2).unwrap();
        let ctx = common::rel_l2(&common::to_vec(&c.context), &common::to_vec(&refs[&format!("{i}/context")]));
        let pooled = common::rel_l2(&common::to_vec(&c.pooled), &common::to_vec(&refs[&format!("{i}/pooled")]));
        assert!(ctx < 1e-5 && pooled < 1e-5, "{prompt:?}: context {ctx}, pooled {pooled}");
    }
}

/// The parser alone, against ComfyUI's `token_weights` worked by hand.
#[test]
fn weight_syntax_follows_comfyui() {
    let w = |s: &str| parse_weights(s).into_iter().map(|(t, w)| (t, (w * 1000.0).round() / 1000.0)).collect::<Vec<_>>();
    assert_eq!(w("a (b:1.5) c"), [("a ".into(), 1.0), ("b".into(), 1.5), (" c".into(), 1.0)]);
    assert_eq!(w("((x))"), [("x".to_string(), 1.21)]);
    assert_eq!(w("(x:bad)"), [("x:bad".to_string(), 1.1)]);
    assert_eq!(w("\\(x\\) [y]"), [("(x) [y]".to_string(), 1.0)]);
    assert_eq!(w("((a:0.5) b)"), [("a".into(), 0.5), (" b".into(), 1.1)]);
}
