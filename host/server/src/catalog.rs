//! `focal:plugin/catalog`: the names the engine accepts, read from the engine's own tables, the
//! models folder (rescanned on every call) and the loaded plugins.

use std::sync::Arc;

use focal_core::services::{Catalog, CatalogService};
use focal_engine::{Sampler, Scheduler};
use focal_models::ModelsDir;

use crate::steps::PluginSteps;

pub struct HostCatalog {
    pub models: ModelsDir,
    pub steps: Arc<PluginSteps>,
}

impl CatalogService for HostCatalog {
    fn list(&self, catalog: Catalog) -> Vec<String> {
        let names = |v: Vec<&str>| v.into_iter().map(String::from).collect();
        match catalog {
            Catalog::Samplers => names(Sampler::names()),
            Catalog::Schedulers => names(Scheduler::names()),
            Catalog::Checkpoints => self.models.list("checkpoints"),
            Catalog::Loras => self.models.list("loras"),
            Catalog::Vaes => self.models.list("vae"),
            Catalog::Upscalers => self.models.list("upscale_models"),
            Catalog::InpaintModels => self.models.list("inpaint"),
            Catalog::Controls => {
                crate::jobs::IMAGE_PROMPT_KINDS.iter().chain(&crate::jobs::CONTROLNET_KINDS).map(|(kind, _)| kind.to_string()).collect()
            }
            Catalog::ImageSteps => self.steps.image_steps(),
        }
    }
}
