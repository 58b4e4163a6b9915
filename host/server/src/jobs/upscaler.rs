//! The super-resolution network an image-task component calls (`focal:plugin/upscaler`): the
//! upscaler file the job names (Fooocus's own fetched on first use), kept loaded by the worker
//! while jobs name the same file, and bounded before it runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use focal_core::image_task::UpscaleService;
use focal_core::Image;
use focal_engine::esrgan::{Esrgan, FOOOCUS_UPSCALER};

use super::JobManager;
use crate::images::image_from_rgb;

/// Fooocus's upscaler download (`modules/config.py:downloading_upscale_model`).
const UPSCALER_URL: &str = "https://huggingface.co/lllyasviel/misc/resolve/main/fooocus_upscaler_s409985e5.bin";

/// The largest super-resolved image (pixels) the network makes: 8192² (a 2048² input at ×4);
/// the blended f32 output alone is 12 bytes a pixel.
const LARGEST_UPSCALER_OUTPUT: u64 = 8192 * 8192;

/// The upscaler loaded by the worker, kept while jobs name the same file.
#[derive(Default)]
pub(super) struct Upscalers {
    loaded: Option<(PathBuf, Esrgan)>,
}

/// The network bound to one job: its upscaler choice, its download progress.
pub(super) struct JobUpscaler {
    pub(super) jobs: Arc<JobManager>,
    pub(super) id: String,
    /// A file in `upscale_models/`; empty: Fooocus's.
    pub(super) model: String,
    pub(super) upscalers: Arc<Mutex<Upscalers>>,
}

impl UpscaleService for JobUpscaler {
    /// On a thread of its own: the component's call runs inside the async runtime, where the
    /// blocking downloader (it runs a runtime of its own) may not.
    fn super_resolve(&self, image: &Image) -> Result<Image, String> {
        let job = tracing::Span::current();
        std::thread::scope(|s| s.spawn(|| job.in_scope(|| self.run(image))).join()).unwrap_or_else(|_| Err("the upscaler panicked".into()))
    }
}

impl JobUpscaler {
    fn run(&self, image: &Image) -> Result<Image, String> {
        let _span = tracing::info_span!("super_resolve", width = image.width, height = image.height).entered();
        let input = self.jobs.decode_input("the image to super-resolve", image)?;
        let mut upscalers = self.upscalers.lock().unwrap();
        let esrgan = self.jobs.upscaler(&self.id, &self.model, &mut upscalers)?;
        let s = esrgan.scale as u64;
        if input.width as u64 * s * input.height as u64 * s > LARGEST_UPSCALER_OUTPUT {
            return Err(format!(
                "image {}x{} is too large to upscale: the upscaler (×{s}) would make more than 8192² pixels",
                input.width, input.height
            ));
        }
        let out = esrgan.upscale(&input, &candle_core::Device::Cpu).map_err(|e| e.to_string())?;
        image_from_rgb(&out)
    }
}

impl JobManager {
    /// The upscaler file `name` from `upscale_models/` (Fooocus's own is fetched on first use).
    fn upscaler<'a>(&self, id: &str, name: &str, upscalers: &'a mut Upscalers) -> Result<&'a Esrgan, String> {
        let name = if name.is_empty() { FOOOCUS_UPSCALER } else { name };
        if Path::new(name).components().count() != 1 {
            return Err(format!("upscale model '{name}' must be a file name in upscale_models/"));
        }
        let path = self.options.models.folder("upscale_models").join(name);
        if upscalers.loaded.as_ref().is_none_or(|(p, _)| p != &path) {
            upscalers.loaded = None;
            if !path.is_file() {
                if name != FOOOCUS_UPSCALER {
                    return Err(format!("upscale model '{name}' is not in the models folder's upscale_models/"));
                }
                self.download(id, UPSCALER_URL, &path)
                    .map_err(|e| format!("upscaling needs models/upscale_models/{FOOOCUS_UPSCALER}: {e}"))?;
            }
            let model = Esrgan::load(&path, &candle_core::Device::Cpu).map_err(|e| format!("cannot load the upscaler: {e}"))?;
            upscalers.loaded = Some((path, model));
        }
        Ok(&upscalers.loaded.as_ref().expect("loaded above").1)
    }
}
