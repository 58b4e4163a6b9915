//! Classifier-free guidance around the UNet: the conditioning of each stage (base, refiner),
//! the "joint" refiner swap inside one sampling run, and Fooocus's sampling patches.

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::Architecture;
use crate::controlnet::{self, Control};
use crate::error::Result;
use crate::freeu::FreeU;
use crate::ip_adapter::{current_step, Half, ImagePrompt, ImagePromptCall};
use crate::patches::{self, FooocusPatches};
use crate::refiner::{refiner_adm, RefinerModel};
use crate::sampling::Denoiser;
use crate::schedule::{ModelSampling, Prediction, EDM_SIGMA_DATA};
use crate::sdxl::{size_adm, Conditioning, SdxlModel, SizeIds};
use crate::unet::{Patches, UNet};

/// Context and ADM vector of one prompt; with Fooocus's patches, the ADM vector switches from
/// `y` (emphasized sizes) to `y_late` once the timestep passes `adm_end`.
struct Cond {
    context: Tensor,
    y: Tensor,
    y_late: Option<Tensor>,
}

impl Cond {
    fn y_at(&self, t: f32, patches: Option<&FooocusPatches>) -> &Tensor {
        match (&self.y_late, patches) {
            (Some(late), Some(p)) if !patches::adm_emphasized(t, p.adm_end) => late,
            _ => &self.y,
        }
    }

    /// An SDXL-architecture UNet's conditioning; `adm_scale` = Fooocus's ADM scaler for it.
    fn sdxl(unet: &UNet, dtype: DType, device: &Device, c: &Conditioning, size: SizeIds, adm_scale: Option<f32>) -> Result<Self> {
        let adm = |s: SizeIds| -> Result<Tensor> { Ok(size_adm(unet.adm_in_channels, &c.pooled, s, device)?.to_dtype(dtype)?) };
        let context = c.context.to_dtype(dtype)?;
        Ok(match adm_scale {
            None => Cond { context, y: adm(size)?, y_late: None },
            Some(s) => {
                let (emphasized, consistent) = patches::adm_sizes(size.width, size.height, s);
                Cond { context, y: adm(emphasized)?, y_late: Some(adm(consistent)?) }
            }
        })
    }
}

/// One UNet with the conditioning it samples under.
struct Stage<'a> {
    unet: &'a UNet,
    dtype: DType,
    cond: Cond,
    uncond: Cond,
    freeu: Option<FreeU>,
    /// The inpaint head's feature, on the base model only (Fooocus patches `final_unet`).
    inpaint_feature: Option<Tensor>,
    /// Image prompts, on the base model only (the same).
    image_prompts: Vec<ImagePrompt>,
    /// ControlNets and Fooocus's softness, on the base model only (the same).
    controls: Vec<Control>,
    control_softness: f64,
    /// `[cond; uncond]` contexts as one batch when their lengths match, built once: the same
    /// tensor every step lets the cross-attentions keep its keys and values.
    paired_context: Option<Tensor>,
}

/// The two contexts batched, when they have the same length.
fn paired_context(cond: &Cond, uncond: &Cond) -> Result<Option<Tensor>> {
    Ok(if cond.context.dims() == uncond.context.dims() { Some(Tensor::cat(&[&cond.context, &uncond.context], 0)?) } else { None })
}

impl<'a> Stage<'a> {
    fn base(
        model: &'a SdxlModel,
        cond: &Conditioning,
        uncond: &Conditioning,
        size: SizeIds,
        patches: Option<FooocusPatches>,
    ) -> Result<Self> {
        let (unet, dt, dev) = (&model.unet, model.dtype, &model.device);
        let cond = Cond::sdxl(unet, dt, dev, cond, size, patches.map(|p| p.adm_positive))?;
        let uncond = Cond::sdxl(unet, dt, dev, uncond, size, patches.map(|p| p.adm_negative))?;
        Ok(Self {
            unet,
            dtype: dt,
            paired_context: paired_context(&cond, &uncond)?,
            cond,
            uncond,
            freeu: None,
            inpaint_feature: None,
            image_prompts: Vec::new(),
            controls: Vec::new(),
            control_softness: 0.0,
        })
    }

    /// Fooocus re-encodes the conditioning for the refiner: an SDXL-architecture one gets the
    /// base's (ADM scaling included), an SDXL refiner the bigG context and aesthetic scores.
    fn refiner(
        base: &SdxlModel,
        model: &'a RefinerModel,
        cond: &Conditioning,
        uncond: &Conditioning,
        size: SizeIds,
        patches: Option<FooocusPatches>,
    ) -> Result<Self> {
        let (unet, dt, dev) = (&model.unet, model.dtype, &model.device);
        let (cond, uncond) = (model.conditioning(cond, base)?, model.conditioning(uncond, base)?);
        let (c, u) = match model.architecture {
            Architecture::Sdxl => (
                Cond::sdxl(unet, dt, dev, &cond, size, patches.map(|p| p.adm_positive))?,
                Cond::sdxl(unet, dt, dev, &uncond, size, patches.map(|p| p.adm_negative))?,
            ),
            Architecture::SdxlRefiner => {
                let build = |c: &Conditioning, negative: bool| -> Result<Cond> {
                    let y = refiner_adm(model, &c.pooled, size.width, size.height, negative)?.to_dtype(dt)?;
                    Ok(Cond { context: c.context.to_dtype(dt)?, y, y_late: None })
                };
                (build(&cond, false)?, build(&uncond, true)?)
            }
            Architecture::Sd15 => {
                // No ADM input: the UNet ignores `y`.
                let build = |c: &Conditioning| -> Result<Cond> {
                    Ok(Cond { context: c.context.to_dtype(dt)?, y: Tensor::zeros((1, 1), dt, dev)?, y_late: None })
                };
                (build(&cond)?, build(&uncond)?)
            }
        };
        Ok(Self {
            unet,
            dtype: dt,
            paired_context: paired_context(&c, &u)?,
            cond: c,
            uncond: u,
            freeu: None,
            inpaint_feature: None,
            image_prompts: Vec::new(),
            controls: Vec::new(),
            control_softness: 0.0,
        })
    }

    /// `rows`: which half of CFG each batch row is.
    fn eps(&self, x_in: &Tensor, at: (f32, f32, &ModelSampling), ctx: &Tensor, y: &Tensor, rows: &[Half]) -> Result<Tensor> {
        let (sigma, t, sampling) = at;
        let prompts = ImagePromptCall { prompts: &self.image_prompts, progress: current_step(t), rows };
        let control = controlnet::residuals(&self.controls, sampling, self.control_softness, x_in, sigma, t, ctx, y)?;
        let patches = Patches {
            freeu: self.freeu.as_ref(),
            first_block_feature: self.inpaint_feature.as_ref(),
            extra_context: (!self.image_prompts.is_empty()).then_some(&prompts as _),
            control: control.as_ref(),
        };
        Ok(self.unet.forward_patched(x_in, &vec![t; x_in.dim(0)?], ctx, y, &patches)?)
    }
}

/// CFG around the UNet: `D = D_u + cfg·(D_c − D_u)`, cond and uncond in one batch when their
/// contexts have the same length; with `patches`, Fooocus's sharpness/adaptive CFG/ADM.
pub struct CfgDenoiser<'a> {
    stage: Stage<'a>,
    /// Swapped in after the first model call of the given step ("joint" swap).
    next: Option<(Stage<'a>, usize)>,
    sampling: &'a ModelSampling,
    size: SizeIds,
    cfg: f64,
    patches: Option<FooocusPatches>,
    /// `(x − D)/σ` of the last call, kept when asked for (Fooocus's `eps_record`, which the
    /// "vae" refiner swap uses as the mean of its fresh noise).
    last_eps: Option<Option<Tensor>>,
}

impl<'a> CfgDenoiser<'a> {
    pub fn new(
        model: &'a SdxlModel,
        sampling: &'a ModelSampling,
        cond: &Conditioning,
        uncond: &Conditioning,
        size: SizeIds,
        cfg: f32,
    ) -> Result<Self> {
        Self::with_patches(model, sampling, cond, uncond, size, cfg, None)
    }

    pub fn with_patches(
        model: &'a SdxlModel,
        sampling: &'a ModelSampling,
        cond: &Conditioning,
        uncond: &Conditioning,
        size: SizeIds,
        cfg: f32,
        patches: Option<FooocusPatches>,
    ) -> Result<Self> {
        Ok(Self::around(Stage::base(model, cond, uncond, size, patches)?, sampling, size, cfg, patches))
    }

    /// Sampling with the refiner alone (its part of a "separate" or "vae" swap), from the
    /// base's conditioning.
    #[allow(clippy::too_many_arguments)] // the refiner's conditioning is built from each of these
    pub fn for_refiner(
        base: &SdxlModel,
        refiner: &'a RefinerModel,
        sampling: &'a ModelSampling,
        cond: &Conditioning,
        uncond: &Conditioning,
        size: SizeIds,
        cfg: f32,
        patches: Option<FooocusPatches>,
    ) -> Result<Self> {
        Ok(Self::around(Stage::refiner(base, refiner, cond, uncond, size, patches)?, sampling, size, cfg, patches))
    }

    fn around(stage: Stage<'a>, sampling: &'a ModelSampling, size: SizeIds, cfg: f32, patches: Option<FooocusPatches>) -> Self {
        Self { stage, next: None, sampling, size, cfg: cfg as f64, patches, last_eps: None }
    }

    /// Continue with `refiner` after the model call at step `switch` (Fooocus's "joint" swap:
    /// the sampler's history and noise carry on; the refiner's conditioning is made from the
    /// base's `cond`/`uncond` as [`RefinerModel::conditioning`] says).
    pub fn with_refiner(
        mut self,
        base: &SdxlModel,
        refiner: &'a RefinerModel,
        switch: usize,
        cond: &Conditioning,
        uncond: &Conditioning,
    ) -> Result<Self> {
        self.next = Some((Stage::refiner(base, refiner, cond, uncond, self.size, self.patches)?, switch));
        Ok(self)
    }

    /// Patch the base model's UNet with FreeU (as Fooocus's `apply_freeu` patches `final_unet`).
    pub fn with_freeu(mut self, freeu: Option<FreeU>) -> Self {
        self.stage.freeu = freeu;
        self
    }

    /// Patch the base model's UNet with the inpaint head's feature (Fooocus's
    /// `InpaintWorker.patch` on `final_unet`; a refiner taking over runs without it).
    pub fn with_inpaint_feature(mut self, feature: Option<Tensor>) -> Self {
        self.stage.inpaint_feature = feature;
        self
    }

    /// Patch the base model's UNet with image prompts (Fooocus's `ip_adapter.patch_model` on
    /// `final_unet`; a refiner taking over runs without them).
    pub fn with_image_prompts(mut self, prompts: Vec<ImagePrompt>) -> Self {
        self.stage.image_prompts = prompts;
        self
    }

    /// Patch the base model with ControlNets (Fooocus's `apply_controlnet` on the conditioning
    /// the base samples with), their residuals scaled by Fooocus's `softness`.
    pub fn with_controls(mut self, controls: Vec<Control>, softness: f64) -> Self {
        self.stage.controls = controls;
        self.stage.control_softness = softness;
        self
    }

    /// Keep `(x − D)/σ` of the latest call (see [`last_eps`](Self::last_eps)).
    pub fn recording_eps(mut self) -> Self {
        self.last_eps = Some(None);
        self
    }

    /// The noise prediction of the latest call, when recording.
    pub fn last_eps(&self) -> Option<&Tensor> {
        self.last_eps.as_ref().and_then(Option::as_ref)
    }
}

impl Denoiser for CfgDenoiser<'_> {
    fn first_eval_done(&mut self, step: usize) {
        // `>=`: solvers that report progress in jumps may step over the switch itself.
        if self.next.as_ref().is_some_and(|(_, switch)| step >= *switch) {
            self.stage = self.next.take().expect("checked").0;
        }
    }

    fn denoise(&mut self, x: &Tensor, sigma: f32) -> Result<Tensor> {
        let denoised = self.guided(x, sigma)?;
        if let Some(last) = self.last_eps.as_mut() {
            *last = Some(((x - &denoised)? / sigma as f64)?);
        }
        Ok(denoised)
    }
}

impl CfgDenoiser<'_> {
    fn guided(&mut self, x: &Tensor, sigma: f32) -> Result<Tensor> {
        let t = self.sampling.model_timestep(sigma);
        let s = sigma as f64;
        let prediction = self.sampling.prediction;
        let c_in = match prediction {
            Prediction::Edm => 1.0 / (s * s + EDM_SIGMA_DATA * EDM_SIGMA_DATA).sqrt(),
            Prediction::Eps | Prediction::Lcm => 1.0 / (s * s + 1.0).sqrt(),
        };
        let stage = &self.stage;
        let x_in = (x * c_in)?.to_dtype(stage.dtype)?;
        let to_denoised = |out: Tensor| -> Result<Tensor> {
            let out = out.to_dtype(DType::F32)?;
            match prediction {
                Prediction::Eps => Ok((x - (out * s)?)?),
                Prediction::Lcm => {
                    // LCM boundary conditions (σ_data = 0.5, timestep × 10).
                    let x0 = (x - (out * s)?)?;
                    let ts = t as f64 * 10.0;
                    let c_skip = 0.25 / (ts * ts + 0.25);
                    let c_out = ts / (ts * ts + 0.25).sqrt();
                    Ok(((x0 * c_out)? + (x * c_skip)?)?)
                }
                Prediction::Edm => {
                    let sd2 = EDM_SIGMA_DATA * EDM_SIGMA_DATA;
                    let c_out = s * EDM_SIGMA_DATA / (s * s + sd2).sqrt();
                    Ok(((x * (sd2 / (s * s + sd2)))? + (out * c_out)?)?)
                }
            }
        };
        let patches = self.patches.as_ref();
        let at = (sigma, t, self.sampling);
        let (yc, yu) = (stage.cond.y_at(t, patches), stage.uncond.y_at(t, patches));
        if (self.cfg - 1.0).abs() < 1e-6 {
            // Fooocus too: at CFG 1 only the positive branch runs, unpatched.
            return to_denoised(stage.eps(&x_in, at, &stage.cond.context, yc, &[Half::Cond])?);
        }
        let (ec, eu) = if let Some(ctx) = &stage.paired_context {
            let both = Tensor::cat(&[&x_in, &x_in], 0)?;
            let y = Tensor::cat(&[yc, yu], 0)?;
            let eps = stage.eps(&both, at, ctx, &y, &[Half::Cond, Half::Uncond])?;
            (eps.narrow(0, 0, 1)?, eps.narrow(0, 1, 1)?)
        } else {
            (
                stage.eps(&x_in, at, &stage.cond.context, yc, &[Half::Cond])?,
                stage.eps(&x_in, at, &stage.uncond.context, yu, &[Half::Uncond])?,
            )
        };
        let (dc, du) = (to_denoised(ec)?, to_denoised(eu)?);
        let Some(p) = patches else {
            return Ok((&du + ((dc - &du)? * self.cfg)?)?);
        };
        // Fooocus works on x − x0 ("eps" in σ units): sharpen the positive one, then CFG.
        let progress = patches::progress(t);
        let (eps_pos, eps_neg) = ((x - &dc)?, (x - &du)?);
        let alpha = 0.001 * p.sharpness as f64 * progress;
        let eps_pos = if alpha != 0.0 {
            let filtered = patches::anisotropic_filter(&eps_pos, &dc)?;
            ((filtered * alpha)? + (eps_pos * (1.0 - alpha))?)?
        } else {
            eps_pos
        };
        let eps = patches::compute_cfg(&eps_neg, &eps_pos, self.cfg, p.adaptive_cfg as f64, progress)?;
        Ok((x - eps)?)
    }
}
