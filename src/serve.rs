//! `focal serve` and `focal plugins`: the HTTP server and what it has loaded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use focal_runtime::{HostOptions, PluginHost};
use focal_server::Registry;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8888)]
    port: u16,
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

    fn plugin_host(&self) -> Result<PluginHost> {
        let cache_dir = Some(self.data_dir.join("cache/plugins"));
        PluginHost::new(HostOptions { cache_dir, ..Default::default() }, None)
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
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let host = Arc::new(args.dirs.plugin_host()?);
        let registry = Registry::load(&host, &plugins_dir);
        focal_server::serve(addr, host, registry, |bound| {
            println!("focal listening on http://{bound} (plugins from {})", plugins_dir.display());
        })
        .await
    })
}

pub fn plugins(cmd: PluginsCommand) -> Result<()> {
    match cmd {
        PluginsCommand::List(dirs) => {
            let host = dirs.plugin_host()?;
            let registry = Registry::load(&host, &dirs.plugins_dir());
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
