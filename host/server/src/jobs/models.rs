//! The model cache: a job's model files resolved in the models folder (downloads on first
//! use, as Fooocus does), and the loaded base model and refiner kept while jobs name the same
//! ones.

use std::path::{Path, PathBuf};

use focal_core::{Download, JobSpec, Lora, Phase};
use focal_engine::interposer::Interposer;
use focal_engine::lora::LoraSpec;
use focal_engine::refiner::RefinerModel;
use focal_engine::{LoadOptions, SdxlModel};
use focal_models::Downloader;
use sha2::{Digest, Sha256};

use super::JobManager;

/// Fooocus's `default_max_lora_number`: request and prompt-tag LoRAs together.
const MAX_LORAS: usize = 5;

/// What a loaded model was built from.
#[derive(Clone, PartialEq)]
pub(super) struct ModelKey {
    pub(super) checkpoint: PathBuf,
    pub(super) loras: Vec<LoraSpec>,
    pub(super) refiner: Option<PathBuf>,
    pub(super) vae: Option<PathBuf>,
    /// Fooocus's inpaint patch, merged into the base model only.
    pub(super) inpaint_patch: Option<PathBuf>,
    /// The base model without the inpaint patch as the refiner (Fooocus's synthetic refiner,
    /// taking over at 80% when an inpaint engine runs without a refiner).
    pub(super) synthetic_refiner: bool,
}

/// Where Fooocus's synthetic refiner takes over.
pub(super) const SYNTHETIC_REFINER_SWITCH: f32 = 0.8;

/// The loaded base model and, when the job has one, its refiner.
pub(super) struct Loaded {
    pub(super) base: SdxlModel,
    pub(super) refiner: Option<RefinerModel>,
}

impl JobManager {
    /// The model files a job names, resolved in the models folder: its checkpoint, its LoRAs
    /// with the prompt's `<lora:…>` tags, its refiner and VAE.
    pub(super) fn model_key(&self, id: &str, spec: &JobSpec, tag_loras: &[(String, f32)]) -> Result<ModelKey, String> {
        let p = &spec.params;
        let checkpoint = self.checkpoint_for(&p.base_model);
        let requested_loras = self.with_tag_loras(&p.loras, tag_loras, spec.fooocus.is_some());
        let loras = self.lora_specs(id, &requested_loras)?;
        let refiner = p.refiner.as_ref().and_then(|r| match self.find_checkpoint(&r.model) {
            Some(path) if path != checkpoint => Some(path),
            Some(_) => None,
            // A refiner the preset knows a URL for is fetched on first use, like its base model.
            None if self.options.downloads.contains_key(&r.model) => Some(self.options.models.folder("checkpoints").join(&r.model)),
            None => {
                tracing::warn!(refiner = %r.model, "refiner not found in the models folder; skipped");
                None
            }
        });
        // Fooocus's vae_name: a file from models/vae; an unknown name is an error there too.
        let vae = match p.vae.as_str() {
            "" | "Default (model)" | "None" => None,
            name => Some(self.options.models.find("vae", name).filter(|f| f.is_file()).ok_or_else(|| {
                format!("vae_name '{name}' is not in the models folder's vae/ (available: {})", self.options.models.list("vae").join(", "))
            })?),
        };
        Ok(ModelKey { checkpoint, loras, refiner, vae, inpaint_patch: None, synthetic_refiner: false })
    }

    /// The inpaint head and `patch` from `inpaint/`, fetched from Fooocus's URLs when missing.
    pub(super) fn inpaint_files(&self, id: &str, patch: &str) -> Result<(PathBuf, PathBuf), String> {
        let folder = self.options.models.folder("inpaint");
        let mut paths = Vec::with_capacity(2);
        for name in [focal_engine::inpaint::HEAD_FILE, patch] {
            if Path::new(name).components().count() != 1 {
                return Err(format!("inpaint model '{name}' must be a file name in inpaint/"));
            }
            let path = folder.join(name);
            if !path.is_file() {
                let url = format!("{}{name}", super::inpaint_task::INPAINT_MODELS_URL);
                self.download(id, &url, &path).map_err(|e| format!("inpainting needs models/inpaint/{name}: {e}"))?;
            }
            paths.push(path);
        }
        Ok((paths.remove(0), paths.remove(0)))
    }

    /// Make `loaded` hold the models of `key`: the same checkpoints and LoRA set reuse the
    /// merged models; anything else frees the old ones, then loads (downloading what a preset
    /// knows a URL for).
    pub(super) fn ensure_loaded(&self, id: &str, key: ModelKey, loaded: &mut Option<(ModelKey, Loaded)>) -> Result<(), String> {
        if loaded.as_ref().is_some_and(|(k, _)| k == &key) {
            return Ok(());
        }
        let ModelKey { checkpoint, loras, refiner, vae, inpaint_patch, synthetic_refiner } = key.clone();
        *loaded = None; // free the old models before loading the next
        self.download_if_missing(id, &checkpoint)?;
        tracing::info!(checkpoint = %checkpoint.display(), loras = loras.len(), "loading model");
        let options = LoadOptions {
            dtype: self.options.dtype,
            vae_dtype: self.options.vae_dtype,
            device: self.options.device.clone(),
            loras: loras.clone(),
            embeddings_dir: Some(self.options.models.folder("embeddings")),
            ..Default::default()
        };
        // Fooocus merges the inpaint patch after the user's LoRAs, at weight 1, into the base only.
        let base_loras = loras.iter().cloned().chain(inpaint_patch.map(|path| LoraSpec { path, weight: 1.0 })).collect();
        let base = SdxlModel::load(&checkpoint, &LoadOptions { vae, loras: base_loras, ..options.clone() })
            .map_err(|e| format!("cannot load the base model ({e:#}); put an SDXL checkpoint in the models folder or pass --base-model"))?;
        for unknown in &base.lora_report.unknown {
            tracing::warn!(job = %id, "LoRA key not merged: {unknown}");
        }
        if let Some(path) = &refiner {
            self.download_if_missing(id, path)?;
        }
        // The refiner gets the same LoRAs, as in Fooocus (what does not fit its UNet is
        // reported, not merged: an SDXL LoRA on an SDXL-refiner checkpoint).
        let refiner = match &refiner {
            None if synthetic_refiner => {
                Some(RefinerModel::load(&checkpoint, &options).map_err(|e| format!("cannot load the synthetic refiner ({e:#})"))?)
            }
            Some(path) => {
                let mut r = RefinerModel::load(path, &options).map_err(|e| format!("cannot load the refiner ({e:#})"))?;
                if r.has_own_vae() {
                    // SD1.5: Fooocus's latent interposer, fetched on first use as Fooocus's launcher does.
                    let file = self.options.models.folder("vae_approx").join(focal_engine::interposer::FILE_NAME);
                    if !file.is_file() {
                        self.download(id, focal_engine::interposer::URL, &file).map_err(|e| {
                            format!(
                                "an SD1.5 refiner needs the latent interposer models/vae_approx/{}; fetching it from {} failed ({e}); put the file there",
                                focal_engine::interposer::FILE_NAME,
                                focal_engine::interposer::URL
                            )
                        })?;
                    }
                    let interposer = Interposer::load(&file, &options.device).map_err(|e| e.to_string())?;
                    r = r.with_interposer(interposer);
                }
                if !r.lora_report.unknown.is_empty() {
                    tracing::info!(job = %id, not_merged = r.lora_report.unknown.len(), "refiner: LoRA modules that do not fit it are skipped");
                }
                Some(r)
            }
            None => None,
        };
        *loaded = Some((key, Loaded { base, refiner }));
        Ok(())
    }

    /// The request's LoRAs plus the prompt's `<lora:stem:weight>` tags found in `loras/` (by
    /// file stem; unknown stems and names already requested skipped). Fooocus jobs keep at
    /// most [`MAX_LORAS`] besides the performance LoRA, which stays last.
    fn with_tag_loras(&self, requested: &[Lora], tags: &[(String, f32)], fooocus: bool) -> Vec<Lora> {
        let is_performance = |l: &Lora| focal_models::presets::PERFORMANCE_LORAS.iter().any(|(f, _)| *f == l.name);
        let (mut loras, performance): (Vec<Lora>, Vec<Lora>) = requested.iter().cloned().partition(|l| !is_performance(l));
        let files = self.options.models.list("loras");
        for (stem, weight) in tags {
            let file = files.iter().find(|f| Path::new(f).file_stem().is_some_and(|s| s == stem.as_str()));
            match file {
                Some(file) if !loras.iter().any(|l| &l.name == file) => loras.push(Lora { name: file.clone(), weight: *weight }),
                Some(_) => {}
                None => tracing::warn!(lora = %stem, "LoRA named in the prompt not found in the models folder; skipped"),
            }
        }
        if fooocus {
            loras.truncate(MAX_LORAS);
        }
        loras.extend(performance);
        loras
    }

    /// A checkpoint by name: one the operator named, or a file in the models folder.
    fn find_checkpoint(&self, name: &str) -> Option<PathBuf> {
        self.options.extra_checkpoints.get(name).cloned().or_else(|| self.options.models.find("checkpoints", name))
    }

    /// A checkpoint from the models folder by name; unknown or empty names fall back to the
    /// default (the seed's behaviour, logged here).
    pub(super) fn checkpoint_for(&self, name: &str) -> PathBuf {
        let default_name = self.options.default_checkpoint.file_name().and_then(|n| n.to_str());
        if name.is_empty() || name == "None" || Some(name) == default_name {
            return self.options.default_checkpoint.clone();
        }
        if let Some(path) = self.find_checkpoint(name) {
            return path;
        }
        tracing::warn!(model = name, "unknown base model; using the default");
        self.options.default_checkpoint.clone()
    }

    /// The request's LoRAs that exist in `loras/`; others are skipped with a warning, as the
    /// seed replaces unknown names by "None".
    /// The performance LoRAs (Lightning, Hyper-SD, …) are downloaded when missing: without them
    /// a 4-step image is noise.
    fn lora_specs(&self, id: &str, loras: &[Lora]) -> Result<Vec<LoraSpec>, String> {
        let mut specs = Vec::new();
        for l in loras {
            if let Some(path) = self.options.models.find("loras", &l.name) {
                specs.push(LoraSpec { path, weight: l.weight });
            } else if let Some((_, url)) = focal_models::presets::PERFORMANCE_LORAS.iter().find(|(f, _)| *f == l.name) {
                let dest = self.options.models.folder("loras").join(&l.name);
                self.download(id, url, &dest)?;
                specs.push(LoraSpec { path: dest, weight: l.weight });
            } else {
                tracing::warn!(lora = %l.name, "LoRA not found in the models folder; skipped");
            }
        }
        Ok(specs)
    }

    /// Download a missing checkpoint the preset knows a URL for.
    fn download_if_missing(&self, id: &str, checkpoint: &Path) -> Result<(), String> {
        let name = checkpoint.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match self.options.downloads.get(name).filter(|_| !checkpoint.exists()) {
            Some(url) => self.download(id, url, checkpoint),
            None => Ok(()),
        }
    }

    /// Fetch `url` to `dest`, reporting progress as the job's.
    pub(super) fn download(&self, id: &str, url: &str, dest: &Path) -> Result<(), String> {
        if !self.options.allow_downloads {
            return Err(format!("{} is missing and downloads are off; download it from {url} and put it there", dest.display()));
        }
        let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let downloader = Downloader::new().map_err(|e| e.to_string())?;
        let mut last_pct = u64::MAX;
        downloader
            .fetch(url, dest, None, &mut |done, total| {
                let pct = total.map(|t| done * 100 / t.max(1)).unwrap_or(0);
                if pct != last_pct {
                    last_pct = pct;
                    let download = Download { file: name.to_string(), percent: pct.min(100) as u8 };
                    self.update(id, false, |e| {
                        e.info.progress.phase = Phase::Downloading;
                        e.info.progress.download = Some(download);
                    });
                }
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// First 10 hex digits of the file's sha256 (Fooocus's model hash), computed once per file.
    pub(super) fn model_hash(&self, path: &Path) -> String {
        if let Some(h) = self.hashes.lock().unwrap().get(path) {
            return h.clone();
        }
        let hash = (|| -> std::io::Result<String> {
            let mut file = std::fs::File::open(path)?;
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher)?;
            Ok(hasher.finalize().iter().take(5).map(|b| format!("{b:02x}")).collect())
        })()
        .unwrap_or_default();
        self.hashes.lock().unwrap().insert(path.to_path_buf(), hash.clone());
        hash
    }
}
