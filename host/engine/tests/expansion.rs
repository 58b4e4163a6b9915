//! GPT-2 and the Fooocus V2 expansion against transformers/torch on the tiny random GPT-2
//! (`tests/fixtures/tiny-gpt2`): the fixture's own greedy references (`reference.json`,
//! `reference_logits.safetensors`, from `make_tiny_sdxl.py --gpt2`) and `expansion_refs.json`
//! (`make_expansion_refs.py`: tokenizer, `torch.multinomial`, seeded expansions with torch 2.1.0
//! and transformers 4.42.4).
mod common;

use std::path::PathBuf;

use candle_core::{DType, Device};
use focal_engine::expansion::PromptExpansion;
use focal_engine::gpt2::{Gpt2Config, Gpt2Model};
use focal_engine::gpt2_tokenizer::Gpt2Tokenizer;
use focal_engine::rng::TorchRng;
use serde_json::Value;

fn dir() -> PathBuf {
    common::fixture_dir("tiny-gpt2")
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join(name)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn tokenizer() -> Gpt2Tokenizer {
    Gpt2Tokenizer::from_dir(&dir()).unwrap()
}

fn model(file: &str) -> Gpt2Model {
    let config = Gpt2Config::from_json(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap();
    Gpt2Model::load(&dir().join(file), config, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn tokenizer_matches_transformers() {
    let tok = tokenizer();
    for case in json("expansion_refs.json")["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text);
        assert_eq!(got, ids(&case["ids"]), "{text:?}");
        assert_eq!(tok.decode(&got), case["decoded"].as_str().unwrap(), "{text:?}");
    }
}

/// Greedy decoding and the logits themselves, from both weight files (safetensors, and the
/// transformers pickle with its tied `lm_head` and mask buffers).
#[test]
fn greedy_and_logits_match_transformers() {
    let refs = candle_core::safetensors::load(dir().join("reference_logits.safetensors"), &Device::Cpu).unwrap();
    for file in ["model.safetensors", "pytorch_model.bin"] {
        let m = model(file);
        for (i, case) in json("reference.json")["cases"].as_array().unwrap().iter().enumerate() {
            let prompt = ids(&case["input_ids"]);
            assert_eq!(m.greedy(&prompt, 20).unwrap(), ids(&case["new_ids"]), "{file}: {}", case["prompt"]);
            let logits = m.next_logits(&prompt, &mut Default::default()).unwrap();
            let want = common::to_vec(&refs[&format!("prompt{i}.last_logits")]);
            let worst = logits.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "{file}: prompt {i}: max |Δlogit| {worst}");
        }
    }
}

/// `torch.manual_seed(s); torch.multinomial(p, 1)` five times in a row.
#[test]
fn multinomial_matches_torch() {
    for case in json("expansion_refs.json")["multinomial"].as_array().unwrap() {
        let seed = case["seed"].as_u64().unwrap();
        let logits: Vec<f32> = (0..50257).map(|i| (3.0 * (0.37 * i as f64 + (seed % 7) as f64).sin()) as f32).collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        let probs: Vec<f32> = exp.iter().map(|e| e / sum).collect();
        let mut rng = TorchRng::new(seed);
        let picks: Vec<u32> = (0..5).map(|_| rng.multinomial_one(&probs)).collect();
        assert_eq!(picks, ids(&case["picks"]), "seed {seed}");
    }
}

fn words() -> Vec<String> {
    std::fs::read_to_string(dir().join("test_words.txt")).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn seeded_expansion_matches_fooocus_algorithm_in_transformers() {
    let expansion = PromptExpansion::new(model("model.safetensors"), tokenizer(), &words());
    // Every listed word is one token except the deliberate misfit.
    assert_eq!(expansion.allowed_words(), words().len() - 1);
    for case in json("expansion_refs.json")["expansion"].as_array().unwrap() {
        let (prompt, seed) = (case["prompt"].as_str().unwrap(), case["seed"].as_u64().unwrap());
        assert_eq!(expansion.expand(prompt, seed).unwrap(), case["expansion"].as_str().unwrap(), "{prompt:?} seed {seed}");
    }
}

/// The models-folder layout: a folder without `positive.txt` or weights is refused naming them;
/// a complete one (the pickle as Fooocus saves it) expands like the in-memory setup.
#[test]
fn expansion_folder_is_checked_and_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "vocab.json", "merges.txt"] {
        std::fs::copy(dir().join(f), tmp.path().join(f)).unwrap();
    }
    let err = PromptExpansion::load_dir(tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("positive.txt") && err.contains("pytorch_model.bin"), "{err}");
    std::fs::copy(dir().join("test_words.txt"), tmp.path().join("positive.txt")).unwrap();
    std::fs::copy(dir().join("pytorch_model.bin"), tmp.path().join("pytorch_model.bin")).unwrap();
    let expansion = PromptExpansion::load_dir(tmp.path(), &Device::Cpu).unwrap();
    let case = &json("expansion_refs.json")["expansion"][1];
    assert_eq!(
        expansion.expand(case["prompt"].as_str().unwrap(), case["seed"].as_u64().unwrap()).unwrap(),
        case["expansion"].as_str().unwrap()
    );
}
