//! CLIP byte-level BPE tokenizer (OpenAI CLIP / open_clip `SimpleTokenizer` semantics), used for
//! both SDXL text encoders. The vocabulary ships inside the binary (MIT, see assets/clip/README.md).

use std::collections::HashMap;
use std::sync::Mutex;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

pub const BOS: u32 = 49406;
pub const EOS: u32 = 49407;
/// Tokens per chunk between BOS and EOS.
pub const CHUNK_CONTENT: usize = 75;
pub const CHUNK_LEN: usize = CHUNK_CONTENT + 2;

static VOCAB_JSON: &str = include_str!("../assets/clip/vocab.json");
static MERGES_TXT: &str = include_str!("../assets/clip/merges.txt");

pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    merge_ranks: HashMap<(String, String), usize>,
    byte_to_char: [char; 256],
    pattern: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

/// GPT-2's reversible map from bytes to printable unicode characters.
fn bytes_to_unicode() -> [char; 256] {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        table[b as usize] = if printable.contains(&b) {
            char::from_u32(b).unwrap()
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap()
        };
    }
    table
}

impl ClipTokenizer {
    /// The tokenizer with the bundled CLIP vocabulary.
    pub fn bundled() -> Self {
        Self::from_files(VOCAB_JSON, MERGES_TXT).expect("bundled CLIP vocabulary is valid")
    }

    pub fn from_files(vocab_json: &str, merges_txt: &str) -> Result<Self, String> {
        let encoder: HashMap<String, u32> =
            serde_json::from_str(vocab_json).map_err(|e| format!("vocab.json: {e}"))?;
        let merge_ranks = merges_txt
            .lines()
            .skip(1) // "#version: 0.2"
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(rank, line)| {
                let (a, b) = line.split_once(' ').ok_or_else(|| format!("merges.txt: bad line '{line}'"))?;
                Ok(((a.to_string(), b.to_string()), rank))
            })
            .collect::<Result<_, String>>()?;
        let pattern = Regex::new(
            r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .unwrap();
        Ok(Self { encoder, merge_ranks, byte_to_char: bytes_to_unicode(), pattern, cache: Mutex::new(HashMap::new()) })
    }

    /// Token ids of `text` without BOS/EOS.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let text = clean_text(text);
        let mut ids = Vec::new();
        for m in self.pattern.find_iter(&text) {
            let word: String = m.as_str().bytes().map(|b| self.byte_to_char[b as usize]).collect();
            ids.extend(self.bpe(&word));
        }
        ids
    }

    fn bpe(&self, word: &str) -> Vec<u32> {
        if let Some(ids) = self.cache.lock().unwrap().get(word) {
            return ids.clone();
        }
        let mut parts: Vec<String> = word.chars().map(String::from).collect();
        if let Some(last) = parts.last_mut() {
            last.push_str("</w>");
        }
        while parts.len() > 1 {
            let best = parts
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.merge_ranks.get(&(w[0].clone(), w[1].clone())).map(|r| (*r, i)))
                .min();
            let Some((_, _)) = best else { break };
            let (a, b) = {
                let i = best.unwrap().1;
                (parts[i].clone(), parts[i + 1].clone())
            };
            // Merge every occurrence of the best pair, left to right.
            let mut merged = Vec::with_capacity(parts.len());
            let mut i = 0;
            while i < parts.len() {
                if i + 1 < parts.len() && parts[i] == a && parts[i + 1] == b {
                    merged.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    merged.push(parts[i].clone());
                    i += 1;
                }
            }
            parts = merged;
        }
        let ids: Vec<u32> = parts.iter().filter_map(|p| self.encoder.get(p).copied()).collect();
        self.cache.lock().unwrap().insert(word.to_string(), ids.clone());
        ids
    }

    /// 77-token chunks `[BOS] + up to 75 tokens + [EOS]` padded with `pad`; an empty prompt
    /// still gives one chunk. Longer prompts give several chunks (ComfyUI/Fooocus concatenate
    /// their encodings).
    pub fn chunks(&self, text: &str, pad: u32) -> Vec<Vec<u32>> {
        chunk_ids(&self.encode(text), pad)
    }
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
        ("amp", '&'), ("lt", '<'), ("gt", '>'), ("quot", '"'), ("apos", '\''), ("nbsp", '\u{a0}'),
        ("copy", '©'), ("reg", '®'), ("hellip", '…'), ("mdash", '—'), ("ndash", '–'),
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
