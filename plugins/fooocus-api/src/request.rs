//! The translation of a validated Fooocus-API request (see `endpoints`) into a focal job's
//! parameters: performance modes, styles, LoRAs, refiner, sampling patches, metadata and output
//! options. What the job makes from its input images (its task and controls) is `task`'s.

use serde_json::{json, Map, Value};

use crate::focal::plugin::engine::{FooocusOptions, Freeu, GenerationParams, ImageMetadata, Lora, OutputOptions, Refiner, SamplingPatches};

/// Steps per performance, as Fooocus's `Performance.steps()`.
fn performance_steps(p: &str) -> u32 {
    match p {
        "Quality" => 60,
        "Extreme Speed" => 8,
        "Lightning" | "Hyper-SD" => 4,
        _ => 30,
    }
}

/// The schedule Fooocus 2.5.5 actually samples with. Its `KSampler` replaces any scheduler
/// missing from ComfyUI's own `SCHEDULER_NAMES` by `normal`, and `turbo` and `align_your_steps`
/// are missing there (Fooocus computes their sigmas only for the SDE noise range), so Fooocus's
/// images for them are `normal`'s: checked against Fooocus's own code in
/// tests/fixtures/fooocus-oracle. The metadata keeps the requested name, as Fooocus's does.
/// (`focal generate` applies the same rule: `Scheduler::as_fooocus_samples`.)
pub fn fooocus_sampling_scheduler(scheduler: &str) -> &str {
    match scheduler {
        "turbo" | "align_your_steps" => "normal",
        other => other,
    }
}

/// A validated request's job parameters (everything but its task and controls).
pub struct Generation {
    pub params: GenerationParams,
    pub fooocus: FooocusOptions,
    pub output: OutputOptions,
    pub webhook_url: Option<String>,
    /// The request as kept with the job (image data replaced by a marker).
    pub record: String,
    pub require_base64: bool,
    pub async_process: bool,
    pub extension: String,
}

/// Problems found after field validation: `(loc under body, message, input)`.
pub type Problem = (Vec<&'static str>, String, Value);

fn str_of<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

fn num(m: &Map<String, Value>, k: &str) -> f64 {
    m.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// The requested styles the loaded prompt steps know, in order; others are dropped (logged), as
/// the seed does — existing clients send names such as "Fooocus V2" that a host may lack.
fn known_styles(body: &Map<String, Value>) -> Vec<String> {
    let requested: Vec<String> =
        body["style_selections"].as_array().map(|v| v.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default();
    if requested.is_empty() {
        return requested;
    }
    let known = crate::focal::plugin::prompts::styles();
    let (kept, dropped): (Vec<String>, Vec<String>) = requested.into_iter().partition(|s| known.contains(s));
    if !dropped.is_empty() {
        crate::focal::plugin::log::log(crate::focal::plugin::log::Level::Warn, &format!("unknown styles dropped: {}", dropped.join(", ")));
    }
    kept
}

/// The job parameters of a validated body. `random_seed` is used when `image_seed` asks for one.
pub fn generation(request: &Value, random_seed: u64, png_stream: bool) -> Result<Generation, Problem> {
    let Some(body) = request.as_object() else {
        return Err((vec![], "Input should be a valid dictionary".into(), request.clone()));
    };
    let adv = body["advanced_params"].as_object().cloned().unwrap_or_default();
    let performance = str_of(body, "performance_selection");
    // Fooocus's fast modes: their LoRA, sampler and scheduler; CFG, sharpness, adaptive CFG and
    // ADM neutral; no refiner (`async_worker.py:set_lcm_defaults`, `set_lightning_defaults`,
    // `set_hyper_sd_defaults`).
    let fast: Option<(&str, f32, &str, &str)> = match performance {
        "Extreme Speed" => Some(("sdxl_lcm_lora.safetensors", 1.0, "lcm", "lcm")),
        "Lightning" => Some(("sdxl_lightning_4step_lora.safetensors", 1.0, "euler", "sgm_uniform")),
        "Hyper-SD" => Some(("sdxl_hyper_sd_4step_lora.safetensors", 0.8, "dpmpp_sde_gpu", "karras")),
        _ => None,
    };
    let overwrite_step = adv.get("overwrite_step").and_then(Value::as_i64).unwrap_or(-1);
    let steps = if overwrite_step > 0 { overwrite_step as u32 } else { performance_steps(performance) };
    let aspect = str_of(body, "aspect_ratios_selection");
    // "1152*896", also Fooocus UI labels such as "1152×896 ∣ 9:7".
    let dims: Vec<Option<u32>> =
        aspect.split(['*', '×']).take(2).map(|s| s.trim().split(' ').next().and_then(|n| n.parse().ok())).collect();
    let (mut width, mut height) = match dims.as_slice() {
        [Some(w), Some(h)] if *w > 0 && *h > 0 => (*w, *h),
        _ => return Err((vec!["aspect_ratios_selection"], "Value error, expected WIDTH*HEIGHT, e.g. 1152*896".into(), json!(aspect))),
    };
    let ow = adv.get("overwrite_width").and_then(Value::as_i64).unwrap_or(-1);
    let oh = adv.get("overwrite_height").and_then(Value::as_i64).unwrap_or(-1);
    if ow > 0 {
        width = ow as u32;
    }
    if oh > 0 {
        height = oh as u32;
    }
    let (sampler, scheduler) = match fast {
        Some((_, _, sampler, scheduler)) => (sampler, scheduler),
        None => (str_of(&adv, "sampler_name"), str_of(&adv, "scheduler_name")),
    };
    let sampling_scheduler = fooocus_sampling_scheduler(scheduler);
    const MAX_SEED: i64 = i64::MAX;
    let seed = match body.get("image_seed").and_then(Value::as_i64) {
        Some(s) if (0..=MAX_SEED).contains(&s) => s as u64,
        _ => random_seed,
    };
    let extension = str_of(body, "save_extension").to_ascii_lowercase();
    if !matches!(extension.as_str(), "png" | "jpg" | "jpeg" | "webp") {
        return Err((
            vec!["save_extension"],
            "Input should be 'png', 'jpg', 'jpeg' or 'webp'".into(),
            json!(str_of(body, "save_extension")),
        ));
    }
    let scheme = str_of(body, "meta_scheme");
    // The docs' "a111" is a typo of Fooocus's "a1111"; the seed's worker died on it. Accept both.
    let scheme = if scheme == "a111" { "a1111" } else { scheme };
    if !matches!(scheme, "fooocus" | "a1111") {
        return Err((vec!["meta_scheme"], "Input should be 'fooocus' or 'a1111'".into(), json!(scheme)));
    }
    let save_name = str_of(body, "save_name");
    if save_name.contains(['/', '\\']) || save_name.starts_with('.') {
        return Err((vec!["save_name"], "Value error, save_name must be a plain file name".into(), json!(save_name)));
    }
    let prompt = str_of(body, "prompt").to_string();
    let negative = str_of(body, "negative_prompt").to_string();
    let cfg = if fast.is_some() { 1.0 } else { num(body, "guidance_scale") };
    let patches = match fast {
        Some(_) => SamplingPatches { sharpness: 0.0, adaptive_cfg: 1.0, adm_positive: 1.0, adm_negative: 1.0, adm_end: 0.0 },
        None => SamplingPatches {
            sharpness: num(body, "sharpness") as f32,
            adaptive_cfg: num(&adv, "adaptive_cfg") as f32,
            adm_positive: num(&adv, "adm_scaler_positive") as f32,
            adm_negative: num(&adv, "adm_scaler_negative") as f32,
            adm_end: num(&adv, "adm_scaler_end") as f32,
        },
    };
    let refiner_name = if fast.is_some() { "None" } else { str_of(body, "refiner_model_name") };
    let freeu_enabled = adv.get("freeu_enabled").and_then(Value::as_bool).unwrap_or(false);
    let metadata = body["save_meta"].as_bool().unwrap_or(false).then(|| {
        let q = |v: Value| v.to_string();
        let fmt = |f: f64| crate::python_float(f);
        // An f32 setting as its shortest decimal (0.8, not 0.800000011920929).
        let fmt32 = |f: f32| crate::python_float(f.to_string().parse().unwrap_or(f as f64));
        ImageMetadata {
            scheme: scheme.into(),
            entries: vec![
                ("performance".into(), q(json!(performance))),
                ("steps".into(), steps.to_string()),
                ("resolution".into(), q(json!(format!("({width}, {height})")))),
                ("guidance_scale".into(), fmt(cfg)),
                ("sharpness".into(), fmt32(patches.sharpness)),
                (
                    "adm_guidance".into(),
                    q(json!(format!("({}, {}, {})", fmt32(patches.adm_positive), fmt32(patches.adm_negative), fmt32(patches.adm_end)))),
                ),
                ("adaptive_cfg".into(), fmt32(patches.adaptive_cfg)),
                ("clip_skip".into(), adv.get("clip_skip").and_then(Value::as_u64).unwrap_or(2).to_string()),
                ("refiner_model".into(), q(json!(if matches!(refiner_name, "" | "None") { "None" } else { refiner_name }))),
                ("refiner_switch".into(), fmt(num(body, "refiner_switch"))),
                ("sampler".into(), q(json!(sampler))),
                ("scheduler".into(), q(json!(scheduler))),
                ("vae".into(), q(json!(str_of(&adv, "vae_name")))),
                (
                    "freeu".into(),
                    q(json!(format!(
                        "({}, {}, {}, {})",
                        fmt(num(&adv, "freeu_b1")),
                        fmt(num(&adv, "freeu_b2")),
                        fmt(num(&adv, "freeu_s1")),
                        fmt(num(&adv, "freeu_s2"))
                    ))),
                ),
                ("version".into(), q(json!(format!("focal v{}", crate::host_version())))),
            ],
        }
    });
    // Fooocus logs adaptive CFG only when it differs from its default.
    let mut metadata = metadata;
    if let Some(m) = metadata.as_mut() {
        // … and CLIP skip only above 1.
        m.entries.retain(|(k, v)| (k != "adaptive_cfg" || v != "7.0") && (k != "clip_skip" || v != "1") && (k != "freeu" || freeu_enabled));
        // With a refiner: the overwritten switch when set, the swap method when not the default.
        if !matches!(refiner_name, "" | "None") {
            let at = m.entries.iter().position(|(k, _)| k == "refiner_switch").map_or(m.entries.len(), |i| i + 1);
            let overwrite_switch = num(&adv, "overwrite_switch");
            let swap = str_of(&adv, "refiner_swap_method");
            let mut extra = Vec::new();
            if overwrite_switch > 0.0 {
                extra.push(("overwrite_switch".to_string(), crate::python_float(overwrite_switch)));
            }
            if !matches!(swap, "" | "joint") {
                extra.push(("refiner_swap_method".to_string(), json!(swap).to_string()));
            }
            m.entries.splice(at..at, extra);
        }
    }
    let freeu = freeu_enabled.then(|| Freeu {
        b1: num(&adv, "freeu_b1") as f32,
        b2: num(&adv, "freeu_b2") as f32,
        s1: num(&adv, "freeu_s1") as f32,
        s2: num(&adv, "freeu_s2") as f32,
    });
    let webhook_url = body.get("webhook_url").and_then(Value::as_str).filter(|u| !u.is_empty()).map(str::to_string);
    // Keep the request for history, without image data.
    let mut record = Value::Object(body.clone());
    redact_images(&mut record, "");
    // Enabled LoRAs other than "None", at most Fooocus's default_max_lora_number (5).
    let loras: Vec<Lora> = body["loras"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|l| l["enabled"].as_bool() == Some(true))
                .filter_map(|l| Some(Lora { name: l["model_name"].as_str()?.to_string(), weight: l["weight"].as_f64()? as f32 }))
                .filter(|l| l.name != "None" && !l.name.is_empty())
                .take(5)
                .collect()
        })
        .unwrap_or_default();
    let mut loras = loras;
    if let Some((file, weight, _, _)) = fast {
        loras.push(Lora { name: file.into(), weight });
    }
    // Refiner: none for "None"/"" or the base itself (Fooocus drops it then too);
    // `overwrite_switch` > 0 replaces `refiner_switch`.
    let overwrite_switch = num(&adv, "overwrite_switch");
    let refiner = (!matches!(refiner_name, "" | "None") && refiner_name != str_of(body, "base_model_name")).then(|| Refiner {
        model: refiner_name.to_string(),
        switch: if overwrite_switch > 0.0 { overwrite_switch as f32 } else { num(body, "refiner_switch") as f32 },
    });
    let swap_method = if refiner.is_some() { str_of(&adv, "refiner_swap_method").to_string() } else { String::new() };
    let params = GenerationParams {
        prompt,
        negative_prompt: negative,
        width,
        height,
        steps,
        guidance_scale: cfg as f32,
        sampler: sampler.into(),
        scheduler: sampling_scheduler.into(),
        seed,
        image_number: if png_stream { 1 } else { body["image_number"].as_u64().unwrap_or(1) as u32 },
        base_model: str_of(body, "base_model_name").into(),
        clip_skip: adv.get("clip_skip").and_then(Value::as_u64).unwrap_or(2) as u32,
        disable_seed_increment: adv.get("disable_seed_increment").and_then(Value::as_bool).unwrap_or(false),
        preview: !adv.get("disable_preview").and_then(Value::as_bool).unwrap_or(false),
        freeu,
        vae: str_of(&adv, "vae_name").to_string(),
        loras,
        refiner,
    };
    let fooocus = FooocusOptions {
        patches: Some(patches),
        styles: known_styles(body),
        // A top-level field of the seed's `CommonRequest` (focal read it from `advanced_params`,
        // whose table does not have it, so it was always off).
        read_wildcards_in_order: body["read_wildcards_in_order"].as_bool().unwrap_or(false),
        refiner_swap_method: swap_method,
        metadata,
        controlnet_softness: focal_fooocus_tasks::image_prompts::softness(request),
    };
    Ok(Generation {
        params,
        fooocus,
        output: OutputOptions { extension: extension.clone(), save_name: save_name.into() },
        webhook_url,
        record: record.to_string(),
        require_base64: body["require_base64"].as_bool().unwrap_or(false),
        async_process: body["async_process"].as_bool().unwrap_or(false) && !png_stream,
        extension,
    })
}

/// Replace image data (base64 strings and uploads under image/mask keys, nested too) by a
/// marker, so job records stay small; URLs are kept.
fn redact_images(v: &mut Value, key: &str) {
    match v {
        Value::Object(map) => map.iter_mut().for_each(|(k, v)| redact_images(v, k)),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_images(v, key)),
        Value::String(s) if (key.contains("image") || key.contains("img") || key.contains("mask")) && (s.len() > 256 || s == "<file>") => {
            *s = "<image>".into();
        }
        _ => {}
    }
}
