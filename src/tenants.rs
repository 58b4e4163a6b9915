//! `focal tenants`: manage the tenants of a data directory (the running server reads the same
//! database, so changes apply to the next request).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use focal_server::tenants::{Quota, TenantStore};

#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Add a tenant and print its API key (shown once; only its hash is kept).
    Add {
        name: String,
        #[command(flatten)]
        quota: QuotaArgs,
        #[command(flatten)]
        data: DataDir,
    },
    /// List the tenants and their quotas.
    List {
        #[command(flatten)]
        data: DataDir,
    },
    /// Refuse a tenant's key from now on (its jobs and files stay).
    Revoke {
        name: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Give a tenant a new key (printed once); the old one stops working.
    Rotate {
        name: String,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Args)]
pub struct DataDir {
    /// focal's state folder (the server's `--data-dir`).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
}

/// Limits; unset ones are unlimited.
#[derive(Args)]
pub struct QuotaArgs {
    /// Unfinished jobs at once.
    #[arg(long)]
    max_queued: Option<u32>,
    /// Images generated per UTC day.
    #[arg(long)]
    images_per_day: Option<u32>,
    /// Width × height of one image.
    #[arg(long)]
    max_pixels: Option<u64>,
    /// Sampling steps of one job.
    #[arg(long)]
    max_steps: Option<u32>,
    /// Requests per minute.
    #[arg(long)]
    requests_per_minute: Option<u32>,
    /// Memory (MiB) one request to the tenant's own plugins may use (default 128).
    #[arg(long)]
    plugin_memory_mb: Option<u64>,
    /// Time (ms) one request to the tenant's own plugins may take (default 60000).
    #[arg(long)]
    plugin_timeout_ms: Option<u64>,
}

pub fn run(cmd: TenantsCommand) -> Result<()> {
    let open = |d: &DataDir| TenantStore::open(&d.data_dir.join("focal.db"));
    match cmd {
        TenantsCommand::Add { name, quota, data } => {
            let q = Quota {
                max_queued: quota.max_queued,
                images_per_day: quota.images_per_day,
                max_pixels: quota.max_pixels,
                max_steps: quota.max_steps,
                requests_per_minute: quota.requests_per_minute,
                plugin_memory_mb: quota.plugin_memory_mb,
                plugin_timeout_ms: quota.plugin_timeout_ms,
            };
            println!("{}", open(&data)?.add(&name, &q)?);
        }
        TenantsCommand::List { data } => {
            for t in open(&data)?.list()? {
                println!("{}{}\t{}", t.name, if t.revoked { " (revoked)" } else { "" }, serde_json::to_string(&t.quota)?);
            }
        }
        TenantsCommand::Revoke { name, data } => open(&data)?.revoke(&name)?,
        TenantsCommand::Rotate { name, data } => println!("{}", open(&data)?.rotate(&name)?),
    }
    Ok(())
}
