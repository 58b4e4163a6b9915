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
    let want = refs["expansion"].as_array().unwrap().iter().find(|c| c["prompt"] == "a lighthouse" && c["seed"] == 3).unwrap()["expansion"]
        .clone();

    let meta = metadata(&addr, "a lighthouse", r#"["Fooocus V2", "Fooocus Sharp"]"#);
    assert_eq!(meta["styles"], "['Fooocus V2', 'Fooocus Sharp']");
    assert_eq!(meta["prompt_expansion"], want);
    let full = meta["full_prompt"].as_array().unwrap();
    assert_eq!(full.len(), 2);
    assert!(full[0].as_str().unwrap().starts_with("cinematic still a lighthouse"), "{meta}");
    assert_eq!(full[1], want, "the expansion is the last positive workload");
}

/// A PNG's tEXt chunk `key`.
fn png_text(png: &[u8], key: &str) -> Option<String> {
    let mut i = 8;
    while i + 8 <= png.len() {
        let n = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
        let (kind, body) = (&png[i + 4..i + 8], &png[i + 8..i + 8 + n]);
        if kind == b"tEXt" {
            let split = body.iter().position(|&b| b == 0)?;
            if &body[..split] == key.as_bytes() {
                return Some(body[split + 1..].iter().map(|&b| b as char).collect());
            }
        }
        i += 12 + n;
    }
    None
}

/// The metadata focal writes equals what the real Fooocus-API wrote for the same requests on the same
/// checkpoint (`tests/fixtures/oracle/oracle_metadata.json`, from `make_oracle_metadata.py` against the
/// seed): styles with Random Style drawn per image, wildcards, arrays, extra lines, an unknown style and a
/// missing LoRA tag dropped, FreeU, both schemes. Only the version differs.
#[test]
fn metadata_equals_the_real_fooocus_api() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/checkpoints")).unwrap();
    std::fs::copy(common::fixtures().join("tiny-sdxl-a.safetensors"), dir.path().join("models/checkpoints/tiny-sdxl-a.safetensors"))
        .unwrap();
    let server = common::serve_in(dir.path(), &["--base-model".as_ref(), "tiny-sdxl-a.safetensors".as_ref()]);
    let oracle: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle/oracle_metadata.json"))
            .unwrap(),
    )
    .unwrap();
    let version = format!("focal v{}", env!("CARGO_PKG_VERSION"));
    for (req, want) in oracle["requests"].as_array().unwrap().iter().zip(oracle["parameters"].as_array().unwrap()) {
        let mut body = req.clone();
        body["require_base64"] = true.into();
        let (status, raw) = common::request(&server.addr, "POST", "/v1/generation/text-to-image", "", &body.to_string());
        let images = common::json(&raw);
        assert_eq!(status, 200, "{images}");
        let images = images.as_array().unwrap();
        assert_eq!(images.len(), want.as_array().unwrap().len());
        for (image, want) in images.iter().zip(want.as_array().unwrap()) {
            let b64 = image["base64"].as_str().unwrap();
            let png = common::b64decode(b64.split_once(";base64,").map_or(b64, |(_, d)| d));
            let got = png_text(&png, "parameters").expect("parameters chunk");
            let want = want.as_str().unwrap().replace("Fooocus v2.5.3", &version);
            if req["meta_scheme"] == "fooocus" {
                let (got, want): (serde_json::Value, serde_json::Value) =
                    (serde_json::from_str(&got).unwrap(), serde_json::from_str(&want).unwrap());
                for key in want.as_object().unwrap().keys().chain(got.as_object().unwrap().keys()) {
                    assert_eq!(got.get(key), want.get(key), "metadata key {key:?} for {}", req["prompt"]);
                }
            }
            // The exact text too: Python's json.dumps spacing, sorted keys, a1111's quoting.
            assert_eq!(got, want, "{} text for {}", req["meta_scheme"], req["prompt"]);
        }
    }
}

/// `embedding:NAME` reads `models/embeddings/NAME.safetensors` (an SDXL `clip_l`/`clip_g` pair), also
/// when the file arrives while the server runs; before that the word is dropped, as ComfyUI does.
#[test]
fn textual_inversion_embeddings_from_the_models_folder() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    let body = |prompt: &str| {
        format!(
            r#"{{"prompt": "{prompt}", "image_seed": 3, "aspect_ratios_selection": "64*64", "require_base64": true,
                "advanced_params": {{"sampler_name": "euler", "overwrite_step": 1}}}}"#
        )
    };
    let plain = common::pixels(&common::first_image(&server.addr, &body("a fox in snow")));
    let missing = common::pixels(&common::first_image(&server.addr, &body("a fox embedding:sdxl_ti in snow")));
    assert_eq!(missing, plain, "a missing embedding is dropped from the prompt");
    std::fs::create_dir_all(dir.path().join("models/embeddings")).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prompts/embeddings/sdxl_ti.safetensors");
    std::fs::copy(fixture, dir.path().join("models/embeddings/sdxl_ti.safetensors")).unwrap();
    let with = common::pixels(&common::first_image(&server.addr, &body("a fox embedding:sdxl_ti in snow")));
    assert_ne!(with, plain, "the embedding's vectors condition the image");
}
