//! RetinaFace's body: torchvision's ResNet-50 (`body.` in the checkpoint) up to `layer4`, whose
//! `layer2`–`layer4` outputs feed the FPN (`IntermediateLayerGetter`). Bottlenecks as torchvision
//! builds them (the stride on the 3×3); widths and block counts come from the checkpoint.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use focal_engine::nn::{conv2d, BatchNorm, Conv2d};

/// A convolution followed by its batch norm (`conv{n}` + `bn{n}`, or `downsample.0` + `.1`).
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(conv: &VarBuilder, bn: &VarBuilder, stride: usize, padding: usize) -> Result<Self> {
        Ok(Self { conv: conv2d(conv, stride, padding)?, bn: BatchNorm::new(bn)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.bn.forward(&self.conv.forward(x)?)
    }
}

struct Bottleneck {
    reduce: ConvBn,
    spatial: ConvBn,
    expand: ConvBn,
    downsample: Option<ConvBn>,
}

impl Bottleneck {
    fn new(vb: &VarBuilder, stride: usize) -> Result<Self> {
        let downsample = if vb.contains_tensor("downsample.0.weight") {
            Some(ConvBn::new(&vb.pp("downsample.0"), &vb.pp("downsample.1"), stride, 0)?)
        } else {
            None
        };
        Ok(Self {
            reduce: ConvBn::new(&vb.pp("conv1"), &vb.pp("bn1"), 1, 0)?,
            spatial: ConvBn::new(&vb.pp("conv2"), &vb.pp("bn2"), stride, 1)?,
            expand: ConvBn::new(&vb.pp("conv3"), &vb.pp("bn3"), 1, 0)?,
            downsample,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.reduce.forward(x)?.relu()?;
        let h = self.spatial.forward(&h)?.relu()?;
        let h = self.expand.forward(&h)?;
        let identity = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        (h + identity)?.relu()
    }
}

pub struct ResNet {
    stem: ConvBn,
    /// `layer1`..`layer4`.
    layers: [Vec<Bottleneck>; 4],
}

impl ResNet {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        let stem = ConvBn::new(&vb.pp("conv1"), &vb.pp("bn1"), 2, 3)?;
        let layer = |i: usize| -> Result<Vec<Bottleneck>> {
            let lv = vb.pp(format!("layer{}", i + 1));
            let count = (0..).take_while(|b| lv.contains_tensor(&format!("{b}.conv1.weight"))).count();
            if count == 0 {
                candle_core::bail!("body.layer{} has no blocks", i + 1);
            }
            (0..count).map(|b| Bottleneck::new(&lv.pp(b.to_string()), if b == 0 && i > 0 { 2 } else { 1 })).collect()
        };
        Ok(Self { stem, layers: [layer(0)?, layer(1)?, layer(2)?, layer(3)?] })
    }

    /// The outputs of `layer2`, `layer3` and `layer4`.
    pub fn forward(&self, x: &Tensor) -> Result<[Tensor; 3]> {
        let x = self.stem.forward(x)?.relu()?;
        // 3×3 max pool, stride 2, padding 1: after the ReLU every value is ≥ 0, so zero padding
        // is the same as torch's −∞ padding.
        let mut x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 2)?;
        let mut outputs = Vec::with_capacity(3);
        for (i, layer) in self.layers.iter().enumerate() {
            for block in layer {
                x = block.forward(&x)?;
            }
            if i > 0 {
                outputs.push(x.clone());
            }
        }
        let [a, b, c]: [Tensor; 3] = outputs.try_into().expect("three layers after layer1");
        Ok([a, b, c])
    }
}
