//! The `focal` command line.
mod bench;
mod generate;
mod request;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "focal", version, about = "Fooocus-API compatible SDXL server built as a WebAssembly plugin host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one Fooocus-API text-to-image request through the engine and write PNGs.
    Generate(generate::GenerateArgs),
    /// Time the engine on full-size SDXL shapes (random weights), optionally beside PyTorch.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
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
