//! `focal serve` and `focal plugins`: the HTTP server and what it has loaded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use focal_models::{ModelsDir, Preset};
use focal_runtime::services::Services;
use focal_runtime::{HostOptions, PluginHost};
use focal_server::limits::RequestLimits;
use focal_server::tenants::TenantStore;
use focal_server::Registry;

use crate::app::{App, AppConfig};

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8888)]
    port: u16,
    /// Prefix of result URLs (default http://HOST:PORT, 0.0.0.0 shown as 127.0.0.1).
    #[arg(long)]
    base_url: Option<String>,
    /// Fooocus-style models folder (checkpoints in DIR/checkpoints, LoRAs in DIR/loras).
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// The default SDXL checkpoint (a file in DIR/checkpoints or a path).
    #[arg(long, default_value = "juggernautXL_v8Rundiffusion.safetensors")]
    base_model: String,
    /// A Fooocus preset (default, anime, lcm, lightning, playground_v2.5, pony_v6, realistic,
    /// sai) or preset file: its `default_model` becomes the default checkpoint, downloaded on
    /// first use when missing.
    #[arg(long)]
    preset: Option<String>,
    /// Where result images are written (OUTPUTS/files/<date>/<name>).
    #[arg(long, default_value = "outputs")]
    outputs_dir: PathBuf,
    /// Jobs waiting or running at once; more get QUEUE_IS_FULL.
    #[arg(long, default_value_t = 100)]
    queue_size: usize,
    /// Finished jobs kept; older ones are deleted with their files (0 keeps all).
    #[arg(long, default_value_t = 0)]
    queue_history: usize,
    /// Webhook called when a job ends (a request's own webhook_url takes precedence).
    #[arg(long)]
    webhook_url: Option<String>,
    /// Answer job-history in the seed's --persistent shape (params + task_info, paged).
    /// Job records are always kept in DATA_DIR/focal.db and survive restarts.
    #[arg(long)]
    persistent: bool,
    /// Require this key in the `X-API-KEY` header (403 otherwise; /files and /docs stay open).
    /// Tenants (`focal tenants add`) have keys of their own; this one runs as the host.
    #[arg(long)]
    apikey: Option<String>,
    /// Turn on the admin API (`/admin/tenants…`) with this key in `X-Admin-Key`; it also guards
    /// `/metrics`.
    #[arg(long, conflicts_with = "admin_key_file")]
    admin_key: Option<String>,
    /// Read the admin key from this file (its first line).
    #[arg(long)]
    admin_key_file: Option<PathBuf>,
    /// Let URL inputs point at loopback/private addresses (refused by default).
    #[arg(long)]
    allow_private_fetch: bool,
    /// An image-step plugin run on every image any job saves, after the job's own steps
    /// (e.g. a watermark): `NAME` or `NAME:key=value,key=value`. Repeatable, in order.
    #[arg(long = "output-step", value_name = "STEP", value_parser = parse_step)]
    output_steps: Vec<focal_core::StepCall>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    compute: crate::device::Compute,
    #[command(flatten)]
    dirs: Dirs,
}

/// Bounds on what one request may make the server allocate (see `focal_server::limits`).
#[derive(clap::Args)]
pub struct LimitArgs {
    /// Largest request body in MiB (413 beyond).
    #[arg(long, default_value_t = RequestLimits::default().max_body_bytes >> 20)]
    max_body_mb: usize,
    /// Largest input image (upload, base64 or URL), in pixels; checked from its header.
    #[arg(long, default_value_t = focal_server::decode::ImageLimits::DEFAULT_MAX_PIXELS)]
    max_image_pixels: u64,
    /// Largest image the engine generates (width × height), in pixels.
    #[arg(long, default_value_t = RequestLimits::default().max_generation_pixels)]
    max_generation_pixels: u64,
    /// Most characters in a prompt or negative prompt.
    #[arg(long, default_value_t = RequestLimits::default().max_prompt_chars)]
    max_prompt_chars: usize,
}

impl LimitArgs {
    fn limits(&self) -> RequestLimits {
        RequestLimits {
            max_body_bytes: self.max_body_mb.saturating_mul(1 << 20),
            image: focal_server::decode::ImageLimits { max_pixels: self.max_image_pixels },
            max_generation_pixels: self.max_generation_pixels,
            max_prompt_chars: self.max_prompt_chars,
            ..RequestLimits::default()
        }
    }
}

#[derive(clap::Args)]
pub struct Dirs {
    /// focal's own state (compiled-plugin cache, plugins).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Operator plugins: `<name>.wasm` + optional `<name>.toml`; default DATA_DIR/plugins.
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    /// Plugin requests served at once across all plugins (more get 503).
    #[arg(long, default_value_t = HostOptions::default().max_instances)]
    plugin_instances: u32,
    /// The most requests one plugin serves at once, whatever its manifest's `concurrency` asks.
    #[arg(long, default_value_t = HostOptions::default().max_concurrency_per_plugin)]
    plugin_concurrency_max: u32,
}

impl Dirs {
    pub fn plugins_dir(&self) -> PathBuf {
        self.plugins_dir.clone().unwrap_or_else(|| self.data_dir.join("plugins"))
    }

    pub fn plugin_host(
        &self,
        services: Services,
        settings: BTreeMap<String, String>,
        wildcards_dir: Option<PathBuf>,
    ) -> Result<PluginHost> {
        let cache_dir = Some(self.data_dir.join("cache/plugins"));
        let options = HostOptions {
            cache_dir,
            settings,
            wildcards_dir,
            max_instances: self.plugin_instances.max(1),
            max_concurrency_per_plugin: self.plugin_concurrency_max,
            ..Default::default()
        };
        PluginHost::new(options, services)
    }
}

#[derive(clap::Subcommand)]
pub enum PluginsCommand {
    /// List the plugins found in the plugins directory, with their routes and limits.
    List(Dirs),
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let plugins_dir = args.dirs.plugins_dir();
    std::fs::create_dir_all(&plugins_dir).with_context(|| format!("cannot create {}", plugins_dir.display()))?;
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .with_context(|| format!("--host {} --port {}: not a socket address", args.host, args.port))?;
    // Fooocus's default preset unless another is named: its download URLs serve first use.
    let preset = Preset::load(args.preset.as_deref().unwrap_or("default"))?;
    let base_model = match (&args.preset, &preset.default_model) {
        (Some(_), Some(model)) => model.clone(),
        _ => args.base_model.clone(),
    };
    let models = ModelsDir::new(&args.models_dir);
    let checkpoint = match crate::generate::resolve_checkpoint(&args.models_dir, &base_model) {
        Ok(p) => p,
        Err(e) => {
            let dest = models.folder("checkpoints").join(&base_model);
            match preset.checkpoint_downloads.get(&base_model) {
                Some(url) => tracing::warn!("{} is missing; it will be downloaded from {url} on first use", dest.display()),
                // Start anyway (routes that need no model keep working); jobs fail with this message.
                None => tracing::warn!("{e:#}"),
            }
            dest
        }
    };
    let limits = args.limits.limits();
    let ready_model = checkpoint.clone();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        let base_url = args.base_url.clone().unwrap_or_else(|| {
            let host = if bound.ip().is_unspecified() { "127.0.0.1".to_string() } else { bound.ip().to_string() };
            format!("http://{host}:{}", bound.port())
        });
        let mut settings = BTreeMap::from([("persistent".to_string(), args.persistent.to_string())]);
        // A named preset sets the request defaults, as Fooocus's config does for Fooocus-API.
        if args.preset.is_some() {
            settings.insert("request-defaults".to_string(), preset.request_defaults().to_string());
        }
        let crate::device::Resolved { device, dtype, vae_dtype } = args.compute.resolve()?;
        tracing::info!(device = ?device, dtype = ?dtype, vae_dtype = ?vae_dtype, "engine device");
        let tenants = Arc::new(TenantStore::open(&args.dirs.data_dir.join("focal.db"))?);
        let app = App::start(AppConfig {
            models_dir: args.models_dir.clone(),
            checkpoint,
            downloads: preset.checkpoint_downloads.clone(),
            allow_downloads: true,
            extra_checkpoints: BTreeMap::new(),
            dtype,
            vae_dtype,
            device,
            outputs_dir: args.outputs_dir.clone(),
            database: args.dirs.data_dir.join("focal.db"),
            max_queue: args.queue_size,
            max_history: args.queue_history,
            webhook_url: args.webhook_url.clone(),
            webhooks: true,
            base_url: base_url.trim_end_matches('/').to_string(),
            limits,
            allow_private_fetch: args.allow_private_fetch,
            output_steps: args.output_steps.clone(),
            settings,
            tenants: Some(tenants.clone()),
            dirs: &args.dirs,
        })?;
        let admin_key = match &args.admin_key_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("--admin-key-file {}", file.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            )
            .filter(|k| !k.is_empty()),
            None => args.admin_key.clone(),
        };
        // Ready when the default checkpoint is there or its preset URL can fetch it.
        let (default_model, can_fetch) = (ready_model.clone(), preset.checkpoint_downloads.contains_key(&base_model));
        let ready: focal_server::admin::ReadyCheck = std::sync::Arc::new(move || {
            if default_model.is_file() || can_fetch {
                Ok(())
            } else {
                Err(format!("the default checkpoint {} is missing", default_model.display()))
            }
        });
        let options = focal_server::ServerOptions {
            api_key: args.apikey.clone(),
            max_body_bytes: limits.max_body_bytes,
            tenants: Some(tenants),
            admin_key,
            ready: Some(ready),
            data_dir: Some(args.dirs.data_dir.clone()),
        };
        println!("focal listening on http://{bound} (plugins from {})", plugins_dir.display());
        focal_server::serve_on(listener, app.host, app.registry, options).await
    })
}

pub fn plugins(cmd: PluginsCommand) -> Result<()> {
    match cmd {
        PluginsCommand::List(dirs) => {
            let host = dirs.plugin_host(Services::default(), BTreeMap::new(), None)?;
            let registry = Registry::with_builtins(&host, &dirs.plugins_dir(), focal_runtime::builtin::PLUGINS);
            println!("{:<16} {:<28} {:<12} {:>8} {:>10}  digest", "name", "routes", "capabilities", "mem MiB", "timeout ms");
            for p in registry.plugins() {
                let m = &p.manifest;
                let caps: Vec<String> = m.capabilities.iter().map(|c| format!("{c:?}").to_lowercase()).collect();
                println!(
                    "{:<16} {:<28} {:<12} {:>8} {:>10}  {}",
                    m.name,
                    m.routes.join(","),
                    if caps.is_empty() { "-".into() } else { caps.join(",") },
                    m.limits.memory_mb,
                    m.limits.timeout_ms,
                    &p.digest[..12]
                );
            }
            Ok(())
        }
    }
}

/// `NAME` or `NAME:key=value,key=value` (an `--output-step`).
fn parse_step(text: &str) -> Result<focal_core::StepCall, String> {
    let (plugin, options) = text.split_once(':').unwrap_or((text, ""));
    if plugin.is_empty() {
        return Err("an image step needs a plugin name".into());
    }
    let options = options
        .split(',')
        .filter(|o| !o.is_empty())
        .map(|o| o.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("option '{o}' is not key=value")))
        .collect::<Result<_, _>>()?;
    Ok(focal_core::StepCall { plugin: plugin.to_string(), options })
}
