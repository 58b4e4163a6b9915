//! The built-in prompt steps (`fooocus_prompt`, `fooocus_styles`, run as WASM components through
//! the real pipeline) against expectations computed with Fooocus 2.5.5's own functions
//! (`tests/fixtures/prompts/make_prompt_expectations.py`): workloads, log prompts, applied
//! styles (Random Style drawn from the image's Python generator), LoRA tags, wildcards (seeded,
//! in order, nested 10 deep, self-recursive, missing, empty), arrays.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use focal_runtime::prompts::{self, PromptInput};
use focal_runtime::services::Services;
use focal_runtime::{HostOptions, Plugin, PluginHost, PluginManifest};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn step(host: &PluginHost, crate_dir: &str, file: &str) -> Arc<Plugin> {
    let toml = std::fs::read_to_string(root().join("plugins").join(crate_dir).join("plugin.toml")).unwrap();
    let manifest = PluginManifest::parse(&toml, Path::new(crate_dir)).unwrap();
    let wasm = std::fs::read(Path::new(focal_runtime::BUILT_PLUGINS_DIR).join(format!("{file}.wasm"))).unwrap();
    Arc::new(host.load(manifest, &wasm).unwrap())
}

fn host() -> PluginHost {
    let wildcards = root().join("tests/fixtures/prompts/wildcards");
    PluginHost::new(HostOptions { wildcards_dir: Some(wildcards), ..Default::default() }, Services::default()).unwrap()
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/prompts/expected.json")).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fooocus_prompt_and_styles_steps_match_fooocus() {
    let host = host();
    let steps = vec![step(&host, "fooocus-prompt", "fooocus_prompt"), step(&host, "fooocus-styles", "fooocus_styles")];
    let expected = expected();
    assert_eq!(
        host.prompt_styles(&steps[1]).await.unwrap(),
        strings(&expected["style_names"]),
        "Random Style + the 277 styles, in Fooocus's order"
    );
    let mut checked = 0;
    for case in expected["cases"].as_array().unwrap() {
        for (i, want) in case["images"].as_array().unwrap().iter().enumerate() {
            let input = PromptInput {
                index: i as u32,
                seed: want["seed"].as_u64().unwrap(),
                prompt: case["prompt"].as_str().unwrap().into(),
                negative_prompt: case["negative_prompt"].as_str().unwrap().into(),
                styles: strings(&case["styles"]),
                read_wildcards_in_order: case["read_wildcards_in_order"].as_bool().unwrap(),
            };
            let what = format!("{:?} image {i}", case["prompt"]);
            let got = prompts::run(&host, &steps, input).await.unwrap();
            assert_eq!(got.positive, strings(&want["positive"]), "{what}: positive");
            assert_eq!(got.negative, strings(&want["negative"]), "{what}: negative");
            assert_eq!(got.positive_pooled, got.positive.len(), "{what}: every workload pooled without expansion");
            assert_eq!(got.log_prompt, want["log_prompt"].as_str().unwrap(), "{what}: prompt");
            assert_eq!(got.log_negative_prompt, want["log_negative_prompt"].as_str().unwrap(), "{what}: negative prompt");
            assert_eq!(got.styles, strings(&want["styles"]), "{what}: styles");
            let loras: Vec<(String, f32)> =
                want["loras"].as_array().unwrap().iter().map(|l| (l[0].as_str().unwrap().into(), l[1].as_f64().unwrap() as f32)).collect();
            assert_eq!(got.loras, loras, "{what}: LoRA tags");
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} images checked");
}

/// Seeded wildcards: the same seed repeats its pick, and over many seeds every line of a list
/// is drawn (17 colours, 200 seeds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_are_deterministic_per_seed_and_cover_the_list() {
    let host = host();
    let steps = vec![step(&host, "fooocus-prompt", "fooocus_prompt")];
    let colors: Vec<&str> = include_str!("../../../plugins/fooocus-prompt/wildcards/color.txt").lines().filter(|l| !l.is_empty()).collect();
    let run = |seed: u64| {
        let input = PromptInput {
            index: 0,
            seed,
            prompt: "__color__".into(),
            negative_prompt: String::new(),
            styles: vec![],
            read_wildcards_in_order: false,
        };
        prompts::run(&host, &steps, input)
    };
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let a = run(seed).await.unwrap().prompt;
        assert_eq!(a, run(seed).await.unwrap().prompt, "seed {seed} repeats");
        assert!(colors.contains(&a.as_str()), "{a} comes from color.txt");
        seen.insert(a);
    }
    assert_eq!(seen.len(), colors.len(), "200 seeds draw every colour");
}

/// A step that fails names itself; the pipeline does not go on with a half-made prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_not_prompt_steps() {
    let host = host();
    let hello = Arc::new(
        host.load(
            PluginManifest::default_for("hello"),
            &std::fs::read(Path::new(focal_runtime::BUILT_PLUGINS_DIR).join("hello.wasm")).unwrap(),
        )
        .unwrap(),
    );
    assert!(!hello.is_prompt_step());
    let input = PromptInput {
        index: 0,
        seed: 1,
        prompt: "x".into(),
        negative_prompt: String::new(),
        styles: vec![],
        read_wildcards_in_order: false,
    };
    let err = prompts::run(&host, &[hello], input).await.unwrap_err();
    assert!(err.contains("prompt step 'hello'"), "{err}");
}
