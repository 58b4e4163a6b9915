//! `focal models`: list the models folder, download a preset's models or a URL.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use focal_models::{Downloader, ModelsDir, Preset};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// Model files per folder (checkpoints, loras, …), as /v1/engines/all-models sees them.
    List {
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
    },
    /// Download what a preset uses (default: Fooocus's `default`), or one URL into a folder.
    /// Interrupted downloads resume; `--sha256` is checked when given.
    Pull {
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
        /// A built-in Fooocus preset name or a preset file.
        #[arg(long, default_value = "default", conflicts_with = "url")]
        preset: String,
        /// Download this URL instead of a preset's files.
        #[arg(long, requires = "to")]
        url: Option<String>,
        /// Where the URL goes, relative to the models folder, e.g. `loras/my.safetensors`.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        sha256: Option<String>,
    },
}

/// Download one file with a progress bar on stderr.
pub fn pull_one(downloader: &Downloader, url: &str, dest: &std::path::Path, sha256: Option<&str>) -> Result<()> {
    if dest.is_file() {
        eprintln!("{} is present", dest.display());
        return Ok(());
    }
    eprintln!("downloading {url}\n         to {}", dest.display());
    let bar = ProgressBar::new(0)
        .with_style(ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}").expect("valid template"));
    let result = downloader.fetch(url, dest, sha256, &mut |done, total| {
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
    });
    bar.finish_and_clear();
    result.map(|_| ()).map_err(anyhow::Error::from)
}

pub fn run(cmd: ModelsCommand) -> Result<()> {
    match cmd {
        ModelsCommand::List { models_dir } => {
            let dir = ModelsDir::new(models_dir);
            for folder in focal_models::layout::FOLDERS {
                for file in dir.list(folder) {
                    println!("{folder}/{file}");
                }
            }
            Ok(())
        }
        ModelsCommand::Pull { models_dir, preset, url, to, sha256 } => {
            let dir = ModelsDir::new(&models_dir);
            dir.ensure_layout().with_context(|| format!("cannot create the folders under {}", models_dir.display()))?;
            let downloader = Downloader::new()?;
            if let Some(url) = url {
                let to = to.expect("clap requires --to with --url");
                if to.contains("..") || std::path::Path::new(&to).is_absolute() {
                    bail!("--to {to}: must be a path inside the models folder");
                }
                return pull_one(&downloader, &url, &dir.root.join(to), sha256.as_deref());
            }
            let preset = Preset::load(&preset)?;
            for (folder, file, url) in preset.downloads() {
                pull_one(&downloader, &url, &dir.folder(folder).join(&file), None)?;
            }
            Ok(())
        }
    }
}
