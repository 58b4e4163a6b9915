//! The application assembled once for every front: the job manager on the engine, the services
//! plugins are granted, the plugin host and its registry. `focal serve` puts HTTP in front of
//! it; `focal generate` sends one request through the same plugins in-process, so both parse a
//! Fooocus-API request with the same code (the `fooocus_api` plugin's).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use candle_core::DType;
use focal_models::ModelsDir;
use focal_runtime::services::Services;
use focal_runtime::PluginHost;
use focal_server::catalog::HostCatalog;
use focal_server::describe::HostDescribe;
use focal_server::expansion::HostExpansion;
use focal_server::faces::HostFaces;
use focal_server::fetch::{FetchPolicy, Fetcher};
use focal_server::images::Images;
use focal_server::jobs::{JobManager, JobOptions};
use focal_server::limits::RequestLimits;
use focal_server::outputs::Outputs;
use focal_server::steps::PluginSteps;
use focal_server::webhook::{WebhookPolicy, Webhooks};
use focal_server::Registry;

use crate::serve::Dirs;

/// What the application is built from (the fronts fill it from their options).
pub struct AppConfig<'a> {
    pub models_dir: PathBuf,
    /// The default checkpoint (a file; fetched on first use when `downloads` names it).
    pub checkpoint: PathBuf,
    /// Checkpoint file name → URL (the preset's).
    pub downloads: BTreeMap<String, String>,
    /// Whether missing models may be fetched at all (`focal generate` never downloads).
    pub allow_downloads: bool,
    /// Checkpoints named by the operator outside the models folder, by file name.
    pub extra_checkpoints: BTreeMap<String, PathBuf>,
    pub dtype: DType,
    /// The VAE's dtype (`--vae-dtype`; `None`: the engine's default).
    pub vae_dtype: Option<DType>,
    /// Where the engine runs (`--device`).
    pub device: candle_core::Device,
    pub outputs_dir: PathBuf,
    /// The job database.
    pub database: PathBuf,
    pub max_queue: usize,
    pub max_history: usize,
    pub webhook_url: Option<String>,
    /// Send webhooks at all (`focal generate` sends none).
    pub webhooks: bool,
    pub base_url: String,
    pub limits: RequestLimits,
    pub allow_private_fetch: bool,
    /// The operator's image steps, run on every saved image after the job's own.
    pub output_steps: Vec<focal_core::StepCall>,
    /// Host settings plugins read as `host.<key>`.
    pub settings: BTreeMap<String, String>,
    /// Tenants (keys and quotas); `None` when this front has none.
    pub tenants: Option<Arc<focal_server::tenants::TenantStore>>,
    pub dirs: &'a Dirs,
}

pub struct App {
    pub host: Arc<PluginHost>,
    pub registry: Arc<Registry>,
    pub jobs: Arc<JobManager>,
}

impl App {
    /// Start the job worker and load the plugins. Runs inside a tokio runtime (the engine
    /// worker runs the prompt and image steps on it).
    pub fn start(config: AppConfig<'_>) -> Result<App> {
        let models = ModelsDir::new(&config.models_dir);
        let webhooks = if config.webhooks { Some(Webhooks::start(WebhookPolicy::default())?) } else { None };
        let jobs = JobManager::start(
            JobOptions {
                models: models.clone(),
                downloads: config.downloads,
                allow_downloads: config.allow_downloads,
                extra_checkpoints: config.extra_checkpoints,
                dtype: config.dtype,
                vae_dtype: config.vae_dtype,
                device: config.device,
                default_checkpoint: config.checkpoint,
                max_queue: config.max_queue,
                max_history: config.max_history,
                webhook_url: config.webhook_url,
                base_url: config.base_url.clone(),
                database: config.database,
                outputs: Outputs::new(&config.outputs_dir),
                limits: config.limits,
                output_steps: config.output_steps.clone(),
                tenants: config.tenants.clone(),
            },
            webhooks,
        )?;
        let fetch = Fetcher::new(FetchPolicy { allow_private: config.allow_private_fetch, ..Default::default() })?;
        // Prompt and image steps run on this runtime for the engine worker; bound to the
        // plugins below.
        let steps = PluginSteps::new(tokio::runtime::Handle::current());
        jobs.set_prompt_pipeline(steps.clone());
        jobs.set_image_pipeline(steps.clone());
        let services = Services {
            engine: Some(jobs.clone()),
            catalog: Some(Arc::new(HostCatalog { models: models.clone(), steps: steps.clone() })),
            images: Some(Arc::new(Images { limits: config.limits.image })),
            files: Some(Arc::new(Outputs::new(&config.outputs_dir))),
            fetch: Some(Arc::new(fetch)),
            expansion: Some(Arc::new(HostExpansion::new(models.folder("prompt_expansion/fooocus_expansion")))),
            prompts: Some(steps.clone()),
            describe: Some(Arc::new(HostDescribe::new(models.folder("clip_vision"), config.allow_downloads, config.limits.image))),
            faces: Some(Arc::new(HostFaces::new(models.folder("controlnet"), config.allow_downloads, config.limits.image))),
            upscaler: None,
        };
        let mut settings = config.settings;
        settings.insert("base-url".to_string(), config.base_url);
        let host = Arc::new(config.dirs.plugin_host(services, settings, Some(models.folder("wildcards")))?);
        let registry = Registry::with_builtins(&host, &config.dirs.plugins_dir(), focal_runtime::builtin::PLUGINS);
        steps.attach(host.clone(), registry.clone());
        let loaded = steps.image_steps();
        if let Some(missing) = config.output_steps.iter().find(|s| !loaded.contains(&s.plugin)) {
            anyhow::bail!("output step '{}' is not a loaded image-step plugin (loaded: [{}])", missing.plugin, loaded.join(", "));
        }
        Ok(App { host, registry, jobs })
    }
}
