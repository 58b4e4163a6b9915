//! Textual-inversion embeddings from the models folder's `embeddings/`, as ComfyUI's
//! `load_embed` finds and reads them: `NAME`, else `NAME.safetensors`, inside the folder only;
//! the tensor under the encoder's key (`clip_l` / `clip_g` for SDXL embeddings), else the
//! file's first tensor (single-encoder files such as SD1.5 ones), as `[vectors, width]`.
//! Pickled `.pt`/`.bin` embeddings are not read: loading them can run code.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

pub struct Embeddings {
    dir: PathBuf,
    /// Parsed files by name, so repeats load once.
    cache: Mutex<HashMap<String, HashMap<String, Tensor>>>,
}

impl Embeddings {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), cache: Mutex::new(HashMap::new()) }
    }

    fn find(&self, name: &str) -> Option<PathBuf> {
        let rel = Path::new(name);
        if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return None;
        }
        let exact = self.dir.join(rel);
        if exact.is_file() {
            return Some(exact);
        }
        let with_ext = self.dir.join(format!("{name}.safetensors"));
        with_ext.is_file().then_some(with_ext)
    }

    /// The vectors `NAME` holds for the encoder `key`, `[n, width]` in f32.
    pub fn vectors(&self, name: &str, key: &str) -> Option<Tensor> {
        let mut cache = self.cache.lock().unwrap();
        if !cache.contains_key(name) {
            // Misses are not kept: a file added later is found by the next prompt.
            let path = self.find(name).filter(|p| p.extension().and_then(|e| e.to_str()) == Some("safetensors"))?;
            let tensors = candle_core::safetensors::load(&path, &Device::Cpu).ok()?;
            cache.insert(name.to_string(), tensors);
        }
        let tensors = &cache[name];
        let t = tensors.get(key).or_else(|| {
            let mut names: Vec<&String> = tensors.keys().collect();
            names.sort();
            names.first().and_then(|n| tensors.get(*n))
        })?;
        let width = *t.dims().last()?;
        t.to_dtype(DType::F32).ok()?.reshape(((), width)).ok()
    }
}
