//! The WD14 MOAT tagger as Fooocus runs it (`extras/wd14tagger.py:default_interrogator`): the image
//! fitted into the model's square input with PIL's LANCZOS, centred on white, fed as BGR floats
//! 0–255 (NHWC), the sigmoid outputs read against the tag list.

use std::path::Path;

use anyhow::{bail, Context, Result};
use focal_imageops::{resize_lanczos, Pixels};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// The largest input side accepted from a model file (the real tagger takes 448).
const MAX_SIDE: usize = 2048;

type Runnable = std::sync::Arc<TypedRunnableModel>;

pub struct Wd14Tagger {
    model: Runnable,
    side: usize,
    tags: crate::TagList,
}

impl Wd14Tagger {
    /// Loads `wd-v1-4-moat-tagger-v2.onnx` and its `.csv`; the input side comes from the model
    /// (`input.shape[1]`, as Fooocus reads it), the batch is fixed to one image.
    pub fn load(onnx: &Path, csv: &Path) -> Result<Self> {
        let tags = crate::TagList::parse(&std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?)?;
        let mut model = tract_onnx::onnx().model_for_path(onnx).with_context(|| format!("reading {}", onnx.display()))?;
        let side = input_side(&model)?;
        model.set_input_fact(0, f32::fact([1, side, side, 3]).into())?;
        let model = model.into_optimized()?.into_runnable().context("preparing the tagger")?;
        Ok(Wd14Tagger { model, side, tags })
    }

    /// The model's probabilities for `image` (RGB), one per tag row.
    pub fn probabilities(&self, image: &Pixels) -> Result<Vec<f32>> {
        let input = self.input(image)?;
        let outputs = self.model.run(tvec!(input.into()))?;
        let probs = outputs[0].to_plain_array_view::<f32>()?;
        let probs: Vec<f32> = probs.iter().copied().collect();
        if probs.len() != self.tags.len() {
            bail!("the tagger gives {} probabilities for {} tags in its list", probs.len(), self.tags.len());
        }
        Ok(probs)
    }

    /// Fooocus's describe line for `image` with its defaults (0.35 general, 0.85 character, nothing excluded).
    pub fn describe(&self, image: &Pixels) -> Result<String> {
        Ok(self.tags.describe(&self.probabilities(image)?, 0.35, 0.85, ""))
    }

    /// The square BGR input: `ratio = side / max(w, h)`, each side `int(x * ratio)`, LANCZOS,
    /// pasted at `((side - w') // 2, (side - h') // 2)` on white.
    fn input(&self, image: &Pixels) -> Result<Tensor> {
        if image.channels != 3 || image.width == 0 || image.height == 0 {
            bail!("the tagger takes an RGB image");
        }
        let side = self.side;
        let ratio = side as f64 / image.width.max(image.height) as f64;
        let (w, h) = (((image.width as f64 * ratio) as u32).max(1), ((image.height as f64 * ratio) as u32).max(1));
        let small = resize_lanczos(image, w, h);
        let (left, top) = ((side - w as usize) / 2, (side - h as usize) / 2);
        let mut data = vec![255.0f32; side * side * 3];
        for y in 0..h as usize {
            for x in 0..w as usize {
                let px = small.pixel(x as u32, y as u32);
                let at = ((top + y) * side + left + x) * 3;
                data[at..at + 3].copy_from_slice(&[px[2] as f32, px[1] as f32, px[0] as f32]);
            }
        }
        Tensor::from_shape(&[1, side, side, 3], &data)
    }
}

/// `input.shape[1]` of the model's first input, which must be `[N, side, side, 3]`.
fn input_side(model: &InferenceModel) -> Result<usize> {
    let fact = model.input_fact(0)?;
    let dims: Vec<Option<i64>> = fact.shape.dims().map(|d| d.concretize().and_then(|d| d.to_i64().ok())).collect();
    match dims[..] {
        [_, Some(h), Some(w), Some(3)] if h == w && h > 0 && h as usize <= MAX_SIDE => Ok(h as usize),
        _ => bail!("the tagger's input is not [N, side, side, 3] with side ≤ {MAX_SIDE}: {dims:?}"),
    }
}
