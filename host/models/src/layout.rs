//! `models/` with Fooocus's folder names, so an existing Fooocus models folder works as is.

use std::path::{Path, PathBuf};

/// The folders Fooocus creates under `models/` (`modules/config.py` paths).
pub const FOLDERS: &[&str] = &[
    "checkpoints",
    "loras",
    "embeddings",
    "vae",
    "vae_approx",
    "upscale_models",
    "inpaint",
    "controlnet",
    "clip_vision",
    "prompt_expansion/fooocus_expansion",
    "safety_checker",
    "sam",
    // Fooocus keeps these beside its models (`wildcards/`); here they live with them.
    "wildcards",
];

/// Extensions Fooocus lists as model files.
pub const MODEL_EXTENSIONS: &[&str] = &["safetensors", "ckpt", "pt", "pth", "bin"];

#[derive(Clone, Debug)]
pub struct ModelsDir {
    pub root: PathBuf,
}

impl ModelsDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Create the Fooocus folders that are missing.
    pub fn ensure_layout(&self) -> std::io::Result<()> {
        FOLDERS.iter().try_for_each(|f| std::fs::create_dir_all(self.root.join(f)))
    }

    pub fn folder(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Model files under `folder`, recursively, as sorted `/`-separated relative paths
    /// (what `/v1/engines/all-models` lists).
    pub fn list(&self, folder: &str) -> Vec<String> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
            let Ok(read) = std::fs::read_dir(dir) else { return };
            for entry in read.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, &format!("{prefix}{name}/"), out);
                } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| MODEL_EXTENSIONS.contains(&e)) {
                    out.push(format!("{prefix}{name}"));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.folder(folder), "", &mut out);
        out.sort();
        out
    }

    /// `folder/name` if it names a file inside the folder (no `..`, not absolute).
    pub fn find(&self, folder: &str, name: &str) -> Option<PathBuf> {
        let p = Path::new(name);
        if name.is_empty() || p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return None;
        }
        let path = self.folder(folder).join(p);
        path.is_file().then_some(path)
    }
}
