//! A job's image prompts (`image-prompt` and `face` controls) as Fooocus's `apply_control_nets`
//! runs them: each image through the `fooocus-controls` image step (the operator may replace it),
//! then the CLIP vision tower and the kind's IP-Adapter Plus (`controlnet/`, with Fooocus's negative
//! tokens), fetched from Fooocus's URLs on first use. Image prompts come before face prompts, as
//! Fooocus patches them. The models stay loaded between jobs that use them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Tensor;
use focal_core::{Control, JobSpec, StepCall};
use focal_engine::clip_vision::{self, ClipVision};
use focal_engine::image::RgbImage;
use focal_engine::ip_adapter::{self, ImagePrompt, IpAdapter};

use super::JobManager;
use crate::images::image_from_rgb;

/// The image step that prepares control images (built in; a plugin of that name replaces it).
pub const CONTROLS_STEP: &str = "fooocus-controls";

/// The control kinds this engine runs, and each one's adapter file in `controlnet/`.
pub const IMAGE_PROMPT_KINDS: [(&str, &str); 2] = [("image-prompt", ip_adapter::PLUS_FILE), ("face", ip_adapter::PLUS_FACE_FILE)];

/// The image-prompt models the worker keeps between jobs.
#[derive(Default)]
pub(super) struct ImagePromptModels {
    vision: Option<(PathBuf, Arc<ClipVision>)>,
    negative: Option<(PathBuf, Tensor)>,
    adapters: HashMap<PathBuf, Arc<IpAdapter>>,
}

fn adapter_file(kind: &str) -> Option<&'static str> {
    IMAGE_PROMPT_KINDS.iter().find(|(k, _)| *k == kind).map(|(_, f)| *f)
}

impl JobManager {
    /// `folder/name` in the models folder, fetched from Fooocus's URL when missing.
    pub(super) fn image_prompt_file(&self, id: &str, folder: &str, name: &str, url: &str) -> Result<PathBuf, String> {
        let path = self.options.models.folder(folder).join(name);
        if !path.is_file() {
            self.download(id, url, &path).map_err(|e| format!("image prompts need models/{folder}/{name}: {e}"))?;
        }
        Ok(path)
    }

    /// The job's image prompts, encoded; empty when it has none.
    pub(super) fn encode_image_prompts(
        &self,
        id: &str,
        spec: &JobSpec,
        models: &mut ImagePromptModels,
    ) -> Result<Vec<ImagePrompt>, String> {
        let ordered: Vec<&Control> =
            IMAGE_PROMPT_KINDS.iter().flat_map(|(kind, _)| spec.controls.iter().filter(move |c| c.kind == *kind)).collect();
        if ordered.is_empty() {
            return Ok(vec![]);
        }
        let _span = tracing::info_span!("image_prompts", count = ordered.len()).entered();
        let device = self.options.device.clone();
        let vision_path = self.image_prompt_file(id, "clip_vision", clip_vision::FILE_NAME, clip_vision::URL)?;
        if models.vision.as_ref().is_none_or(|(p, _)| p != &vision_path) {
            let vision = ClipVision::load(&vision_path, &device).map_err(|e| format!("cannot load the CLIP vision model ({e})"))?;
            models.vision = Some((vision_path, Arc::new(vision)));
        }
        let vision = models.vision.as_ref().expect("loaded").1.clone();
        let url = |name: &str| format!("{}{name}", ip_adapter::MODELS_URL);
        let negative_path = self.image_prompt_file(id, "controlnet", ip_adapter::NEGATIVE_FILE, &url(ip_adapter::NEGATIVE_FILE))?;
        if models.negative.as_ref().is_none_or(|(p, _)| p != &negative_path) {
            let negative = ip_adapter::load_negative(&negative_path).map_err(|e| e.to_string())?;
            models.negative = Some((negative_path, negative));
        }
        let negative = models.negative.as_ref().expect("loaded").1.clone();
        let pipeline = self.images.get().ok_or("this host runs no image steps, and image prompts need the fooocus-controls step")?;
        let mut prompts = Vec::with_capacity(ordered.len());
        for control in ordered {
            let file = adapter_file(&control.kind).expect("filtered by kind");
            let path = self.image_prompt_file(id, "controlnet", file, &url(file))?;
            let adapter = match models.adapters.get(&path) {
                Some(a) => a.clone(),
                None => {
                    let a = Arc::new(IpAdapter::load(&path, &device).map_err(|e| format!("cannot load the IP-Adapter ({e})"))?);
                    models.adapters.insert(path.clone(), a.clone());
                    a
                }
            };
            let side = clip_vision::IMAGE_SIZE as u32;
            let rgb = self.prepared_control_image(pipeline.as_ref(), control, (side, side))?.data;
            let tokens = adapter.image_tokens(&vision, &rgb).map_err(|e| e.to_string())?;
            let embeds = adapter.embeds(&tokens, &negative).map_err(|e| e.to_string())?;
            // The request's decimals, not the f32's binary expansions (Fooocus computes in f64).
            let decimal = |v: f32| v.to_string().parse::<f64>().unwrap_or(v as f64);
            prompts.push(ImagePrompt::new(&embeds, decimal(control.stop_at), decimal(control.weight)).map_err(|e| e.to_string())?);
        }
        Ok(prompts)
    }

    /// The control's image through the controls step (options `kind`, `preprocess` and the job's
    /// `width`/`height`), which must answer `size`.
    pub(super) fn prepared_control_image(
        &self,
        pipeline: &dyn super::ImagePipeline,
        control: &Control,
        size: (u32, u32),
    ) -> Result<RgbImage, String> {
        let rgb = self.decode_input(&format!("the {} control's image", control.kind), &control.image)?;
        let call = StepCall {
            plugin: CONTROLS_STEP.into(),
            options: vec![
                ("kind".into(), control.kind.clone()),
                ("preprocess".into(), control.preprocess.to_string()),
                ("width".into(), size.0.to_string()),
                ("height".into(), size.1.to_string()),
            ]
            .into_iter()
            .chain(control.options.iter().cloned())
            .collect(),
        };
        let out = pipeline.run(std::slice::from_ref(&call), image_from_rgb(&rgb)?)?;
        if (out.width, out.height) != size {
            return Err(format!(
                "the {CONTROLS_STEP} step made the {} image {}×{}; it must be {}×{}",
                control.kind, out.width, out.height, size.0, size.1
            ));
        }
        self.decode_input(&format!("the {CONTROLS_STEP} step's image"), &out)
    }
}
