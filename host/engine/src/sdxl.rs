//! An SDXL base model: both text encoders, the UNet and the VAE from one checkpoint, plus the
//! conditioning SDXL expects (penultimate hidden states, pooled bigG output, size embeddings).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::clip::VECTOR_ID_BASE;
use crate::clip::{Activation, ClipTextModel};
use crate::embeddings::Embeddings;
use crate::error::{EngineError, Result};
use crate::lora::{LoraReport, LoraSpec};
use crate::nn::timestep_embedding;
use crate::precision;
use crate::tokenizer::{ClipTokenizer, EOS};
use crate::unet::UNet;
use crate::vae::AutoEncoder;

/// Text conditioning for one prompt.
#[derive(Clone, Debug)]
pub struct Conditioning {
    /// `[1, 77·chunks, clip_l + clip_g]`.
    pub context: Tensor,
    /// bigG pooled output of the first chunk, `[1, proj]`.
    pub pooled: Tensor,
}

/// The size ids SDXL's ADM vector embeds: `[orig_h, orig_w, crop_top, crop_left, target_h, target_w]`.
#[derive(Clone, Copy, Debug)]
pub struct SizeIds {
    pub height: u32,
    pub width: u32,
    pub crop_top: u32,
    pub crop_left: u32,
    pub target_height: u32,
    pub target_width: u32,
}

impl SizeIds {
    pub fn plain(width: u32, height: u32) -> Self {
        Self { height, width, crop_top: 0, crop_left: 0, target_height: height, target_width: width }
    }
}

#[derive(Clone)]
pub struct LoadOptions {
    pub dtype: DType,
    pub device: Device,
    /// LoRAs merged into the weights at load.
    pub loras: Vec<LoraSpec>,
    /// Where `embedding:NAME` prompt words are looked up (`None`: they are plain text).
    pub embeddings_dir: Option<std::path::PathBuf>,
    /// A VAE file that replaces the checkpoint's (`None`: the checkpoint's own).
    pub vae: Option<std::path::PathBuf>,
    /// The VAE's dtype (`None`: [`precision::default_vae_dtype`] for the device and `dtype`).
    pub vae_dtype: Option<DType>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dtype: DType::F32, device: Device::Cpu, loras: Vec::new(), embeddings_dir: None, vae: None, vae_dtype: None }
    }
}

impl LoadOptions {
    /// The VAE's dtype: the one named, else the device's default for `dtype`.
    pub fn vae_dtype(&self) -> DType {
        self.vae_dtype.unwrap_or_else(|| precision::default_vae_dtype(&self.device, self.dtype))
    }

    /// Refuse dtypes the device cannot compute in, naming the option.
    pub fn check_supported(&self) -> Result<()> {
        precision::check_supported(&self.device, self.dtype, "dtype")?;
        precision::check_supported(&self.device, self.vae_dtype(), "vae_dtype")
    }
}

pub struct SdxlModel {
    pub clip_l: ClipTextModel,
    pub clip_g: ClipTextModel,
    pub unet: UNet,
    pub vae: AutoEncoder,
    pub tokenizer: ClipTokenizer,
    pub dtype: DType,
    pub device: Device,
    /// What merging `LoadOptions::loras` did (unmerged keys are listed for the caller to report).
    pub lora_report: LoraReport,
    pub embeddings: Option<Embeddings>,
    /// The weights it was built from (memory-mapped; LoRAs merged as read): a control-LoRA
    /// copies the UNet's encoder from them.
    pub weights: Arc<Checkpoint>,
}

impl SdxlModel {
    #[tracing::instrument(name = "engine.load_checkpoint", skip_all, fields(path = %path.display(), dtype = ?opts.dtype, vae_dtype = ?opts.vae_dtype()))]
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        opts.check_supported()?;
        let ckpt = Checkpoint::open(path)?;
        let ckpt = match &opts.vae {
            Some(vae) => ckpt.with_vae(vae)?,
            None => ckpt,
        };
        let (ckpt, lora_report) = ckpt.with_loras(&opts.loras)?;
        let ckpt = Arc::new(ckpt);
        let vb = ckpt.var_builder(opts.dtype, &opts.device);
        let fail = |part: &str, e: candle_core::Error| EngineError::checkpoint(path, format!("cannot build the {part}: {e}"));
        let act_l = Activation::from_config(ckpt.clip_l_act.as_deref(), Activation::QuickGelu);
        let act_g = Activation::from_config(ckpt.clip_g_act.as_deref(), Activation::Gelu);
        // Text encoders stay in f32 (as in ComfyUI/Fooocus): they are small and precision-sensitive.
        let vb32 = ckpt.var_builder(DType::F32, &opts.device);
        let clip_l = ClipTextModel::new(vb32.pp("clip_l"), act_l).map_err(|e| fail("CLIP-L text encoder", e))?;
        let clip_g = ClipTextModel::new(vb32.pp("clip_g"), act_g).map_err(|e| fail("bigG text encoder", e))?;
        let unet = UNet::new(vb.pp("unet")).map_err(|e| fail("UNet", e))?;
        let vae = AutoEncoder::new(ckpt.var_builder(opts.vae_dtype(), &opts.device).pp("vae")).map_err(|e| fail("VAE", e))?;
        if let Some(ctx) = unet.context_dim {
            if ctx != clip_l.width + clip_g.width {
                return Err(EngineError::checkpoint(
                    path,
                    format!("UNet context width {ctx} does not match the text encoders ({} + {})", clip_l.width, clip_g.width),
                ));
            }
        }
        let embeddings = opts.embeddings_dir.as_ref().map(Embeddings::new);
        Ok(Self {
            clip_l,
            clip_g,
            unet,
            vae,
            tokenizer: ClipTokenizer::bundled(),
            dtype: opts.dtype,
            device: opts.device.clone(),
            lora_report,
            embeddings,
            weights: ckpt,
        })
    }

    /// Encode a prompt as Fooocus does (`clip_skip` 2 = penultimate layer, SDXL's default):
    /// `(text:w)` weights, words packed into 77-token windows, both encoders' hidden states
    /// concatenated per token, the pooled vector from CLIP-G's first window.
    pub fn encode_prompt(&self, prompt: &str, clip_skip: usize) -> Result<Conditioning> {
        let (l, l_vectors) = self.windows(prompt, EOS, "clip_l", self.clip_l.width);
        let (g, g_vectors) = self.windows(prompt, 0, "clip_g", self.clip_g.width);
        let (context_l, _) = self.clip_l.encode_weighted(&l, &l_vectors, EOS, clip_skip, false, &self.device)?;
        let (context_g, pooled) = self.clip_g.encode_weighted(&g, &g_vectors, 0, clip_skip, true, &self.device)?;
        self.conditioning(context_l, context_g, pooled)
    }

    /// One encoder's weighted windows, with the vectors behind its embedding ids (`None` for an
    /// embedding of another width, which the encoder drops, as ComfyUI does).
    #[allow(clippy::type_complexity)] // (token windows with weights, embedding vectors): read where used
    pub fn windows(&self, prompt: &str, pad: u32, key: &str, width: usize) -> (Vec<(Vec<u32>, Vec<f32>)>, Vec<Option<Tensor>>) {
        let Some(embeddings) = &self.embeddings else { return (self.tokenizer.weighted_chunks(prompt, pad), vec![]) };
        let mut vectors: Vec<Option<Tensor>> = Vec::new();
        let mut resolve = |name: &str| -> Option<Vec<u32>> {
            let t = embeddings.vectors(name, key)?;
            let (n, w) = t.dims2().ok()?;
            let first = VECTOR_ID_BASE + vectors.len() as u32;
            for i in 0..n {
                vectors.push(if w == width { t.get(i).ok() } else { None });
            }
            Some((first..first + n as u32).collect())
        };
        let windows = self.tokenizer.weighted_chunks_with(prompt, pad, Some(&mut resolve));
        (windows, vectors)
    }

    /// Fooocus's `clip_encode`: each workload encoded on its own, the contexts concatenated
    /// along the sequence and the pooled vectors of the first `pool_top_k` summed.
    #[tracing::instrument(name = "engine.encode_prompt", skip_all, fields(workloads = texts.len()))]
    pub fn encode_workloads(&self, texts: &[String], pool_top_k: usize, clip_skip: usize) -> Result<Conditioning> {
        let mut contexts = Vec::with_capacity(texts.len());
        let mut pooled: Option<Tensor> = None;
        for (i, text) in texts.iter().enumerate() {
            let c = self.encode_prompt(text, clip_skip)?;
            contexts.push(c.context);
            if i < pool_top_k {
                pooled = Some(match pooled {
                    Some(sum) => (sum + c.pooled)?,
                    None => c.pooled,
                });
            }
        }
        let pooled = pooled.ok_or_else(|| EngineError::invalid("prompt", "no workload feeds the pooled vector"))?;
        Ok(Conditioning { context: Tensor::cat(&contexts, 1)?, pooled })
    }

    /// Unweighted content token ids, cut into 75-token windows.
    pub fn encode_tokens(&self, ids: &[u32], clip_skip: usize) -> Result<Conditioning> {
        let windows = |pad| -> Vec<(Vec<u32>, Vec<f32>)> {
            crate::tokenizer::chunk_ids(ids, pad).into_iter().map(|c| (c, vec![1.0; crate::tokenizer::CHUNK_LEN])).collect()
        };
        self.encode_windows(&windows(EOS), &windows(0), clip_skip)
    }

    fn encode_windows(&self, l: &[(Vec<u32>, Vec<f32>)], g: &[(Vec<u32>, Vec<f32>)], clip_skip: usize) -> Result<Conditioning> {
        let (context_l, _) = self.clip_l.encode_weighted(l, &[], EOS, clip_skip, false, &self.device)?;
        let (context_g, pooled) = self.clip_g.encode_weighted(g, &[], 0, clip_skip, true, &self.device)?;
        self.conditioning(context_l, context_g, pooled)
    }

    fn conditioning(&self, context_l: Tensor, context_g: Tensor, pooled: Option<Tensor>) -> Result<Conditioning> {
        let pooled = pooled.ok_or_else(|| EngineError::invalid("checkpoint", "bigG has no text_projection"))?;
        Ok(Conditioning { context: Tensor::cat(&[context_l, context_g], 2)?, pooled })
    }

    /// The ADM vector `y = [pooled, e(h), e(w), e(crop_top), e(crop_left), e(target_h), e(target_w)]`.
    pub fn adm(&self, pooled: &Tensor, size: SizeIds) -> Result<Tensor> {
        size_adm(self.unet.adm_in_channels, pooled, size, &self.device)
    }
}

/// `[pooled, e(v) for v in values]`, each `e` a 256-wide (for real SDXL) sinusoidal embedding as
/// wide as the UNet's ADM input leaves room for.
fn adm_vector(adm_in_channels: usize, pooled: &Tensor, values: &[f32], device: &Device) -> Result<Tensor> {
    let pooled_dim = pooled.dim(1)?;
    let per_id = adm_in_channels.checked_sub(pooled_dim).map(|free| free / values.len()).unwrap_or(0);
    if per_id == 0 || pooled_dim + per_id * values.len() != adm_in_channels {
        return Err(EngineError::invalid(
            "checkpoint",
            format!(
                "a pooled vector of {pooled_dim} and {} embeddings do not fill the UNet's ADM input of {adm_in_channels}",
                values.len()
            ),
        ));
    }
    let emb = timestep_embedding(values, per_id, device)?.flatten_all()?.unsqueeze(0)?;
    Ok(Tensor::cat(&[&pooled.to_dtype(DType::F32)?, &emb], 1)?)
}

/// The SDXL base's ADM vector (ComfyUI `SDXL.encode_adm`): pooled text and six size ids.
pub fn size_adm(adm_in_channels: usize, pooled: &Tensor, size: SizeIds, device: &Device) -> Result<Tensor> {
    let values = [size.height, size.width, size.crop_top, size.crop_left, size.target_height, size.target_width].map(|v| v as f32);
    adm_vector(adm_in_channels, pooled, &values, device)
}

/// The SDXL refiner's ADM vector (ComfyUI `SDXLRefiner.encode_adm`): pooled text, the size, a
/// zero crop and the aesthetic score.
pub fn aesthetic_adm(
    adm_in_channels: usize,
    pooled: &Tensor,
    width: u32,
    height: u32,
    aesthetic_score: f32,
    device: &Device,
) -> Result<Tensor> {
    adm_vector(adm_in_channels, pooled, &[height as f32, width as f32, 0.0, 0.0, aesthetic_score], device)
}
