//! The host side of `focal:plugin/faces`: Fooocus's face detector for FaceSwap's crop, loaded on
//! first use from the models folder's `controlnet/` (fetched from facexlib's release when
//! missing, as Fooocus does) and kept. One image at a time; images over the detector's size
//! are refused, not shrunk (Fooocus runs it at the image's own size).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use focal_core::services::{BoxFuture, FaceService};
use focal_core::{Face, Image};
use focal_faces::{retinaface, RetinaFace};

use crate::decode::{self, ImageLimits};
use crate::describe::{fetch, loaded};

pub struct HostFaces {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<models>/controlnet`, where Fooocus keeps the detector.
    folder: PathBuf,
    allow_downloads: bool,
    limits: ImageLimits,
    detector: Mutex<Option<Arc<RetinaFace>>>,
    running: Mutex<()>,
}

impl HostFaces {
    pub fn new(folder: PathBuf, allow_downloads: bool, limits: ImageLimits) -> Self {
        let inner = Inner { folder, allow_downloads, limits, detector: Mutex::new(None), running: Mutex::new(()) };
        HostFaces { inner: Arc::new(inner) }
    }
}

impl Inner {
    fn detector(&self) -> Result<Arc<RetinaFace>, String> {
        loaded(&self.detector, || {
            let path = self.folder.join(retinaface::FILE_NAME);
            let url = retinaface::URL;
            if !path.is_file() {
                let needs = format!("face detection needs {}", path.display());
                if !self.allow_downloads {
                    return Err(format!("{needs}: downloads are off; download it from {url} and put it there"));
                }
                fetch(url, &path).map_err(|e| format!("{needs} ({e}); download it from {url} and put it there"))?;
            }
            let model = RetinaFace::load(&path, &candle_core::Device::Cpu).map_err(|e| format!("loading {}: {e:#}", path.display()))?;
            tracing::info!("face detector loaded from {}", path.display());
            Ok(model)
        })
    }

    fn detect(&self, image: &Image, min_score: f32) -> Result<Vec<Face>, String> {
        let pixels = image.width as usize * image.height as usize;
        if pixels > focal_faces::MAX_PIXELS {
            return Err(format!(
                "the face detector takes images up to {} pixels (4096×4096); this one is {}×{}: send a smaller one",
                focal_faces::MAX_PIXELS,
                image.width,
                image.height
            ));
        }
        let _turn = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let rgb = decode::decode(&image.encoded, &self.limits).map_err(|e| format!("the image: {e:#}"))?;
        let detector = self.detector()?;
        detector
            .detect(&rgb.data, rgb.width as usize, rgb.height as usize, min_score)
            .map_err(|e| format!("the face detector failed: {e:#}"))
    }
}

impl FaceService for HostFaces {
    /// On a blocking thread, as the describe models run.
    fn detect(&self, image: Image, min_score: f32) -> BoxFuture<'_, Result<Vec<Face>, String>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.detect(&image, min_score))
                .await
                .unwrap_or_else(|e| Err(format!("face detection failed: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_over_the_detectors_size_are_refused_before_anything_is_decoded_or_loaded() {
        let faces = HostFaces::new(PathBuf::from("/nonexistent"), false, ImageLimits::default());
        let image = Image { width: 4097, height: 4096, encoded: Arc::from(&b"not decoded"[..]) };
        let err = faces.inner.detect(&image, 0.97).unwrap_err();
        assert!(err.contains("up to 16777216 pixels") && err.contains("4097×4096"), "{err}");
        // Within the size, the image is decoded under the host's limits first.
        let small = Image { width: 8, height: 8, encoded: Arc::from(&b"x"[..]) };
        let err = faces.inner.detect(&small, 0.97).unwrap_err();
        assert!(err.starts_with("the image"), "{err}");
    }
}
