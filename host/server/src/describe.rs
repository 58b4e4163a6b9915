//! The host side of `focal:plugin/describe`: Fooocus's describe models, loaded on first use from
//! the models folder's `clip_vision/` (fetched from Fooocus's URLs when missing) and kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use focal_core::services::{BoxFuture, DescribeService, DescribeStyle};
use focal_core::Image;
use focal_describe::{blip, BlipCaptioner, Wd14Tagger};
use focal_imageops::Pixels;
use focal_models::download::Downloader;

use crate::decode::{self, ImageLimits};

/// Fooocus's tagger (`extras/wd14tagger.py`): the model and its tag list.
const TAGGER: &str = "wd-v1-4-moat-tagger-v2";
/// Where Fooocus downloads both describe models from.
const FOOOCUS_MISC_URL: &str = "https://huggingface.co/lllyasviel/misc/resolve/main/";
/// The captioner's draws are seeded: one image, one caption (Fooocus draws from torch's global
/// generator, so its captions vary from call to call).
const CAPTION_SEED: u64 = 0;

pub struct HostDescribe {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<models>/clip_vision`, where Fooocus keeps the describe models.
    folder: PathBuf,
    allow_downloads: bool,
    limits: ImageLimits,
    /// Loaded once; a failed load is retried on the next request (files installed meanwhile).
    tagger: Mutex<Option<Arc<Wd14Tagger>>>,
    captioner: Mutex<Option<Arc<BlipCaptioner>>>,
    /// One image described at a time: a burst of requests waits here instead of each holding
    /// its decoded image and the model's activations at once.
    running: Mutex<()>,
}

impl HostDescribe {
    pub fn new(folder: PathBuf, allow_downloads: bool, limits: ImageLimits) -> Self {
        HostDescribe {
            inner: Arc::new(Inner {
                folder,
                allow_downloads,
                limits,
                tagger: Mutex::new(None),
                captioner: Mutex::new(None),
                running: Mutex::new(()),
            }),
        }
    }
}

impl Inner {
    fn tagger(&self) -> Result<Arc<Wd14Tagger>, String> {
        loaded(&self.tagger, || {
            let onnx = self.fetched(&format!("{TAGGER}.onnx"))?;
            let csv = self.fetched(&format!("{TAGGER}.csv"))?;
            let tagger = Wd14Tagger::load(&onnx, &csv).map_err(|e| format!("loading {}: {e:#}", onnx.display()))?;
            tracing::info!("WD14 tagger loaded from {}", onnx.display());
            Ok(tagger)
        })
    }

    fn captioner(&self) -> Result<Arc<BlipCaptioner>, String> {
        loaded(&self.captioner, || {
            let path = self.fetched(blip::FILE_NAME)?;
            let captioner =
                BlipCaptioner::load(&path, &candle_core::Device::Cpu).map_err(|e| format!("loading {}: {e:#}", path.display()))?;
            tracing::info!("BLIP captioner loaded from {}", path.display());
            Ok(captioner)
        })
    }

    /// `clip_vision/<name>`, downloaded from Fooocus's URL when missing (and allowed).
    fn fetched(&self, name: &str) -> Result<PathBuf, String> {
        let path = self.folder.join(name);
        if path.is_file() {
            return Ok(path);
        }
        let url = format!("{FOOOCUS_MISC_URL}{name}");
        if !self.allow_downloads {
            return Err(format!("describing needs {}: downloads are off; download it from {url} and put it there", path.display()));
        }
        fetch(&url, &path).map_err(|e| format!("describing needs {} ({e}); download it from {url} and put it there", path.display()))?;
        Ok(path)
    }

    /// The uploaded image as RGB pixels, under the host's limits.
    fn pixels(&self, image: &Image) -> Result<Pixels, String> {
        let rgb = decode::decode(&image.encoded, &self.limits).map_err(|e| format!("the image: {e:#}"))?;
        Pixels::rgb(rgb.width, rgb.height, rgb.data).ok_or_else(|| "the image has no pixels".to_string())
    }

    fn describe(&self, image: &Image, style: DescribeStyle) -> Result<String, String> {
        let _turn = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let pixels = self.pixels(image)?;
        match style {
            DescribeStyle::Anime => self.tagger()?.describe(&pixels).map_err(|e| format!("the WD14 tagger failed: {e:#}")),
            DescribeStyle::Photo => {
                self.captioner()?.caption(&pixels, CAPTION_SEED).map_err(|e| format!("the BLIP captioner failed: {e:#}"))
            }
        }
    }
}

/// The model in `slot`, loaded by `load` the first time (a failed load is tried again next time).
pub(crate) fn loaded<T>(slot: &Mutex<Option<Arc<T>>>, load: impl FnOnce() -> Result<T, String>) -> Result<Arc<T>, String> {
    let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(model) = slot.as_ref() {
        return Ok(model.clone());
    }
    let model = Arc::new(load()?);
    *slot = Some(model.clone());
    Ok(model)
}

pub(crate) fn fetch(url: &str, dest: &Path) -> Result<(), String> {
    let downloader = Downloader::new().map_err(|e| e.to_string())?;
    downloader.fetch(url, dest, None, &mut |_, _| {}).map(|_| ()).map_err(|e| e.to_string())
}

impl DescribeService for HostDescribe {
    /// On a blocking thread: the models (and their downloads, which run a runtime of their own)
    /// must not hold up the async runtime.
    fn describe(&self, image: Image, style: DescribeStyle) -> BoxFuture<'_, Result<String, String>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.describe(&image, style))
                .await
                .unwrap_or_else(|e| Err(format!("describing failed: {e}")))
        })
    }
}
