//! Fooocus V2 prompt expansion (`extras/expansion.py:FooocusExpansion`): GPT-2 continues the
//! prompt with comma-separated words from an allowed list until the prompt fills a whole number
//! of 75-token windows.
//!
//! Per step, as Fooocus's logits processor and transformers' sampler do: every token outside the
//! allowed words gets −8192 added, so does every token already in the sequence (no repeats), the
//! comma (id 11) is always allowed; then the 100 best logits are kept (`top_k=100`), softmaxed, and
//! one token drawn with torch's `multinomial` from `torch.manual_seed(seed mod 2³²)`.
//!
//! The model (`pytorch_model.bin`, Fooocus's `fooocus_expansion.bin`) and the word list
//! (`positive.txt`) are CC-BY-NC: focal never ships them; they are read from the models folder.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::error::{EngineError, Result};
use crate::gpt2::{Gpt2Config, Gpt2Model, KvCache};
use crate::gpt2_tokenizer::Gpt2Tokenizer;
use crate::logits::{softmax, top_k_filter};
use crate::rng::TorchRng;

/// Fooocus's `neg_inf`.
const BLOCKED: f32 = -8192.0;
const COMMA: u32 = 11;
const TOP_K: usize = 100;
/// CLIP's window content length: the expansion fills the prompt up to a multiple of it.
const WINDOW: usize = 75;

/// Files the expansion folder must hold (`models/prompt_expansion/fooocus_expansion/`).
pub const REQUIRED_FILES: [&str; 4] = ["config.json", "vocab.json", "merges.txt", "positive.txt"];

pub struct PromptExpansion {
    model: Gpt2Model,
    tokenizer: Gpt2Tokenizer,
    /// 0 for allowed words, −8192 elsewhere.
    bias: Vec<f32>,
}

/// Fooocus's `safe_str`: double spaces collapsed (16 passes), `",. \r\n"` stripped at both ends.
pub fn safe_str(text: &str) -> String {
    let mut s = text.to_string();
    for _ in 0..16 {
        s = s.replace("  ", " ");
    }
    s.trim_matches(|c| ",. \r\n".contains(c)).to_string()
}

impl PromptExpansion {
    /// The expansion model folder: `config.json`, `vocab.json`, `merges.txt`, `positive.txt` and
    /// the weights (`pytorch_model.bin` or `model.safetensors`).
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        let missing: Vec<&str> = REQUIRED_FILES.iter().copied().filter(|f| !dir.join(f).is_file()).collect();
        let weights = weights_file(dir);
        if !missing.is_empty() || weights.is_none() {
            let mut names: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
            if weights.is_none() {
                names.push("pytorch_model.bin (Fooocus's fooocus_expansion.bin)".into());
            }
            return Err(EngineError::invalid("prompt_expansion", format!("{} lacks {}", dir.display(), names.join(", "))));
        }
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| EngineError::invalid("prompt_expansion", format!("{}: {e}", dir.join(name).display())))
        };
        let config = Gpt2Config::from_json(&read("config.json")?).map_err(|e| EngineError::invalid("prompt_expansion", e))?;
        let tokenizer = Gpt2Tokenizer::from_files(&read("vocab.json")?, &read("merges.txt")?)
            .map_err(|e| EngineError::invalid("prompt_expansion", e))?;
        let words: Vec<String> = read("positive.txt")?.lines().filter(|w| !w.is_empty()).map(str::to_string).collect();
        let model = Gpt2Model::load(weights.as_ref().unwrap(), config, DType::F32, device)?;
        Ok(Self::new(model, tokenizer, &words))
    }

    /// `words` are the allowed continuation words (Fooocus: `positive.txt`), matched lower-cased
    /// with a leading space as whole vocabulary entries; words that are no single token are unused.
    pub fn new(model: Gpt2Model, tokenizer: Gpt2Tokenizer, words: &[String]) -> Self {
        let mut bias = vec![BLOCKED; model.config.vocab_size];
        for word in words {
            if let Some(id) = tokenizer.token_id(&format!("Ġ{}", word.to_lowercase())) {
                if let Some(b) = bias.get_mut(id as usize) {
                    *b = 0.0;
                }
            }
        }
        Self { model, tokenizer, bias }
    }

    /// How many of the words are usable (Fooocus logs "Vocab with N words").
    pub fn allowed_words(&self) -> usize {
        self.bias.iter().filter(|&&b| b == 0.0).count()
    }

    /// `FooocusExpansion(prompt, seed)`: `''` for an empty prompt, else the prompt followed by
    /// the sampled words, through `safe_str`.
    pub fn expand(&self, prompt: &str, seed: u64) -> Result<String> {
        if prompt.is_empty() {
            return Ok(String::new());
        }
        let text = format!("{},", safe_str(prompt));
        let mut ids = self.tokenizer.encode(&text);
        let n = ids.len();
        let max_new = WINDOW * n.div_ceil(WINDOW) - n;
        if max_new == 0 {
            return Ok(text[..text.len() - 1].to_string());
        }
        let mut rng = TorchRng::new(seed % (1u64 << 32));
        let mut cache = KvCache::default();
        let mut logits = self.model.next_logits(&ids, &mut cache)?;
        for step in 0..max_new {
            let next = self.pick(&mut logits, &ids, &mut rng);
            ids.push(next);
            if step + 1 < max_new {
                logits = self.model.next_logits(&[next], &mut cache)?;
            }
        }
        Ok(safe_str(&self.tokenizer.decode(&ids)))
    }

    /// One sampling step on the raw logits (overwritten).
    fn pick(&self, logits: &mut [f32], seen: &[u32], rng: &mut TorchRng) -> u32 {
        let mut bias = self.bias.clone();
        for &id in seen {
            bias[id as usize] = BLOCKED;
        }
        bias[COMMA as usize] = 0.0;
        for (l, b) in logits.iter_mut().zip(&bias) {
            *l += b;
        }
        top_k_filter(logits, TOP_K);
        let probs = softmax(logits);
        rng.multinomial_one(&probs)
    }

    pub fn tokenizer(&self) -> &Gpt2Tokenizer {
        &self.tokenizer
    }
}

fn weights_file(dir: &Path) -> Option<PathBuf> {
    ["pytorch_model.bin", "model.safetensors", "fooocus_expansion.bin"].iter().map(|f| dir.join(f)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_str_follows_fooocus() {
        assert_eq!(safe_str("  a    cat ,. "), "a cat");
        assert_eq!(safe_str(".,\r\n"), "");
    }
}
