//! Black-box: a preset's default model is downloaded on first use (as Fooocus does at launch),
//! and `focal models pull` fetches a URL into the models folder.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

/// Serve `data` to every GET (no Range support needed here).
fn file_server(data: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tiny.safetensors", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", data.len()).unwrap();
            stream.write_all(&data).unwrap();
        }
    });
    url
}

#[test]
fn a_presets_default_model_is_downloaded_on_first_use() {
    let ckpt = std::fs::read(common::fixtures().join("tiny-sdxl-a.safetensors")).unwrap();
    let url = file_server(ckpt.clone());
    let dir = tempfile::tempdir().unwrap();
    let preset = dir.path().join("tiny-preset.json");
    std::fs::write(
        &preset,
        format!(r#"{{"default_model": "fetched.safetensors", "checkpoint_downloads": {{"fetched.safetensors": "{url}"}}}}"#),
    )
    .unwrap();
    let models = dir.path().join("models");
    let server = common::serve_in(dir.path(), &["--preset".as_ref(), preset.as_os_str()]);
    let body =
        r#"{"prompt": "a fox", "aspect_ratios_selection": "64*64", "advanced_params": {"sampler_name": "euler", "overwrite_step": 2}}"#;
    let (status, raw) = common::request(&server.addr, "POST", "/v1/generation/text-to-image", "", body);
    let results = common::json(&raw);
    assert_eq!((status, results[0]["finish_reason"].as_str()), (200, Some("SUCCESS")), "{results}");
    assert_eq!(std::fs::read(models.join("checkpoints/fetched.safetensors")).unwrap(), ckpt);
    let (_, raw) = common::request(&server.addr, "GET", "/v1/engines/all-models", "", "");
    assert_eq!(common::json(&raw)["model_filenames"], serde_json::json!(["fetched.safetensors"]));
}

#[test]
fn a_presets_refiner_is_downloaded_on_first_use() {
    let refiner = std::fs::read(common::fixtures().join("../tiny-sdxl-refiner/tiny-sdxl-refiner.safetensors")).unwrap();
    let url = file_server(refiner.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/checkpoints")).unwrap();
    std::fs::copy(common::fixtures().join("tiny-sdxl-a.safetensors"), dir.path().join("models/checkpoints/tiny.safetensors")).unwrap();
    let preset = dir.path().join("tiny-sai.json");
    std::fs::write(
        &preset,
        format!(
            r#"{{"default_model": "tiny.safetensors", "default_refiner": "tiny-refiner.safetensors", "default_refiner_switch": 0.5,
                "checkpoint_downloads": {{"tiny-refiner.safetensors": "{url}"}}}}"#
        ),
    )
    .unwrap();
    let server = common::serve_in(dir.path(), &["--preset".as_ref(), preset.as_os_str()]);
    let body = r#"{"prompt": "a fox", "aspect_ratios_selection": "64*64", "save_meta": true, "require_base64": true,
                   "advanced_params": {"sampler_name": "euler", "overwrite_step": 4}}"#;
    let png = common::first_image(&server.addr, body);
    assert_eq!(std::fs::read(dir.path().join("models/checkpoints/tiny-refiner.safetensors")).unwrap(), refiner);
    assert!(String::from_utf8_lossy(&png).contains(r#""refiner_model": "tiny-refiner.safetensors""#), "the preset's refiner ran");
}

#[test]
fn models_pull_fetches_a_url_and_checks_its_sha256() {
    let url = file_server(b"model bytes".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let pull = |sha: &str| {
        Command::new(env!("CARGO_BIN_EXE_focal"))
            .args(["models", "pull", "--url", &url, "--to", "loras/x.safetensors", "--sha256", sha, "--models-dir"])
            .arg(&models)
            .output()
            .unwrap()
    };
    let bad = pull("00");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not match"), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(!models.join("loras/x.safetensors").exists());
    // python3 -c "import hashlib; print(hashlib.sha256(b'model bytes').hexdigest())"
    let good = pull("9cb7487000bc86ac36ce83c4acfabe8878552be99572a6770f65ab1d048a5c48");
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    assert_eq!(std::fs::read(models.join("loras/x.safetensors")).unwrap(), b"model bytes");
    assert!(models.join("checkpoints").is_dir() && models.join("prompt_expansion/fooocus_expansion").is_dir(), "Fooocus layout created");
    let list = Command::new(env!("CARGO_BIN_EXE_focal")).args(["models", "list", "--models-dir"]).arg(&models).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout), "loras/x.safetensors\n");
}

/// A kohya LoRA for the tiny model patching one UNet attention projection.
fn write_tiny_lora(path: &std::path::Path) {
    use candle_core::{DType, Device, Tensor};
    let ckpt = focal_engine::checkpoint::Checkpoint::open(&common::fixtures().join("tiny-sdxl-a.safetensors")).unwrap();
    let name = ckpt.names().into_iter().find(|n| n.starts_with("unet.") && n.ends_with("attn2.to_k.weight")).unwrap().to_string();
    let w = ckpt.tensor(&name, DType::F32, &Device::Cpu).unwrap();
    let (out, inp) = w.dims2().unwrap();
    let module = format!("lora_unet_{}", name.strip_prefix("unet.").unwrap().strip_suffix(".weight").unwrap().replace('.', "_"));
    let tensors = std::collections::HashMap::from([
        (format!("{module}.lora_down.weight"), Tensor::ones((4, inp), DType::F32, &Device::Cpu).unwrap()),
        (format!("{module}.lora_up.weight"), Tensor::ones((out, 4), DType::F32, &Device::Cpu).unwrap()),
    ]);
    candle_core::safetensors::save(&tensors, path).unwrap();
}

#[test]
fn request_loras_are_merged_and_named_in_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/loras")).unwrap();
    write_tiny_lora(&dir.path().join("models/loras/tiny-lora.safetensors"));
    let server = common::serve_tiny(dir.path(), &[]);
    let image_for = |prompt: &str, loras: &str| {
        let body = format!(
            r#"{{"prompt": "{prompt}", "image_seed": 5, "aspect_ratios_selection": "64*64", "require_base64": true, "loras": {loras},
                "save_meta": true, "advanced_params": {{"sampler_name": "euler", "overwrite_step": 2}}}}"#
        );
        common::first_image(&server.addr, &body)
    };
    let image = |loras: &str| image_for("a fox", loras);
    let plain = image("[]");
    let with_lora = image(r#"[{"enabled": true, "model_name": "tiny-lora.safetensors", "weight": 1.0}]"#);
    let unknown = image(r#"[{"enabled": true, "model_name": "missing.safetensors", "weight": 1.0}]"#);
    let disabled = image(r#"[{"enabled": false, "model_name": "tiny-lora.safetensors", "weight": 1.0}]"#);
    assert_ne!(common::pixels(&with_lora), common::pixels(&plain), "the LoRA changes the image");
    assert_eq!(common::pixels(&unknown), common::pixels(&plain), "an unknown LoRA is skipped, as the seed does");
    assert_eq!(common::pixels(&disabled), common::pixels(&plain));
    let meta = String::from_utf8_lossy(&with_lora);
    assert!(meta.contains(r#""loras": [["tiny-lora", 1.0, "#) && meta.contains("tiny-lora : 1"), "LoRA in the metadata");
    // A `<lora:stem:weight>` tag in the prompt is the same request (tag removed from the prompt).
    let tagged = image_for("a fox, <lora:tiny-lora:1.0>", "[]");
    assert_eq!(common::pixels(&tagged), common::pixels(&with_lora), "the prompt's LoRA tag merges the LoRA");
    assert!(String::from_utf8_lossy(&tagged).contains(r#""prompt": "a fox""#), "the tag is taken out of the prompt");
    let unknown_tag = image_for("a fox, <lora:nothing-here:1.0>", "[]");
    assert_eq!(common::pixels(&unknown_tag), common::pixels(&plain), "an unknown LoRA tag is skipped");
}

#[test]
fn a_request_refiner_takes_over_at_the_switch() {
    use candle_core::Device;
    let dir = tempfile::tempdir().unwrap();
    // A "refiner" with the base's architecture and its cross-attention values scaled.
    let mut tensors = candle_core::safetensors::load(common::fixtures().join("tiny-sdxl-a.safetensors"), &Device::Cpu).unwrap();
    let keys: Vec<String> =
        tensors.keys().filter(|k| k.starts_with("model.diffusion_model.") && k.ends_with("attn2.to_v.weight")).cloned().collect();
    for key in keys {
        let changed = (tensors[&key].clone() * 4.0).unwrap();
        tensors.insert(key, changed);
    }
    std::fs::create_dir_all(dir.path().join("models/checkpoints")).unwrap();
    candle_core::safetensors::save(&tensors, dir.path().join("models/checkpoints/refiner.safetensors")).unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    let image = |refiner: &str| {
        let body = format!(
            r#"{{"prompt": "a fox", "image_seed": 5, "aspect_ratios_selection": "64*64", "require_base64": true,
                "refiner_model_name": "{refiner}", "refiner_switch": 0.5, "advanced_params": {{"sampler_name": "euler", "overwrite_step": 4}}}}"#
        );
        common::first_image(&server.addr, &body)
    };
    let plain = image("None");
    let refined = image("refiner.safetensors");
    assert_ne!(common::pixels(&refined), common::pixels(&plain), "the refiner changes the image");
    assert_eq!(common::pixels(&image("missing.safetensors")), common::pixels(&plain), "an unknown refiner is skipped, as the seed does");
    assert!(String::from_utf8_lossy(&refined).contains(r#""refiner_model": "refiner.safetensors""#));
}

#[test]
fn refiners_of_each_architecture_refine_with_each_swap_method() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/checkpoints")).unwrap();
    let refiner = common::fixtures().join("../tiny-sdxl-refiner/tiny-sdxl-refiner.safetensors");
    std::fs::copy(refiner, dir.path().join("models/checkpoints/tiny-refiner.safetensors")).unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    let body = |refiner: &str, swap: &str| {
        format!(
            r#"{{"prompt": "a fox", "image_seed": 5, "aspect_ratios_selection": "64*64", "require_base64": true,
                "refiner_model_name": "{refiner}", "refiner_switch": 0.5,
                "advanced_params": {{"sampler_name": "euler", "overwrite_step": 4, "refiner_swap_method": "{swap}"}}}}"#
        )
    };
    let plain = common::pixels(&common::first_image(&server.addr, &body("None", "joint")));
    let mut seen = vec![plain];
    for swap in ["joint", "separate", "vae"] {
        let png = common::first_image(&server.addr, &body("tiny-refiner.safetensors", swap));
        // Fooocus logs the method only when it is not the default.
        let logged = String::from_utf8_lossy(&png).contains(&format!(r#""refiner_swap_method": "{swap}""#));
        assert_eq!(logged, swap != "joint", "{swap} in the metadata");
        let pixels = common::pixels(&png);
        assert!(!seen.contains(&pixels), "{swap}: the swap method and the refiner change the image");
        seen.push(pixels);
    }
    // An SD1.5 refiner, through the latent interposer from models/vae_approx (Fooocus forces its vae swap).
    let fixture = common::fixtures().join("../tiny-sdxl-refiner");
    std::fs::copy(fixture.join("tiny-sd15-refiner.safetensors"), dir.path().join("models/checkpoints/tiny-sd15.safetensors")).unwrap();
    std::fs::create_dir_all(dir.path().join("models/vae_approx")).unwrap();
    let interposer = "xl-to-v1_interposer-v4.0.safetensors";
    std::fs::copy(fixture.join(interposer), dir.path().join("models/vae_approx").join(interposer)).unwrap();
    let sd15 = common::pixels(&common::first_image(&server.addr, &body("tiny-sd15.safetensors", "joint")));
    assert!(!seen.contains(&sd15), "the SD1.5 refiner changes the image");
    // Fooocus asserts on any other method; here it is a 422 naming the field and the choices.
    let (status, raw) =
        common::request(&server.addr, "POST", "/v1/generation/text-to-image", "", &body("tiny-refiner.safetensors", "blend"));
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("refiner_swap_method") && text.contains("separate"), "{text}");
    // As the base model, the refiner checkpoint fails the job with a message that says why.
    let (status, raw) = common::request(
        &server.addr,
        "POST",
        "/v1/generation/text-to-image",
        "",
        r#"{"prompt": "a fox", "aspect_ratios_selection": "64*64", "base_model_name": "tiny-refiner.safetensors",
            "async_process": true, "advanced_params": {"overwrite_step": 2}}"#,
    );
    assert_eq!(status, 200);
    let id = common::json(&raw)["job_id"].as_str().unwrap().to_string();
    let job = loop {
        let (_, raw) = common::request(&server.addr, "GET", &format!("/v1/generation/query-job?job_id={id}"), "", "");
        let v = common::json(&raw);
        if matches!(v["job_stage"].as_str(), Some("SUCCESS" | "ERROR")) {
            break v;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(job["job_stage"], "ERROR", "{job}");
    assert!(job["job_status"].as_str().unwrap().contains("SDXL refiner checkpoint"), "{job}");
}

#[test]
fn lightning_runs_with_its_lora_sampler_and_neutral_guidance() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/loras")).unwrap();
    // Stands in for the real Lightning LoRA (same file name, made for the tiny model).
    write_tiny_lora(&dir.path().join("models/loras/sdxl_lightning_4step_lora.safetensors"));
    let server = common::serve_tiny(dir.path(), &[]);
    let body = r#"{"prompt": "a fox", "image_seed": 5, "aspect_ratios_selection": "64*64", "require_base64": true,
                   "performance_selection": "Lightning", "guidance_scale": 9, "sharpness": 20}"#;
    let png = common::first_image(&server.addr, body);
    let meta = String::from_utf8_lossy(&png);
    for expected in [
        r#""performance": "Lightning""#,
        r#""steps": 4"#,
        r#""sampler": "euler""#,
        r#""scheduler": "sgm_uniform""#,
        r#""guidance_scale": 1.0"#,
        r#""sharpness": 0.0"#,
        r#""adm_guidance": "(1.0, 1.0, 0.0)""#,
        r#"["sdxl_lightning_4step_lora", 1.0, "#,
    ] {
        assert!(meta.contains(expected), "{expected} in the metadata");
    }
}

#[test]
fn extreme_speed_runs_lcm_on_the_distilled_schedule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/loras")).unwrap();
    write_tiny_lora(&dir.path().join("models/loras/sdxl_lcm_lora.safetensors"));
    let server = common::serve_tiny(dir.path(), &[]);
    let body = r#"{"prompt": "a fox", "image_seed": 5, "aspect_ratios_selection": "64*64", "require_base64": true,
                   "performance_selection": "Extreme Speed"}"#;
    let png = common::first_image(&server.addr, body);
    let meta = String::from_utf8_lossy(&png);
    for expected in [r#""steps": 8"#, r#""sampler": "lcm""#, r#""scheduler": "lcm""#, r#"["sdxl_lcm_lora", 1.0, "#] {
        assert!(meta.contains(expected), "{expected} in the metadata");
    }
}

#[test]
fn freeu_from_advanced_params_changes_the_image_and_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    let image = |freeu: &str| {
        let body = format!(
            r#"{{"prompt": "a fox", "image_seed": 5, "aspect_ratios_selection": "64*64", "require_base64": true,
                "advanced_params": {{"overwrite_step": 2, "sampler_name": "euler", {freeu}}}}}"#
        );
        common::first_image(&server.addr, &body)
    };
    let plain = image(r#""freeu_enabled": false"#);
    let freeu = image(r#""freeu_enabled": true, "freeu_b2": 1.4, "freeu_s2": 0.2"#);
    assert_ne!(common::pixels(&freeu), common::pixels(&plain), "FreeU changes the image");
    assert!(String::from_utf8_lossy(&freeu).contains(r#""freeu": "(1.01, 1.4, 0.99, 0.2)""#), "FreeU in the metadata");
    assert!(!String::from_utf8_lossy(&plain).contains(r#""freeu""#), "FreeU off: not logged, as Fooocus");
}

/// `--preset FILE` sets the request defaults the preset names (as Fooocus's config does for
/// Fooocus-API): model, guidance, sampler, styles, aspect ratio (UI spelling), steps, LoRAs;
/// what a request sends still wins.
#[test]
fn a_preset_sets_the_request_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/checkpoints")).unwrap();
    std::fs::copy(common::fixtures().join("tiny-sdxl-a.safetensors"), dir.path().join("models/checkpoints/tiny.safetensors")).unwrap();
    let preset = dir.path().join("tiny-preset.json");
    std::fs::write(
        &preset,
        r#"{"default_model": "tiny.safetensors", "default_cfg_scale": 3.0, "default_sampler": "euler", "default_scheduler": "simple",
            "default_styles": ["Fooocus Sharp"], "default_aspect_ratio": "64×64 ∣ 1:1", "default_overwrite_step": 1,
            "default_loras": [[true, "None", 1.0]], "default_sample_sharpness": 0.0}"#,
    )
    .unwrap();
    let server = common::serve_in(dir.path(), &["--preset".as_ref(), preset.as_os_str()]);
    let meta = |body: &str| String::from_utf8_lossy(&common::first_image(&server.addr, body)).into_owned();
    let m = meta(r#"{"prompt": "a fox", "image_seed": 1, "require_base64": true}"#);
    for expected in [
        r#""base_model": "tiny""#,
        r#""guidance_scale": 3.0"#,
        r#""sampler": "euler""#,
        r#""scheduler": "simple""#,
        r#""styles": "['Fooocus Sharp']""#,
        r#""resolution": "(64, 64)""#,
        r#""steps": 1"#,
        r#""sharpness": 0.0"#,
        r#""loras": []"#,
    ] {
        assert!(m.contains(expected), "{expected} in {m}");
    }
    let m = meta(
        r#"{"prompt": "a fox", "image_seed": 1, "require_base64": true, "guidance_scale": 5.0, "advanced_params": {"scheduler_name": "karras"}}"#,
    );
    assert!(m.contains(r#""guidance_scale": 5.0"#) && m.contains(r#""scheduler": "karras""#) && m.contains(r#""sampler": "euler""#), "{m}");
}

/// `advanced_params.vae_name` swaps in a VAE from `models/vae` (the fixture's diffusers VAE with a
/// shifted output bias, so the decode visibly changes); the metadata names it; an unknown name
/// fails the job saying where VAEs go (Fooocus fails too) instead of decoding with another VAE.
#[test]
fn vae_name_swaps_the_vae_and_unknown_names_fail_the_job() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/vae")).unwrap();
    let source = common::fixtures().join("diffusers/vae/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&source, &candle_core::Device::Cpu).unwrap();
    let bias = tensors["decoder.conv_out.bias"].clone();
    tensors.insert("decoder.conv_out.bias".into(), (bias + 0.5).unwrap());
    candle_core::safetensors::save(&tensors, dir.path().join("models/vae/bright.safetensors")).unwrap();
    let server = common::serve_tiny(dir.path(), &[]);
    let body = |vae: &str| {
        format!(
            r#"{{"prompt": "a fox", "image_seed": 5, "aspect_ratios_selection": "64*64", "require_base64": true,
                "advanced_params": {{"overwrite_step": 1, "sampler_name": "euler", "vae_name": "{vae}"}}}}"#
        )
    };
    let plain = common::first_image(&server.addr, &body("Default (model)"));
    let bright = common::first_image(&server.addr, &body("bright.safetensors"));
    assert_ne!(common::pixels(&bright), common::pixels(&plain), "the VAE file decodes the image");
    assert!(String::from_utf8_lossy(&bright).contains(r#""vae": "bright.safetensors""#), "VAE in the metadata");
    let (status, raw) = common::request(
        &server.addr,
        "POST",
        "/v1/generation/text-to-image",
        "",
        &body("missing.safetensors").replace(r#""require_base64": true"#, r#""async_process": true"#),
    );
    assert_eq!(status, 200);
    let job = common::json(&raw)["job_id"].as_str().unwrap().to_string();
    let t = std::time::Instant::now();
    loop {
        let (_, raw) = common::get(&server.addr, &format!("/v1/generation/query-job?job_id={job}"));
        let v = common::json(raw.as_bytes());
        if v["job_stage"] == "ERROR" {
            assert!(v["job_status"].as_str().unwrap().contains("vae_name 'missing.safetensors'"), "{v}");
            break;
        }
        assert!(v["job_stage"] != "SUCCESS" && t.elapsed().as_secs() < 60, "{v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
