//! BLIP's tokenizer, as far as captioning uses it: BERT's uncased WordPiece vocabulary plus the two
//! tokens BLIP adds (`[DEC]`, the decoder's start, and `[ENC]`), the ids of the caption prompt, and
//! transformers' `decode(ids, skip_special_tokens=True)` with its tidying of spaces.
//!
//! The vocabulary is Google's `bert-base-uncased` `vocab.txt` (Apache-2.0), the file Fooocus ships in
//! `extras/BLIP/models/bert_tokenizer/`: the checkpoint holds none, so focal carries it too.

use anyhow::{bail, Result};
use focal_engine::gpt2_tokenizer::clean_up_tokenization;

const VOCAB: &str = include_str!("../../data/bert-base-uncased-vocab.txt");

/// Ids of the tokens `decode(..., skip_special_tokens=True)` drops: `[PAD]`, `[UNK]`, `[CLS]`,
/// `[SEP]`, `[MASK]` and BLIP's `[DEC]`, `[ENC]` (30522, 30523: after the vocabulary).
pub const SEP: u32 = 102;
const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

pub struct WordPiece {
    tokens: Vec<&'static str>,
}

impl WordPiece {
    pub fn bert_uncased() -> Self {
        WordPiece { tokens: VOCAB.lines().collect() }
    }

    /// `[DEC]`: `add_special_tokens({'bos_token': '[DEC]'})` appends it after the vocabulary.
    pub fn decoder_start(&self) -> u32 {
        self.tokens.len() as u32
    }

    /// Ids a model's output layer must cover: the vocabulary, `[DEC]` and `[ENC]`.
    pub fn model_vocab_size(&self) -> usize {
        self.tokens.len() + 2
    }

    /// The decoder's first ids for a prompt of whole lower-case words: BLIP tokenizes
    /// `"[CLS] words [SEP]"`, puts `[DEC]` in place of `[CLS]` and drops the `[SEP]`.
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let mut ids = vec![self.decoder_start()];
        for word in prompt.split_whitespace() {
            match self.tokens.iter().position(|t| *t == word) {
                Some(id) => ids.push(id as u32),
                None => bail!("'{word}' is not a whole word of the vocabulary"),
            }
        }
        Ok(ids)
    }

    /// transformers' `BertTokenizer.decode(ids, skip_special_tokens=True)` (4.42): special ids
    /// dropped, tokens joined by spaces with `" ##"` removed, stripped, then
    /// `clean_up_tokenization`. Ids outside the vocabulary other than BLIP's two are dropped too.
    pub fn decode(&self, ids: &[u32]) -> String {
        let words: Vec<&str> =
            ids.iter().filter_map(|&id| self.tokens.get(id as usize).copied()).filter(|token| !SPECIAL.contains(token)).collect();
        let text = words.join(" ").replace(" ##", "");
        clean_up_tokenization(text.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caption_prompt_has_blips_ids() {
        let vocab = WordPiece::bert_uncased();
        assert_eq!(vocab.prompt_ids("a picture of ").unwrap(), [30522, 1037, 3861, 1997]);
        assert_eq!(vocab.model_vocab_size(), 30524);
    }

    #[test]
    fn decode_skips_special_tokens_joins_pieces_and_tidies_punctuation() {
        let vocab = WordPiece::bert_uncased();
        // [DEC] a picture of a dog ' s ball ##s , [UNK] . [SEP] [ENC]
        let ids = [30522, 1037, 3861, 1997, 1037, 3899, 1005, 1055, 3608, 2015, 1010, 100, 1012, 102, 30523];
        assert_eq!(vocab.decode(&ids), "a picture of a dog's balls,.");
    }
}
