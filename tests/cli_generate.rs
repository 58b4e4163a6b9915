//! Black-box tests of `focal generate` on the tiny checkpoint.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl")
}

fn focal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_focal")).args(args).output().unwrap()
}

fn generate(dir: &Path, request: &str, base_model: &str) -> Output {
    let req = dir.join("request.json");
    std::fs::write(&req, request).unwrap();
    let models = dir.join("models");
    std::fs::create_dir_all(models.join("checkpoints")).unwrap();
    focal(&[
        "generate",
        "--models-dir",
        models.to_str().unwrap(),
        "--base-model",
        base_model,
        "--request",
        req.to_str().unwrap(),
        "--out",
        dir.join("out").to_str().unwrap(),
        "--data-dir",
        dir.join("data").to_str().unwrap(),
    ])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn generates_the_reference_image_from_a_models_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/checkpoints")).unwrap();
    std::fs::copy(fixtures().join("tiny-sdxl-a.safetensors"), dir.path().join("models/checkpoints/tiny.safetensors")).unwrap();
    let request = r#"{"prompt": "a photograph of an astronaut riding a horse",
        "negative_prompt": "blurry, low quality, watermark", "image_seed": 42, "image_number": 2,
        "guidance_scale": 7.0, "aspect_ratios_selection": "128*128", "sharpness": 0, "style_selections": [],
        "advanced_params": {"sampler_name": "euler", "scheduler_name": "karras", "overwrite_step": 8,
                            "adm_scaler_positive": 1, "adm_scaler_negative": 1}}"#;
    let out = generate(dir.path(), request, "tiny.safetensors");
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["seed"], 42);
    assert_eq!(lines[1]["seed"], 43);
    assert_eq!(lines[0]["finish_reason"], "SUCCESS");
    // Image 0 is the t2i_euler_karras reference case (same prompt, seed, size, steps, cfg, sampler).
    let ours = std::fs::read(lines[0]["path"].as_str().unwrap()).unwrap();
    let reference = std::fs::read(fixtures().join("reference/t2i_euler_karras.png")).unwrap();
    let (a, b) = (decode(&ours), decode(&reference));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.abs_diff(*y) <= 3));
}

fn decode(png_bytes: &[u8]) -> Vec<u8> {
    focal_engine::image::RgbImage::decode_png(png_bytes).unwrap().data
}

fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = stderr(out);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

#[test]
fn bad_requests_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = fixtures().join("tiny-sdxl-a.safetensors");
    let ckpt = ckpt.to_str().unwrap();
    assert_one_line_error(&generate(dir.path(), r#"{"advanced_params": {"sampler_name": "bogus"}}"#, ckpt), "sampler_name");
    assert_one_line_error(&generate(dir.path(), r#"{"aspect_ratios_selection": "abc"}"#, ckpt), "aspect_ratios_selection");
    assert_one_line_error(&generate(dir.path(), r#"{"guidance_scale": "high"}"#, ckpt), "guidance_scale");
    assert_one_line_error(&generate(dir.path(), r#"{"prompt": "#, ckpt), "invalid request");
    assert_one_line_error(&generate(dir.path(), "{}", "missing.safetensors"), "not found");
    let corrupt = dir.path().join("corrupt.safetensors");
    let bytes = std::fs::read(fixtures().join("tiny-sdxl-a.safetensors")).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(&generate(dir.path(), "{}", corrupt.to_str().unwrap()), "corrupt.safetensors");
    std::fs::write(&corrupt, &bytes[..1000]).unwrap();
    assert_one_line_error(&generate(dir.path(), "{}", corrupt.to_str().unwrap()), "corrupt.safetensors");
}

#[test]
fn a_request_refiner_runs_in_generate_too() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = fixtures().join("tiny-sdxl-a.safetensors");
    let refiners = fixtures().join("../tiny-sdxl-refiner");
    let request = |refiner: &str, swap: &str| {
        format!(
            r#"{{"prompt": "a fox", "image_seed": 3, "aspect_ratios_selection": "64*64", "refiner_model_name": "{refiner}",
                "refiner_switch": 0.5, "advanced_params": {{"sampler_name": "euler", "overwrite_step": 4, "refiner_swap_method": "{swap}"}}}}"#
        )
    };
    let image = |refiner: &str| {
        let out = generate(dir.path(), &request(refiner, "joint"), ckpt.to_str().unwrap());
        assert!(out.status.success(), "{}", stderr(&out));
        decode(&std::fs::read(dir.path().join("out/0.png")).unwrap())
    };
    let plain = image("None");
    let refined = image(refiners.join("tiny-sdxl-refiner.safetensors").to_str().unwrap());
    assert_ne!(plain, refined, "the refiner changes the image");
    let sd15 = refiners.join("tiny-sd15-refiner.safetensors");
    // An SD1.5 refiner without the interposer in the models folder says where to put it.
    assert_one_line_error(&generate(dir.path(), &request(sd15.to_str().unwrap(), "joint"), ckpt.to_str().unwrap()), "vae_approx");
    std::fs::create_dir_all(dir.path().join("models/vae_approx")).unwrap();
    let name = "xl-to-v1_interposer-v4.0.safetensors";
    std::fs::copy(refiners.join(name), dir.path().join("models/vae_approx").join(name)).unwrap();
    assert_ne!(image(sd15.to_str().unwrap()), plain, "the SD1.5 refiner changes the image");
    assert_one_line_error(&generate(dir.path(), &request(sd15.to_str().unwrap(), "blend"), ckpt.to_str().unwrap()), "refiner_swap_method");
}

/// An image route without a server: the route inferred from `uov_method`, the input a file path;
/// a fast upscale is the upscaler's result at Fooocus's size, what the real Fooocus-API returned
/// (tests/fixtures/fooocus-api-uov) within 1/255 (the convolutions sum in another order than
/// PyTorch's, so a value on a rounding edge may land one step away).
#[test]
fn upscales_a_file_through_the_image_route() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("checkpoints")).unwrap();
    std::fs::create_dir_all(models.join("upscale_models")).unwrap();
    let all = fixtures().join("..");
    std::fs::copy(fixtures().join("tiny-sdxl-a.safetensors"), models.join("checkpoints/tiny.safetensors")).unwrap();
    std::fs::copy(all.join("upscale/fooocus_upscaler_s409985e5.bin"), models.join("upscale_models/fooocus_upscaler_s409985e5.bin"))
        .unwrap();
    let input = all.join("fooocus-api-uov/input.png");
    let request = format!(r#"{{"prompt": "x", "uov_method": "Upscale (Fast 2x)", "input_image": "{}"}}"#, input.display());
    let out = generate(dir.path(), &request, "tiny.safetensors");
    assert!(out.status.success(), "{}", stderr(&out));
    let got = std::fs::read(dir.path().join("out/0.png")).unwrap();
    let decode = |png: &[u8]| {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    };
    let expected = std::fs::read(all.join("fooocus-api-uov/upscale_fast.png")).unwrap();
    let ((w, h, got), (ew, eh, expected)) = (decode(&got), decode(&expected));
    assert_eq!((w, h), (ew, eh), "the fast upscale's size differs from Fooocus-API's");
    let worst = got.iter().zip(&expected).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    assert!(worst <= 1, "the fast upscale differs from Fooocus-API's by up to {worst}/255");
}
