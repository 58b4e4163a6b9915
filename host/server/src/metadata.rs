//! The `parameters` text Fooocus embeds in images, in its two schemes: `fooocus` (a JSON object
//! with sorted keys, serialized as Python's `json.dumps` does) and `a1111` (the A1111 web UI's
//! "prompt / Negative prompt / key: value" text that other tools parse).

use std::collections::BTreeMap;

use serde_json::Value;

/// Per-image values the host knows and the plugin does not.
pub struct ImageFacts<'a> {
    pub seed: u64,
    pub base_model: &'a str,
    pub base_model_hash: &'a str,
    pub width: u32,
    pub height: u32,
    /// LoRAs merged: (file stem, weight, hash).
    pub loras: &'a [(String, f32, String)],
}

/// Build the text for `scheme` from the plugin's entries (key → JSON text) plus `facts`.
/// Unknown schemes are refused before the job is queued, so this only sees the two.
pub fn parameters(scheme: &str, entries: &[(String, String)], facts: &ImageFacts) -> String {
    let mut map: BTreeMap<String, Value> =
        entries.iter().map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone())))).collect();
    map.insert("seed".into(), Value::String(facts.seed.to_string()));
    map.insert("base_model".into(), Value::String(facts.base_model.into()));
    map.insert("base_model_hash".into(), Value::String(facts.base_model_hash.into()));
    map.insert("metadata_scheme".into(), Value::String(scheme.into()));
    map.insert("loras".into(), Value::Array(facts.loras.iter().map(|(n, w, h)| serde_json::json!([n, w, h])).collect()));
    for (i, (name, weight, _)) in facts.loras.iter().enumerate() {
        map.insert(format!("lora_combined_{}", i + 1), Value::String(format!("{name} : {weight}")));
    }
    if scheme == "a1111" {
        a1111(&map, facts)
    } else {
        python_json(&Value::Object(map.into_iter().collect()))
    }
}

pub fn is_known_scheme(scheme: &str) -> bool {
    matches!(scheme, "fooocus" | "a1111")
}

fn text(map: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    map.get(key).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Fooocus's `A1111MetadataParser.to_string`: the full prompts (workloads joined by ", "), the
/// negative line only when there is one, then `key: value` pairs in Fooocus's order.
fn a1111(map: &BTreeMap<String, Value>, facts: &ImageFacts) -> String {
    let joined = |key: &str, fallback: &str| match map.get(key) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
        _ => text(map, fallback).unwrap_or_default(),
    };
    let prompt = joined("full_prompt", "prompt");
    let negative = joined("full_negative_prompt", "negative_prompt");
    // `Path(name).stem`
    let stem = |v: Option<String>| v.map(|v| std::path::Path::new(&v).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or(v));
    let mut fields: Vec<(&str, Option<String>)> = vec![
        ("Steps", text(map, "steps")),
        ("Sampler", text(map, "sampler").map(|s| a1111_sampler(&s, text(map, "scheduler").as_deref()))),
        ("Seed", Some(facts.seed.to_string())),
        ("Size", Some(format!("{}x{}", facts.width, facts.height))),
        ("CFG scale", text(map, "guidance_scale")),
        ("Sharpness", text(map, "sharpness")),
        ("ADM Guidance", text(map, "adm_guidance")),
        ("Model", Some(facts.base_model.into())),
        ("Model hash", Some(facts.base_model_hash.into())),
        ("Performance", text(map, "performance")),
        ("Scheduler", text(map, "scheduler")),
        ("VAE", stem(text(map, "vae"))),
        ("Raw prompt", text(map, "prompt")),
        ("Raw negative prompt", text(map, "negative_prompt")),
    ];
    if let Some(refiner) = text(map, "refiner_model").filter(|r| !r.is_empty() && r != "None") {
        fields.push(("Refiner", Some(refiner)));
    }
    for (key, label) in [
        ("adaptive_cfg", "Adaptive CFG"),
        ("clip_skip", "Clip skip"),
        ("overwrite_switch", "Overwrite Switch"),
        ("refiner_swap_method", "Refiner Swap Method"),
        ("freeu", "FreeU"),
    ] {
        if map.contains_key(key) {
            fields.push((label, text(map, key)));
        }
    }
    if !facts.loras.is_empty() {
        let list = |f: &dyn Fn(&(String, f32, String)) -> String| facts.loras.iter().map(f).collect::<Vec<_>>().join(", ");
        fields.push(("Lora hashes", Some(list(&|(n, _, h)| format!("{n}: {h}")))));
        fields.push(("Lora weights", Some(list(&|(n, w, _)| format!("{n}: {w}")))));
    }
    fields.push(("Version", text(map, "version")));
    let pairs: Vec<String> = fields.into_iter().filter_map(|(k, v)| Some(format!("{k}: {}", quote(&v?)))).collect();
    let negative_line = if negative.is_empty() { String::new() } else { format!("\nNegative prompt: {negative}") };
    format!("{prompt}{negative_line}\n{}", pairs.join(", ")).trim().to_string()
}

/// Fooocus's A1111/Civitai sampler names (`flags.SAMPLERS`); samplers without one keep their own
/// name. " Karras" is appended for the karras scheduler unless the *display* name is in
/// `CIVITAI_NO_KARRAS` — a list of internal names, so in practice always (Fooocus does the same).
fn a1111_sampler(sampler: &str, scheduler: Option<&str>) -> String {
    let display = match sampler {
        "euler" => "Euler",
        "euler_ancestral" => "Euler a",
        "heun" => "Heun",
        "dpm_2" => "DPM2",
        "dpm_2_ancestral" => "DPM2 a",
        "lms" => "LMS",
        "dpm_fast" => "DPM fast",
        "dpm_adaptive" => "DPM adaptive",
        "dpmpp_2s_ancestral" => "DPM++ 2S a",
        "dpmpp_sde" | "dpmpp_sde_gpu" => "DPM++ SDE",
        "dpmpp_2m" => "DPM++ 2M",
        "dpmpp_2m_sde" | "dpmpp_2m_sde_gpu" => "DPM++ 2M SDE",
        "lcm" => "LCM",
        "tcd" => "TCD",
        "restart" => "Restart",
        "ddim" => "DDIM",
        "uni_pc" => "UniPC",
        _ => return sampler.to_string(),
    };
    const CIVITAI_NO_KARRAS: [&str; 7] = ["euler", "euler_ancestral", "heun", "dpm_fast", "dpm_adaptive", "ddim", "uni_pc"];
    if scheduler == Some("karras") && !CIVITAI_NO_KARRAS.contains(&display) {
        format!("{display} Karras")
    } else {
        display.to_string()
    }
}

/// Python's `str(list_of_str)`: `['a', "b's"]` (repr quoting: single quotes unless the text
/// has one and no double quote).
pub fn python_list_repr(items: &[String]) -> String {
    let repr = |s: &str| {
        let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
        let mut out = String::from(quote);
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c == quote => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
        out.push(quote);
        out
    };
    format!("[{}]", items.iter().map(|s| repr(s)).collect::<Vec<_>>().join(", "))
}

/// A1111 quoting: values with `,`, `:` or a newline become JSON strings.
fn quote(v: &str) -> String {
    if v.contains([',', ':', '\n']) {
        Value::String(v.into()).to_string()
    } else {
        v.into()
    }
}

/// `json.dumps(value)` with Python's defaults: `", "` and `": "` separators, non-ASCII escaped.
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_python_json(v, &mut out);
    out
}

fn write_python_json(v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_string(k, out);
                out.push_str(": ");
                write_python_json(item, out);
            }
            out.push('}');
        }
        Value::String(s) => write_python_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn write_python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ImageFacts<'static> {
        ImageFacts { seed: 42, base_model: "tiny", base_model_hash: "0123456789", width: 64, height: 32, loras: &[] }
    }

    #[test]
    fn fooocus_scheme_is_python_json_with_sorted_keys() {
        let entries = vec![("prompt".to_string(), "\"a café, \\\"x\\\"\"".to_string()), ("steps".into(), "30".into())];
        // Expected text written by hand from Python: json.dumps({...}) on the sorted dict.
        let expected = r#"{"base_model": "tiny", "base_model_hash": "0123456789", "loras": [], "metadata_scheme": "fooocus", "prompt": "a caf\u00e9, \"x\"", "seed": "42", "steps": 30}"#;
        assert_eq!(parameters("fooocus", &entries, &facts()), expected);
    }

    #[test]
    fn a1111_scheme_quotes_values_with_separators() {
        let entries = vec![
            ("prompt".to_string(), "\"a cat\"".to_string()),
            ("negative_prompt".into(), "\"blur\"".into()),
            ("steps".into(), "30".into()),
            ("adm_guidance".into(), "\"(1.5, 0.8, 0.3)\"".into()),
        ];
        let expected = "a cat\nNegative prompt: blur\nSteps: 30, Seed: 42, Size: 64x32, ADM Guidance: \"(1.5, 0.8, 0.3)\", Model: tiny, Model hash: 0123456789, Raw prompt: a cat, Raw negative prompt: blur";
        assert_eq!(parameters("a1111", &entries, &facts()), expected);
    }

    /// Expected names from Fooocus's `meta_parser.A1111MetadataParser.to_string` with
    /// `flags.SAMPLERS` (display name looked up, then " Karras" for the karras scheduler).
    #[test]
    fn a1111_scheme_uses_civitai_sampler_names() {
        for (sampler, scheduler, want) in [
            ("dpmpp_2m_sde_gpu", "karras", "DPM++ 2M SDE Karras"),
            ("euler", "karras", "Euler Karras"),
            ("euler_ancestral", "normal", "Euler a"),
            ("uni_pc_bh2", "karras", "uni_pc_bh2"),
            ("dpmpp_3m_sde", "exponential", "dpmpp_3m_sde"),
            ("lcm", "lcm", "LCM"),
        ] {
            let entries = vec![("sampler".to_string(), format!("\"{sampler}\"")), ("scheduler".into(), format!("\"{scheduler}\""))];
            let text = parameters("a1111", &entries, &facts());
            assert!(text.contains(&format!("Sampler: {want},")), "{sampler}/{scheduler}: {text}");
        }
    }
}
