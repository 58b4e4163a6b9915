//! `focal serve` and `focal plugins`: the HTTP server and what it has loaded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use focal_runtime::services::EngineService;
use focal_runtime::{HostOptions, PluginHost};
use focal_server::engine_service::EngineWorker;
use focal_server::Registry;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8888)]
    port: u16,
    /// Fooocus-style models folder (checkpoints in DIR/checkpoints).
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// The SDXL checkpoint jobs run on (a file in DIR/checkpoints or a path).
    #[arg(long, default_value = "juggernautXL_v8Rundiffusion.safetensors")]
    base_model: String,
    /// Jobs waiting or running at once; more get QUEUE_IS_FULL.
    #[arg(long, default_value_t = 100)]
    queue_size: usize,
    /// Require this key in the `X-API-KEY` header of every request (403 otherwise).
    #[arg(long)]
    apikey: Option<String>,
    #[command(flatten)]
    dirs: Dirs,
}

#[derive(clap::Args)]
pub struct Dirs {
    /// focal's own state (compiled-plugin cache, plugins).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Operator plugins: `<name>.wasm` + optional `<name>.toml`; default DATA_DIR/plugins.
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
}

impl Dirs {
    fn plugins_dir(&self) -> PathBuf {
        self.plugins_dir.clone().unwrap_or_else(|| self.data_dir.join("plugins"))
    }

    fn plugin_host(&self, engine: Option<Arc<dyn EngineService>>) -> Result<PluginHost> {
        let cache_dir = Some(self.data_dir.join("cache/plugins"));
        PluginHost::new(HostOptions { cache_dir, ..Default::default() }, engine)
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
    let checkpoint = match crate::generate::resolve_checkpoint(&args.models_dir, &args.base_model) {
        Ok(p) => p,
        Err(e) => {
            // Start anyway (routes that need no model keep working); jobs fail with this message.
            tracing::warn!("{e:#}");
            args.models_dir.join("checkpoints").join(&args.base_model)
        }
    };
    let engine: Arc<dyn EngineService> = EngineWorker::start(checkpoint, args.queue_size);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let host = Arc::new(args.dirs.plugin_host(Some(engine))?);
        let registry = Registry::with_builtins(&host, &plugins_dir, focal_runtime::builtin::PLUGINS);
        let options = focal_server::ServerOptions { api_key: args.apikey.clone() };
        focal_server::serve(addr, host, registry, options, |bound| {
            println!("focal listening on http://{bound} (plugins from {})", plugins_dir.display());
        })
        .await
    })
}

pub fn plugins(cmd: PluginsCommand) -> Result<()> {
    match cmd {
        PluginsCommand::List(dirs) => {
            let host = dirs.plugin_host(None)?;
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
