//! CLIP byte-level BPE tokenizer (OpenAI CLIP / open_clip `SimpleTokenizer` semantics), used for
//! both SDXL text encoders. The vocabulary ships inside the binary (MIT, see assets/clip/README.md).

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::bpe::BytePairEncoding;

/// Ids of an `embedding:NAME` word (None: unknown), asked by the tokenizer as it packs windows.
pub type EmbeddingLookup<'a> = &'a mut dyn FnMut(&str) -> Option<Vec<u32>>;

pub const BOS: u32 = 49406;
pub const EOS: u32 = 49407;
/// Tokens per chunk between BOS and EOS.
pub const CHUNK_CONTENT: usize = 75;
pub const CHUNK_LEN: usize = CHUNK_CONTENT + 2;

static VOCAB_JSON: &str = include_str!("../assets/clip/vocab.json");
static MERGES_TXT: &str = include_str!("../assets/clip/merges.txt");

pub struct ClipTokenizer {
    bpe: BytePairEncoding,
    pattern: Regex,
}

impl ClipTokenizer {
    /// The tokenizer with the bundled CLIP vocabulary.
    pub fn bundled() -> Self {
        Self::from_files(VOCAB_JSON, MERGES_TXT).expect("bundled CLIP vocabulary is valid")
    }

    pub fn from_files(vocab_json: &str, merges_txt: &str) -> Result<Self, String> {
        let pattern =
            Regex::new(r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+").unwrap();
        Ok(Self { bpe: BytePairEncoding::from_files(vocab_json, merges_txt, "</w>")?, pattern })
    }

    /// Token ids of `text` without BOS/EOS.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let text = clean_text(text);
        self.pattern.find_iter(&text).flat_map(|m| self.bpe.encode_word(m.as_str())).collect()
    }

    /// 77-token chunks `[BOS] + up to 75 tokens + [EOS]` padded with `pad`; an empty prompt
    /// still gives one chunk. Longer prompts give several chunks (ComfyUI/Fooocus concatenate
    /// their encodings).
    pub fn chunks(&self, text: &str, pad: u32) -> Vec<Vec<u32>> {
        chunk_ids(&self.encode(text), pad)
    }
}

/// How a prompt names a textual-inversion embedding.
pub const EMBEDDING_PREFIX: &str = "embedding:";

/// ComfyUI's `max_word_length`: a word of this many tokens or more may be split across windows;
/// shorter words move whole to the next one.
const MAX_WORD_TOKENS: usize = 8;

impl ClipTokenizer {
    /// ComfyUI's `tokenize_with_weights` (as Fooocus uses it): the prompt's `(text:w)` weights
    /// parsed, each space-separated word tokenized on its own, words packed into 77-token
    /// windows `[BOS] + ≤75 + [EOS]` padded with `pad`. Returns per window the ids and weights.
    pub fn weighted_chunks(&self, text: &str, pad: u32) -> Vec<(Vec<u32>, Vec<f32>)> {
        self.weighted_chunks_with(text, pad, None)
    }

    /// [`weighted_chunks`](Self::weighted_chunks) with textual-inversion embeddings: a word
    /// `embedding:NAME` becomes the ids `embed(NAME)` stands for (one per vector); a name not
    /// found is retried without trailing commas (the commas then tokenized as text), else the
    /// word is dropped, as ComfyUI's `_try_get_embedding` does. Without `embed`, such words are
    /// plain text.
    pub fn weighted_chunks_with(&self, text: &str, pad: u32, mut embed: Option<EmbeddingLookup>) -> Vec<(Vec<u32>, Vec<f32>)> {
        let mut words: Vec<Vec<(u32, f32)>> = Vec::new();
        for (segment, weight) in parse_weights(text) {
            let weight = weight as f32;
            for word in segment.replace('\n', " ").split(' ').filter(|w| !w.is_empty()) {
                let mut word = word;
                if let (Some(name), Some(embed)) = (word.strip_prefix(EMBEDDING_PREFIX), embed.as_mut()) {
                    let (ids, leftover) = match embed(name) {
                        Some(ids) => (Some(ids), ""),
                        None => {
                            let stripped = name.trim_matches(',');
                            if stripped.len() < name.len() {
                                (embed(stripped), &name[stripped.len()..])
                            } else {
                                (None, "")
                            }
                        }
                    };
                    match ids {
                        Some(ids) => words.push(ids.into_iter().map(|t| (t, weight)).collect()),
                        None => eprintln!("warning: embedding:{name} does not exist, ignoring"),
                    }
                    if leftover.is_empty() {
                        continue;
                    }
                    word = leftover;
                }
                words.push(self.encode(word).into_iter().map(|t| (t, weight)).collect());
            }
        }
        let mut windows: Vec<Vec<(u32, f32)>> = vec![vec![(BOS, 1.0)]];
        for mut group in words {
            let is_large = group.len() >= MAX_WORD_TOKENS;
            while !group.is_empty() {
                let batch = windows.last_mut().unwrap();
                if group.len() + batch.len() > CHUNK_LEN - 1 {
                    let remaining = CHUNK_LEN - batch.len() - 1;
                    if is_large {
                        batch.extend(group.drain(..remaining));
                        batch.push((EOS, 1.0));
                    } else {
                        batch.push((EOS, 1.0));
                        batch.extend(std::iter::repeat_n((pad, 1.0), remaining));
                    }
                    windows.push(vec![(BOS, 1.0)]);
                } else {
                    batch.append(&mut group);
                }
            }
        }
        let last = windows.last_mut().unwrap();
        last.push((EOS, 1.0));
        last.resize(CHUNK_LEN, (pad, 1.0));
        windows.into_iter().map(|w| w.into_iter().unzip()).collect()
    }
}

/// ComfyUI's `token_weights` with `escape_important`: `(text)` multiplies the weight by 1.1
/// (nesting multiplies), `(text:1.3)` sets it (the number after the last `:`), `\(` and `\)` are
/// literal parentheses. Returns (text, weight) segments in order.
pub fn parse_weights(text: &str) -> Vec<(String, f64)> {
    // Escaped parentheses become private markers while parsing, as ComfyUI does.
    const OPEN: &str = "\0\u{2}";
    const CLOSE: &str = "\0\u{1}";
    let escaped = text.replace("\\)", CLOSE).replace("\\(", OPEN);
    token_weights(&escaped, 1.0).into_iter().map(|(t, w)| (t.replace(CLOSE, ")").replace(OPEN, "("), w)).collect()
}

/// ComfyUI's `parse_parentheses`: top-level parenthesised groups and the text between them.
fn parse_parentheses(s: &str) -> Vec<String> {
    let mut result = Vec::new();
    let mut current = String::new();
    let mut level: i32 = 0;
    for c in s.chars() {
        match c {
            '(' => {
                if level == 0 {
                    if !current.is_empty() {
                        result.push(std::mem::take(&mut current));
                    }
                    current.push('(');
                } else {
                    current.push(c);
                }
                level += 1;
            }
            ')' => {
                level -= 1;
                if level == 0 {
                    current.push(')');
                    result.push(std::mem::take(&mut current));
                } else {
                    current.push(c);
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        result.push(current);
    }
    result
}

fn token_weights(s: &str, weight: f64) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for x in parse_parentheses(s) {
        if x.chars().count() >= 2 && x.starts_with('(') && x.ends_with(')') {
            let mut inner = &x[1..x.len() - 1];
            let mut w = weight * 1.1;
            // A number after the last ':' (not at the start) replaces the weight.
            if let Some(colon) = inner.rfind(':').filter(|&i| i > 0) {
                if let Some(v) = python_float(&inner[colon + 1..]) {
                    w = v;
                    inner = &inner[..colon];
                }
            }
            out.extend(token_weights(inner, w));
        } else {
            out.push((x, weight));
        }
    }
    out
}

/// Python's `float(str)`: surrounding whitespace allowed, also `inf`/`nan` spellings.
fn python_float(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() || t.contains('_') && (t.starts_with('_') || t.ends_with('_') || t.contains("__")) {
        return None;
    }
    t.replace('_', "").parse::<f64>().ok()
}

pub fn chunk_ids(ids: &[u32], pad: u32) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    let mut pieces: Vec<&[u32]> = ids.chunks(CHUNK_CONTENT).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    for piece in pieces {
        let mut chunk = Vec::with_capacity(CHUNK_LEN);
        chunk.push(BOS);
        chunk.extend_from_slice(piece);
        chunk.push(EOS);
        chunk.resize(CHUNK_LEN, pad);
        out.push(chunk);
    }
    out
}

/// open_clip's front end: `ftfy.fix_text` (the parts that matter for prompts: quote
/// uncurling, ligatures, full-width forms, NFC), `html.unescape` twice, whitespace collapse,
/// lower-case.
pub fn clean_text(text: &str) -> String {
    let fixed: String = text.nfc().map(fix_char).collect::<String>();
    let unescaped = html_unescape(&html_unescape(&fixed));
    let collapsed = unescaped.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.to_lowercase()
}

fn fix_char(c: char) -> char {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => '"',
        // Full-width ASCII variants.
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFF01 + 0x21).unwrap(),
        '\u{3000}' => ' ',
        _ => c,
    }
}

/// Python's `html.unescape` for numeric references and the common named entities.
fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    const NAMED: &[(&str, char)] = &[
        ("amp", '&'),
        ("lt", '<'),
        ("gt", '>'),
        ("quot", '"'),
        ("apos", '\''),
        ("nbsp", '\u{a0}'),
        ("copy", '©'),
        ("reg", '®'),
        ("hellip", '…'),
        ("mdash", '—'),
        ("ndash", '–'),
    ];
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let end = rest[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '#')).map(|e| e + 1).unwrap_or(rest.len());
        let name = &rest[1..end];
        let decoded = if let Some(num) = name.strip_prefix('#') {
            let v = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse::<u32>().ok(),
            };
            v.and_then(char::from_u32)
        } else {
            NAMED.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
        };
        match decoded {
            Some(c) if !name.is_empty() => {
                out.push(c);
                rest = &rest[end..];
                if rest.starts_with(';') {
                    rest = &rest[1..];
                }
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
