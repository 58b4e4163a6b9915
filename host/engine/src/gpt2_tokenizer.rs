//! GPT-2's tokenizer as transformers' `GPT2Tokenizer(Fast)` runs it with the stock files
//! (`vocab.json`, `merges.txt`; byte-level, no prefix space, `<|endoftext|>` as the only special
//! token), and its `decode(skip_special_tokens=True)` with `clean_up_tokenization_spaces`.

use regex::Regex;

use crate::bpe::BytePairEncoding;

pub const END_OF_TEXT: u32 = 50256;
const END_OF_TEXT_STR: &str = "<|endoftext|>";

pub struct Gpt2Tokenizer {
    bpe: BytePairEncoding,
    /// GPT-2's split pattern without its `\s+(?!\S)` look-ahead, which `split` applies by hand.
    pattern: Regex,
}

impl Gpt2Tokenizer {
    pub fn from_files(vocab_json: &str, merges_txt: &str) -> Result<Self, String> {
        let pattern = Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+").unwrap();
        Ok(Self { bpe: BytePairEncoding::from_files(vocab_json, merges_txt, "")?, pattern })
    }

    pub fn from_dir(dir: &std::path::Path) -> Result<Self, String> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()));
        Self::from_files(&read("vocab.json")?, &read("merges.txt")?)
    }

    pub fn vocab_size(&self) -> usize {
        self.bpe.vocab_size()
    }

    /// The id of a vocabulary entry in its byte-mapped spelling (`Ġword` for " word").
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.bpe.token_id(token)
    }

    /// Token ids of `text`; a literal `<|endoftext|>` is the special token.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for (k, piece) in text.split(END_OF_TEXT_STR).enumerate() {
            if k > 0 {
                ids.push(END_OF_TEXT);
            }
            for word in self.split(piece) {
                ids.extend(self.bpe.encode_word(word));
            }
        }
        ids
    }

    /// GPT-2's pre-tokenizer: like the pattern, except that a run of whitespace followed by
    /// a non-space leaves its last character to start the next piece (`\s+(?!\S)`).
    fn split<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut pieces = Vec::new();
        let mut pos = 0;
        while let Some(m) = self.pattern.find_at(text, pos) {
            let piece = m.as_str();
            let mut end = m.end();
            if piece.chars().all(char::is_whitespace) && end < text.len() && piece.chars().count() > 1 {
                end -= piece.chars().last().unwrap().len_utf8();
            }
            pieces.push(&text[m.start()..end]);
            pos = end;
        }
        pieces
    }

    /// transformers' `decode(ids, skip_special_tokens=True)` with its default space clean-up.
    pub fn decode(&self, ids: &[u32]) -> String {
        let ids: Vec<u32> = ids.iter().copied().filter(|&id| id != END_OF_TEXT).collect();
        let text = String::from_utf8_lossy(&self.bpe.decode_bytes(&ids)).into_owned();
        clean_up_tokenization(&text)
    }
}

/// transformers' `clean_up_tokenization` (every tokenizer's `decode`): spaces before punctuation and
/// English contractions removed.
pub fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}
