//! Byte-level BPE as OpenAI's GPT-2 and CLIP tokenizers share it: text bytes mapped to printable
//! characters, then merged pair by pair in `merges.txt` rank order. CLIP marks word ends with
//! `</w>`; GPT-2 has no marker and keeps a leading space inside the word (`Ġ`).

use std::collections::HashMap;
use std::sync::Mutex;

pub struct BytePairEncoding {
    encoder: HashMap<String, u32>,
    /// Token strings by id (for decoding).
    decoder: Vec<String>,
    merge_ranks: HashMap<(String, String), usize>,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    /// Appended to a word's last symbol before merging (`</w>` for CLIP, empty for GPT-2).
    word_end: &'static str,
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

impl BytePairEncoding {
    /// From `vocab.json` (token → id) and `merges.txt` (first line `#version…`, then one pair per line).
    pub fn from_files(vocab_json: &str, merges_txt: &str, word_end: &'static str) -> Result<Self, String> {
        let encoder: HashMap<String, u32> = serde_json::from_str(vocab_json).map_err(|e| format!("vocab.json: {e}"))?;
        let mut decoder = vec![String::new(); encoder.values().map(|&v| v as usize + 1).max().unwrap_or(0)];
        for (token, &id) in &encoder {
            decoder[id as usize] = token.clone();
        }
        let merge_ranks = merges_txt
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("#version"))
            .enumerate()
            .map(|(rank, line)| {
                let (a, b) = line.split_once(' ').ok_or_else(|| format!("merges.txt: bad line '{line}'"))?;
                Ok(((a.to_string(), b.to_string()), rank))
            })
            .collect::<Result<_, String>>()?;
        let byte_to_char = bytes_to_unicode();
        let char_to_byte = byte_to_char.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        Ok(Self { encoder, decoder, merge_ranks, byte_to_char, char_to_byte, word_end, cache: Mutex::new(HashMap::new()) })
    }

    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }

    /// The id of a vocabulary entry written in its byte-mapped form (`Ġword`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.encoder.get(token).copied()
    }

    /// Token ids of one pre-tokenized word (raw text; its bytes are mapped here).
    pub fn encode_word(&self, word: &str) -> Vec<u32> {
        let mapped: String = word.bytes().map(|b| self.byte_to_char[b as usize]).collect();
        if let Some(ids) = self.cache.lock().unwrap().get(&mapped) {
            return ids.clone();
        }
        let ids: Vec<u32> = self.merge(&mapped).iter().filter_map(|p| self.encoder.get(p).copied()).collect();
        self.cache.lock().unwrap().insert(mapped, ids.clone());
        ids
    }

    fn merge(&self, word: &str) -> Vec<String> {
        let mut parts: Vec<String> = word.chars().map(String::from).collect();
        if let Some(last) = parts.last_mut() {
            last.push_str(self.word_end);
        }
        while parts.len() > 1 {
            let best = parts
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.merge_ranks.get(&(w[0].clone(), w[1].clone())).map(|r| (*r, i)))
                .min();
            let Some((_, i)) = best else { break };
            let (a, b) = (parts[i].clone(), parts[i + 1].clone());
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
        parts
    }

    /// The bytes that `ids` stand for (unknown ids contribute nothing).
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        ids.iter()
            .filter_map(|&id| self.decoder.get(id as usize))
            .flat_map(|token| token.chars())
            .filter_map(|c| self.char_to_byte.get(&c).copied())
            .collect()
    }
}
