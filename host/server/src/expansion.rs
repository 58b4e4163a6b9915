//! The host side of `focal:plugin/expansion`: Fooocus V2's GPT-2, loaded on first use from
//! `<models>/prompt_expansion/fooocus_expansion/` and kept, run off the async runtime.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::Device;
use focal_core::services::{BoxFuture, ExpansionService};
use focal_engine::expansion::PromptExpansion;

pub struct HostExpansion {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Loaded once the folder is complete; a failed load is retried on the next request, so
    /// files installed while the server runs are picked up.
    model: Mutex<Option<Arc<PromptExpansion>>>,
}

impl HostExpansion {
    pub fn new(dir: PathBuf) -> Self {
        Self { inner: Arc::new(Inner { dir, model: Mutex::new(None) }) }
    }
}

impl Inner {
    fn model(&self) -> Result<Arc<PromptExpansion>, String> {
        let mut slot = self.model.lock().unwrap();
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let m = PromptExpansion::load_dir(&self.dir, &Device::Cpu).map_err(|e| {
            format!(
                "the Fooocus V2 expansion model is not installed ({e}). Copy Fooocus's \
                 models/prompt_expansion/fooocus_expansion folder (with positive.txt and fooocus_expansion.bin \
                 saved as pytorch_model.bin; both CC-BY-NC) to {}",
                self.dir.display()
            )
        })?;
        tracing::info!("Fooocus V2 expansion loaded from {}: vocab with {} words", self.dir.display(), m.allowed_words());
        let m = Arc::new(m);
        *slot = Some(m.clone());
        Ok(m)
    }
}

impl ExpansionService for HostExpansion {
    fn expand(&self, prompt: String, seed: u64) -> BoxFuture<'_, Result<String, String>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let work = tokio::task::spawn_blocking(move || inner.model()?.expand(&prompt, seed).map_err(|e| e.to_string()));
            work.await.map_err(|e| format!("prompt expansion failed: {e}"))?
        })
    }
}
