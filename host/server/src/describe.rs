//! The host side of `focal:plugin/describe`: Fooocus's describe models, loaded on first use from
//! the models folder's `clip_vision/` (fetched from Fooocus's URLs when missing) and kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use focal_core::services::{BoxFuture, DescribeService, DescribeStyle};
use focal_core::Image;
use focal_describe::Wd14Tagger;
use focal_imageops::Pixels;
use focal_models::download::Downloader;

use crate::decode::{self, ImageLimits};

/// Fooocus's tagger (`extras/wd14tagger.py`): the model and its tag list, from Fooocus's mirror.
const TAGGER: &str = "wd-v1-4-moat-tagger-v2";
const TAGGER_URL: &str = "https://huggingface.co/lllyasviel/misc/resolve/main/";

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
    /// One image described at a time: a burst of requests waits here instead of each holding
    /// its decoded image and the model's activations at once.
    running: Mutex<()>,
}

impl HostDescribe {
    pub fn new(folder: PathBuf, allow_downloads: bool, limits: ImageLimits) -> Self {
        HostDescribe { inner: Arc::new(Inner { folder, allow_downloads, limits, tagger: Mutex::new(None), running: Mutex::new(()) }) }
    }
}

impl Inner {
    fn tagger(&self) -> Result<Arc<Wd14Tagger>, String> {
        let mut slot = self.tagger.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let onnx = self.fetched(&format!("{TAGGER}.onnx"))?;
        let csv = self.fetched(&format!("{TAGGER}.csv"))?;
        let tagger = Arc::new(Wd14Tagger::load(&onnx, &csv).map_err(|e| format!("loading {}: {e:#}", onnx.display()))?);
        tracing::info!("WD14 tagger loaded from {}", onnx.display());
        *slot = Some(tagger.clone());
        Ok(tagger)
    }

    /// `clip_vision/<name>`, downloaded from Fooocus's URL when missing (and allowed).
    fn fetched(&self, name: &str) -> Result<PathBuf, String> {
        let path = self.folder.join(name);
        if path.is_file() {
            return Ok(path);
        }
        let url = format!("{TAGGER_URL}{name}");
        if !self.allow_downloads {
            return Err(format!("describing needs {}: downloads are off; download it from {url} and put it there", path.display()));
        }
        fetch(&url, &path).map_err(|e| format!("describing needs {} ({e}); download it from {url} and put it there", path.display()))?;
        Ok(path)
    }

    fn anime(&self, image: &Image) -> Result<String, String> {
        let _turn = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let rgb = decode::decode(&image.encoded, &self.limits).map_err(|e| format!("the image: {e:#}"))?;
        let pixels = Pixels::rgb(rgb.width, rgb.height, rgb.data).ok_or("the image has no pixels")?;
        self.tagger()?.describe(&pixels).map_err(|e| format!("the WD14 tagger failed: {e:#}"))
    }
}

fn fetch(url: &str, dest: &Path) -> Result<(), String> {
    let downloader = Downloader::new().map_err(|e| e.to_string())?;
    downloader.fetch(url, dest, None, &mut |_, _| {}).map(|_| ()).map_err(|e| e.to_string())
}

impl DescribeService for HostDescribe {
    /// On a blocking thread: the model (and its download, which runs a runtime of its own) must
    /// not hold up the async runtime.
    fn describe(&self, image: Image, style: DescribeStyle) -> BoxFuture<'_, Result<String, String>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            match style {
                DescribeStyle::Photo => Err("describing a photo needs Fooocus's BLIP caption model, which this focal cannot run \
                                             yet (image_type Anime, the WD14 tagger, works)"
                    .into()),
                DescribeStyle::Anime => tokio::task::spawn_blocking(move || inner.anime(&image))
                    .await
                    .unwrap_or_else(|e| Err(format!("the WD14 tagger failed: {e}"))),
            }
        })
    }
}
