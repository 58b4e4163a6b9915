//! A job's ControlNets (`canny`, `cpds` controls: Fooocus's PyraCanny and CPDS) as Fooocus's
//! `apply_control_nets` runs them: each image through the `fooocus-controls` image step at the size
//! the job samples at, then the kind's control-LoRA (`controlnet/`, fetched from Fooocus's URL on
//! first use) over the loaded base model. Canny before CPDS, as Fooocus chains them. The built
//! ControlNets stay while the base model does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Tensor;
use focal_core::{Control, JobSpec};
use focal_engine::checkpoint::Checkpoint;
use focal_engine::controlnet::{self, ControlNet};
use focal_engine::SdxlModel;

use super::JobManager;

/// The ControlNet kinds this engine runs, and each one's control-LoRA in `controlnet/`.
pub const CONTROLNET_KINDS: [(&str, &str); 2] = [("canny", controlnet::CANNY_FILE), ("cpds", controlnet::CPDS_FILE)];

/// ControlNets built over one base model.
#[derive(Default)]
pub(super) struct ControlNetModels {
    base: Option<Arc<Checkpoint>>,
    nets: HashMap<PathBuf, Arc<ControlNet>>,
}

impl JobManager {
    /// The job's ControlNets with their control images at `size` (the size sampled at).
    pub(super) fn prepare_controlnets(
        &self,
        id: &str,
        spec: &JobSpec,
        base: &SdxlModel,
        size: (u32, u32),
        models: &mut ControlNetModels,
    ) -> Result<Vec<controlnet::Control>, String> {
        let ordered: Vec<(&Control, &str)> = CONTROLNET_KINDS
            .iter()
            .flat_map(|(kind, file)| spec.controls.iter().filter(move |c| c.kind == *kind).map(move |c| (c, *file)))
            .collect();
        if ordered.is_empty() {
            return Ok(vec![]);
        }
        let _span = tracing::info_span!("controlnets", count = ordered.len()).entered();
        if !models.base.as_ref().is_some_and(|b| Arc::ptr_eq(b, &base.weights)) {
            *models = ControlNetModels { base: Some(base.weights.clone()), nets: HashMap::new() };
        }
        let pipeline = self.images.get().ok_or("this host runs no image steps, and ControlNets need the fooocus-controls step")?;
        let device = self.options.device.clone();
        let mut controls = Vec::with_capacity(ordered.len());
        for (control, file) in ordered {
            let url = format!("{}{file}", controlnet::MODELS_URL);
            let path = self.image_prompt_file(id, "controlnet", file, &url)?;
            let net = match models.nets.get(&path) {
                Some(net) => net.clone(),
                None => {
                    let net = ControlNet::load_control_lora(&path, &base.weights, base.dtype, &device)
                        .map_err(|e| format!("cannot load the {} ControlNet ({e})", control.kind))?;
                    let net = Arc::new(net);
                    models.nets.insert(path, net.clone());
                    net
                }
            };
            let image = self.prepared_control_image(pipeline.as_ref(), control, size)?;
            let values: Vec<f32> = image.data.iter().map(|&b| b as f32 / 255.0).collect();
            let hint = Tensor::from_vec(values, (size.1 as usize, size.0 as usize, 3), &device)
                .and_then(|t| t.permute((2, 0, 1))?.unsqueeze(0)?.contiguous())
                .map_err(|e| e.to_string())?;
            // The request's decimals, not the f32's binary expansions (Fooocus computes in f64).
            let decimal = |v: f32| v.to_string().parse::<f64>().unwrap_or(v as f64);
            controls.push(controlnet::Control { net, hint, strength: decimal(control.weight), stop: decimal(control.stop_at) });
        }
        Ok(controls)
    }
}
