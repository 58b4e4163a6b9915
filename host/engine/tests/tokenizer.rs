mod common;
use focal_engine::tokenizer::{ClipTokenizer, EOS};

#[test]
fn token_ids_equal_the_reference_for_every_prompt() {
    let text = std::fs::read_to_string(common::fixtures().join("reference/tokens.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 20);
    let tok = ClipTokenizer::bundled();
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let ids = |k: &str| -> Vec<u32> { case[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect() };
        // The reference truncates long prompts to the first chunk.
        assert_eq!(tok.chunks(prompt, EOS)[0], ids("clip_l"), "clip_l ids of {prompt:?}");
        assert_eq!(tok.chunks(prompt, 0)[0], ids("clip_g"), "clip_g ids of {prompt:?}");
    }
}

#[test]
fn long_prompts_are_split_into_77_token_chunks() {
    let tok = ClipTokenizer::bundled();
    let prompt = "red ".repeat(100);
    let chunks = tok.chunks(&prompt, EOS);
    assert_eq!(chunks.len(), 2);
    assert!(chunks.iter().all(|c| c.len() == 77));
    assert_eq!(chunks[1].iter().filter(|&&t| t != EOS).count(), 1 + 25);
}
