//! Style packs: JSON arrays of `{"name", "prompt"?, "negative_prompt"?}` with `{prompt}` as the
//! placeholder, loaded in file order; a later entry of the same (normalised) name replaces the
//! template but keeps the first one's position, as a Python dict does.

use std::collections::HashMap;

use serde_json::Value;

use crate::splitlines;

/// Fooocus's name for "draw one of the styles per image".
pub const RANDOM_STYLE: &str = "Random Style";

pub struct StylePack {
    names: Vec<String>,
    templates: HashMap<String, (String, String)>,
    /// Whether this pack offers "Random Style" (a draw over its own styles).
    random_style: bool,
}

/// What applying a pack to one image's prompt gave.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Requested names this pack does not know, in order, for later steps.
    pub remaining: Vec<String>,
    /// Names applied, in order ("Random Style" replaced by the style it drew).
    pub applied: Vec<String>,
    pub positive: Vec<String>,
    pub negative: Vec<String>,
    /// Some applied template contained `{prompt}`.
    pub placeholder_used: bool,
}

/// Fooocus's `normalize_key`: `-` to space, each word capitalised, then a few fix-ups.
pub fn normalize_key(k: &str) -> String {
    let k = k.replace('-', " ");
    let words: Vec<String> = k
        .split(' ')
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars.as_str().to_lowercase().chars()).collect(),
                None => String::new(),
            }
        })
        .collect();
    words.join(" ").replace("3d", "3D").replace("Sai", "SAI").replace("Mre", "MRE").replace("(s", "(S")
}

impl StylePack {
    /// Load style files (JSON text) in order. A file that is not a style list is an error
    /// naming it (Fooocus prints it and skips the file; a plugin's data must be valid).
    pub fn load(files: &[(&str, &str)], random_style: bool) -> Result<Self, String> {
        let mut pack = Self { names: Vec::new(), templates: HashMap::new(), random_style };
        for (file, text) in files {
            let entries: Vec<Value> = serde_json::from_str(text).map_err(|e| format!("{file}: {e}"))?;
            for entry in entries {
                let name = entry["name"].as_str().ok_or_else(|| format!("{file}: a style without a name"))?;
                let name = normalize_key(name);
                let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                if !pack.templates.contains_key(&name) {
                    pack.names.push(name.clone());
                }
                pack.templates.insert(name, (field("prompt"), field("negative_prompt")));
            }
        }
        Ok(pack)
    }

    /// The names this pack offers, "Random Style" first when it has it.
    pub fn names(&self) -> Vec<String> {
        let random = self.random_style.then(|| RANDOM_STYLE.to_string());
        random.into_iter().chain(self.names.iter().cloned()).collect()
    }

    /// Apply the requested styles this pack knows, in request order, to `prompt`; `draw(n)`
    /// is the image generator's `choice` index (used once per "Random Style").
    pub fn apply(&self, prompt: &str, requested: Vec<String>, mut draw: impl FnMut(u32) -> u32) -> Applied {
        let mut out = Applied::default();
        for requested_name in requested {
            let name = if requested_name == RANDOM_STYLE && self.random_style && !self.names.is_empty() {
                self.names[draw(self.names.len() as u32) as usize].clone()
            } else {
                requested_name
            };
            let Some((template, negative)) = self.templates.get(&name) else {
                out.remaining.push(name);
                continue;
            };
            out.positive.extend(splitlines(&template.replace("{prompt}", prompt)));
            out.negative.extend(splitlines(negative));
            out.placeholder_used |= template.contains("{prompt}");
            out.applied.push(name);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_key_follows_fooocus() {
        // From modules/sdxl_styles.py by hand: "sai-3d-model" → "SAI 3D Model".
        assert_eq!(normalize_key("sai-3d-model"), "SAI 3D Model");
        assert_eq!(normalize_key("mre-dark CYBERPUNK"), "MRE Dark Cyberpunk");
        assert_eq!(normalize_key("Fooocus Sharp"), "Fooocus Sharp");
    }

    #[test]
    fn later_duplicates_replace_in_place() {
        let a = r#"[{"name": "one", "prompt": "1 {prompt}"}, {"name": "two", "prompt": "2"}]"#;
        let b = r#"[{"name": "One", "prompt": "uno {prompt}", "negative_prompt": "x\ny"}]"#;
        let pack = StylePack::load(&[("a", a), ("b", b)], true).unwrap();
        assert_eq!(pack.names(), ["Random Style", "One", "Two"]);
        let got = pack.apply("cat", vec!["Two".into(), "One".into(), "Nope".into()], |_| 0);
        assert_eq!(got.positive, ["2", "uno cat"]);
        assert_eq!(got.negative, ["x", "y"]);
        assert_eq!(got.applied, ["Two", "One"]);
        assert_eq!(got.remaining, ["Nope"]);
        assert!(got.placeholder_used);
    }
}
