//! Fooocus's wildcards (`modules/util.py:apply_wildcards`): up to 64 rounds, each replacing
//! every `__name__` found (first remaining occurrence each time) with a line of `name.txt`:
//! drawn with the image's generator, or line `i` when reading in order. A missing or empty list
//! leaves the bare name. Lists come from the host's wildcards folder (mounted read-only at
//! `/wildcards` when the manifest grants `wildcards`), then the lists Fooocus ships.

use std::collections::BTreeMap;
use std::path::Path;

/// `config.wildcards_max_bfs_depth`.
const MAX_ROUNDS: usize = 64;

const SHIPPED: [(&str, &str); 7] = [
    ("animal", include_str!("../wildcards/animal.txt")),
    ("artist", include_str!("../wildcards/artist.txt")),
    ("color", include_str!("../wildcards/color.txt")),
    ("color_flower", include_str!("../wildcards/color_flower.txt")),
    ("extended-color", include_str!("../wildcards/extended-color.txt")),
    ("flower", include_str!("../wildcards/flower.txt")),
    ("nationality", include_str!("../wildcards/nationality.txt")),
];

pub struct Lists {
    /// Stem → file text; the host folder's files win over the shipped ones.
    files: BTreeMap<String, String>,
}

impl Lists {
    pub fn load() -> Self {
        let mut files: BTreeMap<String, String> = SHIPPED.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut found = Vec::new();
        collect(Path::new("/wildcards"), &mut found);
        // Fooocus takes the first file of a stem in its (case-insensitively sorted) listing.
        found.sort_by_key(|(path, _)| path.to_lowercase());
        let mut seen = std::collections::BTreeSet::new();
        for (path, text) in found {
            let stem = Path::new(&path).file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
            if seen.insert(stem.clone()) {
                files.insert(stem, text);
            }
        }
        Self { files }
    }

    fn words(&self, name: &str) -> Vec<&str> {
        self.files.get(name).map(|t| prompt_kit_lines(t)).unwrap_or_default()
    }

    pub fn apply(&self, text: &str, index: u32, in_order: bool, mut draw: impl FnMut(u32) -> u32) -> String {
        let mut text = text.to_string();
        for _ in 0..MAX_ROUNDS {
            let names = placeholders(&text);
            if names.is_empty() {
                return text;
            }
            for name in names {
                let words = self.words(&name);
                let pattern = format!("__{name}__");
                if words.is_empty() {
                    // Fooocus: "missing or empty" → the bare name, every occurrence.
                    text = text.replace(&pattern, &name);
                    continue;
                }
                let pick = if in_order { index as usize % words.len() } else { draw(words.len() as u32) as usize };
                text = text.replacen(&pattern, words[pick], 1);
            }
        }
        text
    }
}

/// The non-empty lines of a list (`read().splitlines()` without `''`).
fn prompt_kit_lines(text: &str) -> Vec<&str> {
    // splitlines' boundaries, borrowed instead of copied.
    text.split(['\n', '\r', '\u{0b}', '\u{0c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}', '\u{2029}'])
        .filter(|l| !l.is_empty())
        .collect()
}

/// Every `.txt` under `dir` (recursively) as (relative path, text).
fn collect(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt")) {
            if let Ok(text) = std::fs::read_to_string(&path) {
                out.push((path.to_string_lossy().into_owned(), text));
            }
        }
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// `re.findall(r'__([\w-]+)__', text)`: at each start, the longest run of word characters
/// that is followed by `__` (the greedy match after backtracking), scanning left to right.
fn placeholders(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with("__") {
            let body = &text[i + 2..];
            let run: usize = body.chars().take_while(|&c| is_word(c)).map(char::len_utf8).sum();
            // The last "__" inside the run (underscores are word characters) ends the match.
            let end = (1..run.saturating_sub(1)).rev().find(|&p| body.is_char_boundary(p) && body[p..run].starts_with("__"));
            if let Some(p) = end {
                found.push(body[..p].to_string());
                i += 2 + p + 2;
                continue;
            }
        }
        i += text[i..].chars().next().map_or(1, char::len_utf8);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    // Python: re.findall(r'__([\w-]+)__', ...) gives these.
    #[test]
    fn placeholders_match_python_regex() {
        assert_eq!(placeholders("a __color__ __flower__."), ["color", "flower"]);
        assert_eq!(placeholders("__a__b__"), ["a__b"]);
        assert_eq!(placeholders("__x-y__ and ____ and __é__"), ["x-y", "é"]);
        assert!(placeholders("__ab").is_empty());
    }
}
