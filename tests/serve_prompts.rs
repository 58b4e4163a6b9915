//! Black-box: the prompt pipeline of a running server. `/v1/engines/styles` lists what the
//! loaded style steps offer; a style pack dropped into the plugins folder adds styles, or
//! replaces Fooocus's when it takes its name, without rebuilding or restarting focal; the
//! operator's wildcards folder feeds `__name__`; the metadata shows what was applied.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::get;

fn built(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(focal_runtime::BUILT_PLUGINS_DIR).join(format!("{name}.wasm"))).unwrap()
}

fn styles(addr: &str) -> Vec<String> {
    let (status, body) = get(addr, "/v1/engines/styles");
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

fn wait_styles(addr: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let t = Instant::now();
    loop {
        let s = styles(addr);
        if done(&s) {
            return s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "styles never changed: {s:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The PNG's `parameters` metadata (fooocus scheme) of one generated image.
fn metadata(addr: &str, prompt: &str, styles: &str) -> serde_json::Value {
    let body = format!(
        r#"{{"prompt": "{prompt}", "style_selections": {styles}, "image_seed": 3, "aspect_ratios_selection": "64*64",
            "require_base64": true, "save_meta": true, "advanced_params": {{"sampler_name": "euler", "overwrite_step": 1}}}}"#
    );
    let png = common::first_image(addr, &body);
    let text = String::from_utf8_lossy(&png);
    let start = text.find("{\"adm_guidance\"").expect("fooocus metadata");
    // The JSON ends where the chunk's CRC starts: read exactly one value.
    serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>().next().unwrap().unwrap()
}

#[test]
fn style_packs_and_wildcards_without_rebuilding() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/wildcards")).unwrap();
    std::fs::write(dir.path().join("models/wildcards/pet.txt"), "corgi\n").unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    let addr = server.addr.clone();
    let plugins = dir.path().join("data/plugins");

    // Built in: "Fooocus V2", "Random Style" and Fooocus's 277 styles, in Fooocus's order.
    let builtin = styles(&addr);
    assert_eq!(builtin.len(), 279);
    assert_eq!(builtin[..4], ["Fooocus V2", "Random Style", "Fooocus Enhance", "Fooocus Semi Realistic"]);

    // Applied styles and the operator's wildcard in the metadata; unknown names dropped.
    let meta = metadata(&addr, "a __pet__", r#"["Fooocus Sharp", "No Such Style"]"#);
    assert_eq!(meta["styles"], "['Fooocus Sharp']");
    assert_eq!(meta["prompt"], "a corgi");
    assert!(meta["full_prompt"][0].as_str().unwrap().starts_with("cinematic still a corgi . emotional"), "{meta}");

    // Add the example pack next to Fooocus's.
    std::fs::write(plugins.join("example_styles.toml"), include_str!("../plugins/example-styles/plugin.toml")).unwrap();
    std::fs::write(plugins.join("example_styles.wasm"), built("example_styles")).unwrap();
    let added = wait_styles(&addr, |s| s.len() == 282);
    assert_eq!(added[279..], ["Focal Blueprint", "Focal Watercolor", "Focal Plain"]);
    let meta = metadata(&addr, "a lighthouse", r#"["Focal Watercolor", "Fooocus Enhance"]"#);
    assert_eq!(meta["styles"], "['Fooocus Enhance', 'Focal Watercolor']", "applied in pipeline order");
    assert_eq!(meta["full_prompt"][0], "loose watercolor painting of a lighthouse, soft washes, visible paper grain");

    // Swap: the same component under the built-in step's name replaces Fooocus's styles.
    std::fs::remove_file(plugins.join("example_styles.wasm")).unwrap();
    std::fs::remove_file(plugins.join("example_styles.toml")).unwrap();
    let manifest = include_str!("../plugins/example-styles/plugin.toml").replace("name = \"example_styles\"", "name = \"fooocus_styles\"");
    std::fs::write(plugins.join("fooocus_styles.toml"), manifest).unwrap();
    std::fs::write(plugins.join("fooocus_styles.wasm"), built("example_styles")).unwrap();
    let swapped = wait_styles(&addr, |s| s.len() == 4);
    assert_eq!(swapped, ["Fooocus V2", "Focal Blueprint", "Focal Watercolor", "Focal Plain"]);
    let meta = metadata(&addr, "a lighthouse", r#"["Fooocus Sharp", "Focal Blueprint"]"#);
    assert_eq!(meta["styles"], "['Focal Blueprint']", "Fooocus Sharp is gone with the built-in pack");
    assert!(meta["full_prompt"][0].as_str().unwrap().starts_with("technical blueprint of a lighthouse"));
}

/// "Fooocus V2": skipped with a warning while the expansion model is missing (the job still
/// succeeds), then, once the files are in the models folder (no restart), the host's GPT-2
/// expands the prompt exactly as transformers did for the same seed
/// (`tests/fixtures/tiny-gpt2/expansion_refs.json`), as the last positive workload.
#[test]
fn fooocus_v2_expansion_from_the_models_folder() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    let addr = server.addr.clone();

    let meta = metadata(&addr, "a lighthouse", r#"["Fooocus V2", "Fooocus Sharp"]"#);
    assert_eq!(meta["styles"], "['Fooocus Sharp']", "no model: V2 not applied");
    assert_eq!(meta["prompt_expansion"], "");
    assert_eq!(meta["full_prompt"].as_array().unwrap().len(), 1);

    let gpt2 = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gpt2");
    let target = dir.path().join("models/prompt_expansion/fooocus_expansion");
    std::fs::create_dir_all(&target).unwrap();
    for f in ["config.json", "vocab.json", "merges.txt", "pytorch_model.bin"] {
        std::fs::copy(gpt2.join(f), target.join(f)).unwrap();
    }
    std::fs::copy(gpt2.join("test_words.txt"), target.join("positive.txt")).unwrap();
    let refs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(gpt2.join("expansion_refs.json")).unwrap()).unwrap();
    let want = refs["expansion"].as_array().unwrap().iter().find(|c| c["prompt"] == "a lighthouse" && c["seed"] == 3).unwrap()["expansion"].clone();

    let meta = metadata(&addr, "a lighthouse", r#"["Fooocus V2", "Fooocus Sharp"]"#);
    assert_eq!(meta["styles"], "['Fooocus V2', 'Fooocus Sharp']");
    assert_eq!(meta["prompt_expansion"], want);
    let full = meta["full_prompt"].as_array().unwrap();
    assert_eq!(full.len(), 2);
    assert!(full[0].as_str().unwrap().starts_with("cinematic still a lighthouse"), "{meta}");
    assert_eq!(full[1], want, "the expansion is the last positive workload");
}
