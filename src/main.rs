//! The `focal` command line.
mod app;
mod bench;
mod bench_describe;
mod device;
mod generate;
mod models;
mod serve;
mod tenants;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "focal", version, about = "Fooocus-API compatible SDXL server built as a WebAssembly plugin host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as JSON objects carrying the request's id, tenant and plugin and
    /// the job's id (from the spans they happen in).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one Fooocus-API text-to-image request through the plugins and the engine, in-process,
    /// and write its images.
    Generate(generate::GenerateArgs),
    /// Time the engine on full-size SDXL shapes (random weights), optionally beside PyTorch.
    Bench(bench::BenchArgs),
    /// Run the HTTP server: every route is served by a plugin from the plugins directory.
    Serve(serve::ServeArgs),
    /// List the models folder or download models (resumable, verified).
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Inspect plugins.
    #[command(subcommand)]
    Plugins(serve::PluginsCommand),
    /// Manage tenants: API keys (stored hashed) and quotas of one server's customers.
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
}

/// Keep freed tensor buffers in the heap instead of returning them to the kernel. candle
/// allocates a fresh buffer for every op; with glibc's defaults each one of a few MB is a new
/// `mmap`, whose pages the kernel must fault in and zero: that was ~30% of a UNet step
/// (measured with perf: `clear_page_erms`), and reusing the heap makes a 512² SDXL step
/// ~1.4× faster.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator thresholds; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// MKL's OpenMP threads busy-wait 200 ms after each product by default, taking the cores from
/// candle's own threads between products: they sleep at once instead (unless the operator set it).
#[cfg(feature = "mkl")]
fn tune_openmp() {
    if std::env::var_os("KMP_BLOCKTIME").is_none() {
        std::env::set_var("KMP_BLOCKTIME", "0");
    }
}

#[cfg(not(feature = "mkl"))]
fn tune_openmp() {}

fn main() -> ExitCode {
    tune_allocator();
    tune_openmp();
    use tracing_subscriber::prelude::*;
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = cli.log_format == LogFormat::Json;
    tracing_subscriber::registry()
        .with((!json).then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only on a terminal: log files and pipes get plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        }))
        .with(
            json.then(|| tracing_subscriber::fmt::layer().json().with_current_span(true).with_span_list(true).with_writer(std::io::stderr)),
        )
        // Each job's time per span and per engine layer, at debug level.
        .with(focal_server::timings::JobTimings)
        .with(filter)
        .init();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Plugins(cmd) => serve::plugins(cmd),
        Command::Models(cmd) => models::run(cmd),
        Command::Tenants(cmd) => tenants::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole cause chain, no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
