//! The step plugins as the job worker sees them (prompt steps: one pipeline run per image;
//! image steps: the job's `post_steps` on each image it saves; the image-task component: the
//! pixel work of image tasks) and as endpoint plugins see them
//! (`focal:plugin/prompts`: the styles on offer; `catalog.image-steps`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use focal_core::image_task::{ImageTaskCall, ImageTaskOutput, UpscaleService};
use focal_core::services::{BoxFuture, PromptService};
use focal_core::{Image, StepCall};
use focal_runtime::prompts::{self, PromptInput, PromptOutput};
use focal_runtime::{PluginHost, World};

use crate::jobs::{ImagePipeline, PromptPipeline};
use crate::registry::Registry;

/// The image-task component jobs call: the built-in one, or a plugin of that name that
/// replaces it.
pub const IMAGE_TASKS_PLUGIN: &str = "fooocus-image-tasks";

/// Bound to the host and registry once both exist (the host needs the services first).
pub struct PluginSteps {
    plugins: OnceLock<(Arc<PluginHost>, Arc<Registry>)>,
    runtime: tokio::runtime::Handle,
    /// Style names per component digest: a step's list only changes with its code.
    styles: Mutex<HashMap<String, Vec<String>>>,
}

impl PluginSteps {
    /// `runtime` runs the steps for the (non-async) job worker.
    pub fn new(runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(Self { plugins: OnceLock::new(), runtime, styles: Mutex::new(HashMap::new()) })
    }

    pub fn attach(&self, host: Arc<PluginHost>, registry: Arc<Registry>) {
        let _ = self.plugins.set((host, registry));
    }

    /// Names of the loaded image steps.
    pub fn image_steps(&self) -> Vec<String> {
        let Some((_, registry)) = self.plugins.get() else { return vec![] };
        registry.plugins().iter().filter(|p| p.world() == World::ImageStep).map(|p| p.manifest.name.clone()).collect()
    }
}

impl PromptService for PluginSteps {
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

impl PromptPipeline for PluginSteps {
    fn run(&self, input: PromptInput) -> Result<PromptOutput, String> {
        match self.plugins.get() {
            Some((host, registry)) => self.runtime.block_on(prompts::run(host, &registry.prompt_steps(), input)),
            None => Ok(prompts::assemble(prompts::initial_task(input))),
        }
    }
}

impl ImagePipeline for PluginSteps {
    fn run(&self, steps: &[StepCall], mut image: Image) -> Result<Image, String> {
        let Some((host, registry)) = self.plugins.get() else { return Err("no image steps are loaded".into()) };
        for call in steps {
            let name = &call.plugin;
            let step = registry
                .plugins()
                .into_iter()
                .find(|p| p.world() == World::ImageStep && &p.manifest.name == name)
                .ok_or_else(|| format!("image step '{name}' is not loaded"))?;
            let result = self.runtime.block_on(host.process_image(&step, image, &call.options));
            image = result.map_err(|e| format!("image step '{name}': {e}"))?.map_err(|e| format!("image step '{name}': {e}"))?;
        }
        Ok(image)
    }

    fn task(&self, call: ImageTaskCall, upscaler: Arc<dyn UpscaleService>) -> Result<ImageTaskOutput, String> {
        let Some((host, registry)) = self.plugins.get() else { return Err("no image-task component is loaded".into()) };
        let component = registry
            .plugins()
            .into_iter()
            .find(|p| p.world() == World::ImageTask && p.manifest.name == IMAGE_TASKS_PLUGIN)
            .ok_or_else(|| format!("the image-task component '{IMAGE_TASKS_PLUGIN}' is not loaded"))?;
        let result = self.runtime.block_on(host.image_task(&component, call, Some(upscaler)));
        result.map_err(|e| e.to_string())?.map_err(|e| format!("{IMAGE_TASKS_PLUGIN}: {e}"))
    }
}
