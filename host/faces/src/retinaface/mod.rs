//! facexlib's RetinaFace (`retinaface_resnet50`, `detection_Resnet50_Final.pth`) as Fooocus's face
//! crop runs it: the whole image at its own size (`use_origin_size=True`), BGR less the means
//! (104, 117, 123), on the CPU in f32.

mod anchors;
mod necks;
mod resnet;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use focal_core::Face;

use necks::{Fpn, Head, Ssh};
use resnet::ResNet;

/// The file Fooocus's face crop loads from `models/controlnet/` (downloaded from facexlib's release).
pub const FILE_NAME: &str = "detection_Resnet50_Final.pth";
pub const URL: &str = "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth";

/// BGR channel means the detector subtracts.
const MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];

pub struct RetinaFace {
    body: ResNet,
    fpn: Fpn,
    ssh: [Ssh; 3],
    class_heads: [Head; 3],
    box_heads: [Head; 3],
    landmark_heads: [Head; 3],
    device: Device,
}

impl RetinaFace {
    /// Reads the checkpoint (a torch state dict, keys possibly under `module.` as trained with
    /// `DataParallel`; or the same keys in a `.safetensors`).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors = focal_engine::torch_file::state_dict(path, &[])?;
        Self::from_tensors(tensors, device)
    }

    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, Tensor)>, device: &Device) -> Result<Self> {
        let tensors: HashMap<String, Tensor> =
            tensors.into_iter().map(|(k, v)| (k.strip_prefix("module.").map(str::to_string).unwrap_or(k), v)).collect();
        if !tensors.contains_key("body.conv1.weight") || !tensors.contains_key("fpn.output1.0.weight") {
            bail!("not a RetinaFace ResNet checkpoint (body.conv1.weight or fpn.output1.0.weight is missing)");
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let body = ResNet::new(&vb.pp("body")).context("body")?;
        let fpn = Fpn::new(&vb.pp("fpn")).context("fpn")?;
        let ssh = |i: usize| Ssh::new(&vb.pp(format!("ssh{i}")), fpn.channels).with_context(|| format!("ssh{i}"));
        let heads = |name: &str, k: usize| -> Result<[Head; 3]> {
            let head = |i: usize| Head::new(&vb.pp(format!("{name}.{i}")), k).with_context(|| format!("{name}.{i}"));
            Ok([head(0)?, head(1)?, head(2)?])
        };
        Ok(Self {
            ssh: [ssh(1)?, ssh(2)?, ssh(3)?],
            class_heads: heads("ClassHead", 2)?,
            box_heads: heads("BboxHead", 4)?,
            landmark_heads: heads("LandmarkHead", 10)?,
            body,
            fpn,
            device: device.clone(),
        })
    }

    /// Faces in an RGB image (`width × height × 3` bytes) scoring over `threshold` (Fooocus: 0.97),
    /// best first, overlapping ones removed; boxes and landmarks in the image's pixels.
    pub fn detect(&self, rgb: &[u8], width: usize, height: usize, threshold: f32) -> Result<Vec<Face>> {
        if rgb.len() != width * height * 3 || width == 0 || height == 0 {
            bail!("{width}×{height} RGB needs {} bytes, got {}", width * height * 3, rgb.len());
        }
        let plane = width * height;
        let mut input = vec![0f32; 3 * plane];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for (c, mean) in MEAN_BGR.iter().enumerate() {
                input[c * plane + i] = px[2 - c] as f32 - mean;
            }
        }
        let x = Tensor::from_vec(input, (1, 3, height, width), &self.device)?;
        let features = self.fpn.forward(&self.body.forward(&x)?)?;
        let features: Vec<Tensor> = self.ssh.iter().zip(&features).map(|(s, f)| s.forward(f)).collect::<candle_core::Result<_>>()?;
        let run = |heads: &[Head; 3]| -> Result<Vec<f32>> {
            let parts: Vec<Tensor> = heads.iter().zip(&features).map(|(h, f)| h.forward(f)).collect::<candle_core::Result<_>>()?;
            Ok(Tensor::cat(&parts, 0)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let scores = softmax_pairs(run(&self.class_heads)?);
        let boxes = run(&self.box_heads)?;
        let landmarks = run(&self.landmark_heads)?;
        let priors = anchors::priors(height, width);
        if priors.len() * 2 != scores.len() {
            bail!("the heads scored {} anchors for {} priors", scores.len() / 2, priors.len());
        }
        let raw = anchors::Raw { priors: &priors, boxes: &boxes, scores: &scores, landmarks: &landmarks, width, height };
        Ok(anchors::faces(&raw, threshold))
    }
}

/// Softmax over each (background, face) pair.
fn softmax_pairs(mut logits: Vec<f32>) -> Vec<f32> {
    for pair in logits.chunks_exact_mut(2) {
        let max = pair[0].max(pair[1]);
        let (a, b) = ((pair[0] - max).exp(), (pair[1] - max).exp());
        let sum = a + b;
        pair[0] = a / sum;
        pair[1] = b / sum;
    }
    logits
}
