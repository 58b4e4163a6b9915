//! The prompt-step plugins as the job worker (one pipeline run per image) and endpoint plugins
//! (`focal:plugin/prompts`: the styles on offer) see them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use focal_runtime::prompts::{self, PromptInput, PromptOutput};
use focal_runtime::services::{BoxFuture, PromptService};
use focal_runtime::PluginHost;

use crate::jobs::PromptPipeline;
use crate::registry::Registry;

/// Bound to the host and registry once both exist (the host needs the services first).
pub struct PluginPrompts {
    plugins: OnceLock<(Arc<PluginHost>, Arc<Registry>)>,
    runtime: tokio::runtime::Handle,
    /// Style names per component digest: a step's list only changes with its code.
    styles: Mutex<HashMap<String, Vec<String>>>,
}

impl PluginPrompts {
    /// `runtime` runs the steps for the (non-async) job worker.
    pub fn new(runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(Self { plugins: OnceLock::new(), runtime, styles: Mutex::new(HashMap::new()) })
    }

    pub fn attach(&self, host: Arc<PluginHost>, registry: Arc<Registry>) {
        let _ = self.plugins.set((host, registry));
    }
}

impl PromptService for PluginPrompts {
    fn styles(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            let Some((host, registry)) = self.plugins.get() else { return vec![] };
            let mut all = Vec::new();
            for step in registry.prompt_steps() {
                let cached = self.styles.lock().unwrap().get(&step.digest).cloned();
                let names = match cached {
                    Some(names) => names,
                    None => match host.prompt_styles(&step).await {
                        Ok(names) => {
                            self.styles.lock().unwrap().insert(step.digest.clone(), names.clone());
                            names
                        }
                        Err(e) => {
                            tracing::warn!(plugin = %step.manifest.name, "cannot list styles: {e}");
                            vec![]
                        }
                    },
                };
                all.extend(names);
            }
            all
        })
    }
}

impl PromptPipeline for PluginPrompts {
    fn run(&self, input: PromptInput) -> Result<PromptOutput, String> {
        match self.plugins.get() {
            Some((host, registry)) => self.runtime.block_on(prompts::run(host, &registry.prompt_steps(), input)),
            None => Ok(prompts::assemble(prompts::initial_task(input))),
        }
    }
}
