//! RetinaFace's FPN, its SSH context modules and the three 1×1 heads per level (facexlib's
//! `retinaface_net.py`). Like facexlib, the activations are leaky (slope 0.1) only when the FPN has
//! at most 64 channels (the small models); the ResNet-50 model's 256 run plain ReLUs.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use focal_engine::nn::{conv2d, BatchNorm, Conv2d};

/// `nn.Sequential(conv, BatchNorm2d[, LeakyReLU])` as `conv_bn`, `conv_bn1X1`, `conv_bn_no_relu`.
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
    /// `None`: no activation (`conv_bn_no_relu`).
    slope: Option<f64>,
}

impl ConvBn {
    fn new(vb: &VarBuilder, padding: usize, slope: Option<f64>) -> Result<Self> {
        Ok(Self { conv: conv2d(&vb.pp("0"), 1, padding)?, bn: BatchNorm::new(&vb.pp("1"))?, slope })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bn.forward(&self.conv.forward(x)?)?;
        match self.slope {
            None => Ok(h),
            Some(0.0) => h.relu(),
            Some(s) => h.maximum(&(&h * s)?),
        }
    }
}

/// The activation slope facexlib picks for a width.
fn slope(channels: usize) -> f64 {
    if channels <= 64 {
        0.1
    } else {
        0.0
    }
}

pub struct Fpn {
    outputs: [ConvBn; 3],
    merge1: ConvBn,
    merge2: ConvBn,
    pub channels: usize,
}

impl Fpn {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        let channels = vb.get_unchecked("output1.0.weight")?.dim(0)?;
        let s = Some(slope(channels));
        let out = |i: usize| ConvBn::new(&vb.pp(format!("output{i}")), 0, s);
        Ok(Self {
            outputs: [out(1)?, out(2)?, out(3)?],
            merge1: ConvBn::new(&vb.pp("merge1"), 1, s)?,
            merge2: ConvBn::new(&vb.pp("merge2"), 1, s)?,
            channels,
        })
    }

    pub fn forward(&self, features: &[Tensor; 3]) -> Result<[Tensor; 3]> {
        let o1 = self.outputs[0].forward(&features[0])?;
        let o2 = self.outputs[1].forward(&features[1])?;
        let o3 = self.outputs[2].forward(&features[2])?;
        let o2 = self.merge2.forward(&(&o2 + nearest_like(&o3, &o2)?)?)?;
        let o1 = self.merge1.forward(&(&o1 + nearest_like(&o2, &o1)?)?)?;
        Ok([o1, o2, o3])
    }
}

/// `F.interpolate(x, size=like's, mode='nearest')` with torch's source index: the same row,
/// half the row for an exact 2×, else `⌊dst · (in/out as f32)⌋`.
fn nearest_like(x: &Tensor, like: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (_, _, oh, ow) = like.dims4()?;
    let indices = |input: usize, output: usize| -> Result<Tensor> {
        let scale = input as f32 / output as f32;
        let idx: Vec<u32> = (0..output)
            .map(|o| {
                if output == input {
                    o
                } else if output == 2 * input {
                    o >> 1
                } else {
                    ((o as f32 * scale).floor() as usize).min(input - 1)
                }
            })
            .map(|i| i as u32)
            .collect();
        Tensor::new(idx, x.device())
    };
    x.index_select(&indices(h, oh)?, 2)?.index_select(&indices(w, ow)?, 3)
}

/// The SSH context module: a 3×3 branch (half the width) and 5×5/7×7 branches as stacked 3×3s.
pub struct Ssh {
    conv3x3: ConvBn,
    conv5x5_1: ConvBn,
    conv5x5_2: ConvBn,
    conv7x7_2: ConvBn,
    conv7x7_3: ConvBn,
}

impl Ssh {
    pub fn new(vb: &VarBuilder, channels: usize) -> Result<Self> {
        let s = Some(slope(channels));
        Ok(Self {
            conv3x3: ConvBn::new(&vb.pp("conv3X3"), 1, None)?,
            conv5x5_1: ConvBn::new(&vb.pp("conv5X5_1"), 1, s)?,
            conv5x5_2: ConvBn::new(&vb.pp("conv5X5_2"), 1, None)?,
            conv7x7_2: ConvBn::new(&vb.pp("conv7X7_2"), 1, s)?,
            conv7x7_3: ConvBn::new(&vb.pp("conv7x7_3"), 1, None)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.conv3x3.forward(x)?;
        let b1 = self.conv5x5_1.forward(x)?;
        let b = self.conv5x5_2.forward(&b1)?;
        let c = self.conv7x7_3.forward(&self.conv7x7_2.forward(&b1)?)?;
        Tensor::cat(&[a, b, c], 1)?.relu()
    }
}

/// One level's 1×1 head: `[1, anchors·k, H, W]` → `[H·W·anchors, k]` (anchors inside positions).
pub struct Head {
    conv: Conv2d,
    per_anchor: usize,
}

impl Head {
    pub fn new(vb: &VarBuilder, per_anchor: usize) -> Result<Self> {
        Ok(Self { conv: conv2d(&vb.pp("conv1x1"), 1, 0)?, per_anchor })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.conv.forward(x)?.permute((0, 2, 3, 1))?.contiguous()?;
        out.reshape(((), self.per_anchor))
    }
}
