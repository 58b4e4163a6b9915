//! Opening SDXL checkpoints as they are found in a models folder: single-file LDM safetensors
//! (`models/checkpoints/*.safetensors`, the Fooocus/Civitai layout) and diffusers folders.
//!
//! Both are memory-mapped and exposed under one canonical naming, so the model code has a single
//! set of `VarBuilder` paths:
//! * `unet.*`   — LDM `openaimodel` names (`input_blocks.N…`), as ComfyUI uses them;
//! * `vae.*`    — LDM autoencoder names (`encoder.down.N.block.M…`);
//! * `clip_l.*`, `clip_g.*` — transformers CLIP names (`text_model.encoder.layers.N…`).
//!
//! Renames happen in an index built at open time; fused or transposed tensors (OpenCLIP's
//! `in_proj_weight`, `text_projection`) are split/transposed when a tensor is read. Each tensor
//! is copied once, from the mapping into the compute dtype.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::error::{EngineError, Result};
use crate::keymap::{count_indices, diffusers_vae_to_ldm, UnetKeyMap};
use crate::lora::{self, LoraPatch, LoraReport, LoraSpec};

/// LDM → diffusers UNet names, where the checkpoint names are (see `keymap`).
pub use crate::keymap::unet_ldm_to_diffusers;

/// The two SDXL UNet families Fooocus runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// SDXL base (and fine-tunes): CLIP-L + bigG context, ADM = pooled + 6 size ids.
    Sdxl,
    /// SDXL refiner: bigG-only context, ADM = pooled + h, w, crop, aesthetic score.
    SdxlRefiner,
    /// Stable Diffusion 1.5: CLIP-L context, no ADM, its own VAE and latent space.
    Sd15,
}

/// Where a canonical tensor comes from.
#[derive(Debug, Clone)]
enum Source {
    Plain {
        file: usize,
        key: String,
    },
    /// One third (q, k or v) of a fused `[3C, …]` tensor.
    Third {
        file: usize,
        key: String,
        index: usize,
    },
    Transposed {
        file: usize,
        key: String,
    },
}

impl Source {
    fn file_and_key(&self) -> (usize, &str) {
        match self {
            Source::Plain { file, key } | Source::Third { file, key, .. } | Source::Transposed { file, key } => (*file, key),
        }
    }
}

/// An opened checkpoint: memory maps plus the canonical-name index.
pub struct Checkpoint {
    path: PathBuf,
    files: Vec<MmapedSafetensors>,
    entries: HashMap<String, Source>,
    /// Activation of each text encoder when the format says it (diffusers `config.json`).
    pub clip_l_act: Option<String>,
    pub clip_g_act: Option<String>,
    /// LoRA updates merged into weights as they are read.
    loras: HashMap<String, Vec<LoraPatch>>,
    /// The file has an SD1.x/2.x text encoder (`cond_stage_model.`), which focal does not load.
    sd1_text_encoder: bool,
}

impl Checkpoint {
    /// Open an SDXL base checkpoint: a single file or a diffusers folder.
    pub fn open(path: &Path) -> Result<Self> {
        let ckpt = Self::open_any(path)?;
        ckpt.require_sdxl()?;
        Ok(ckpt)
    }

    /// Open a checkpoint of either SDXL architecture (base or refiner) without requiring the
    /// parts only a base model needs; see [`architecture`](Self::architecture).
    pub fn open_any(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(EngineError::checkpoint(path, "no such file or folder"));
        }
        let ckpt = if path.is_dir() { Self::open_diffusers(path)? } else { Self::open_single_file(path)? };
        if !ckpt.contains("unet.input_blocks.0.0.weight") {
            return Err(EngineError::checkpoint(path, "no UNet (model.diffusion_model) in this checkpoint"));
        }
        Ok(ckpt)
    }

    /// Which UNet this is, read from its tensors: without an ADM input (`label_emb`) and with
    /// convolutional transformer projections it is SD1.x (SD2.x projects linearly); the SDXL
    /// refiner's ADM vector is its pooled bigG output (as wide as its context) plus 5 × 256
    /// (size, crop, aesthetic score); the base's adds 6 × 256 to a pooled vector narrower than
    /// its CLIP-L + bigG context.
    pub fn architecture(&self) -> Result<Architecture> {
        let width = |name: &str, dim: usize| self.shape(name).and_then(|s| s.get(dim).copied());
        let adm = width("unet.label_emb.0.0.weight", 1);
        let names = self.names();
        let context = names.iter().find(|n| n.starts_with("unet.") && n.ends_with("attn2.to_k.weight")).and_then(|n| width(n, 1));
        let linear_proj = names
            .iter()
            .find(|n| n.starts_with("unet.") && n.ends_with("proj_in.weight"))
            .and_then(|n| self.shape(n))
            .map(|s| s.len() == 2);
        match (adm, context) {
            (None, Some(_)) if linear_proj == Some(false) => Ok(Architecture::Sd15),
            (None, Some(_)) => Err(EngineError::checkpoint(
                &self.path,
                "this is a Stable Diffusion 2.x checkpoint; focal runs SDXL models (SD1.5 as a refiner)",
            )),
            (Some(adm), Some(context)) if adm == context + 5 * 256 => Ok(Architecture::SdxlRefiner),
            (Some(_), Some(_)) => Ok(Architecture::Sdxl),
            _ => Err(EngineError::checkpoint(&self.path, "cannot read the UNet's ADM and context widths")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Take the VAE from `path` instead (Fooocus's `vae_name`): a standalone VAE file in LDM
    /// naming (`encoder.…`, optionally under `first_stage_model.`) or diffusers naming
    /// (`encoder.down_blocks.…`).
    pub fn with_vae(mut self, path: &Path) -> Result<Self> {
        let file = Self::mmap(path)?;
        let names: Vec<String> = file.tensors().into_iter().map(|(n, _)| n).collect();
        let index = self.files.len();
        let diffusers = names.iter().any(|n| n.starts_with("decoder.up_blocks."));
        let levels = count_indices(&names, "decoder.up_blocks.");
        let vae: HashMap<String, Source> = names
            .iter()
            .map(|n| {
                let ldm = n.strip_prefix("first_stage_model.").unwrap_or(n);
                let canonical = if diffusers { diffusers_vae_to_ldm(ldm, levels) } else { ldm.to_string() };
                (format!("vae.{canonical}"), Source::Plain { file: index, key: n.clone() })
            })
            .collect();
        if !vae.contains_key("vae.decoder.conv_in.weight") || !vae.contains_key("vae.encoder.conv_in.weight") {
            return Err(EngineError::checkpoint(path, "not an autoencoder (no encoder/decoder conv_in)"));
        }
        self.entries.retain(|k, _| !k.starts_with("vae."));
        self.entries.extend(vae);
        self.files.push(file);
        Ok(self)
    }

    /// Merge `specs` into the weights this checkpoint hands out (see `lora`).
    pub fn with_loras(mut self, specs: &[LoraSpec]) -> Result<(Self, LoraReport)> {
        let names = self.names();
        let (patches, report) = lora::load_patches(specs, &names, &|n| self.shape(n), &Device::Cpu)?;
        self.loras = patches;
        Ok((self, report))
    }

    fn mmap(path: &Path) -> Result<MmapedSafetensors> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => {}
            Some("ckpt" | "pt" | "pth" | "bin") => {
                return Err(EngineError::checkpoint(
                    path,
                    "pickle checkpoints are not loaded (they can run code); convert it to .safetensors",
                ))
            }
            _ => return Err(EngineError::checkpoint(path, "expected a .safetensors file or a diffusers folder")),
        }
        // SAFETY: the file is mapped read-only; focal never writes model files while serving.
        unsafe { MmapedSafetensors::new(path) }.map_err(|e| EngineError::checkpoint(path, format!("not a readable safetensors file ({e})")))
    }

    fn open_single_file(path: &Path) -> Result<Self> {
        let file = Self::mmap(path)?;
        let names: Vec<String> = file.tensors().into_iter().map(|(n, _)| n).collect();
        reject_other_formats(path, &names)?;
        let mut entries = HashMap::new();
        for name in &names {
            if let Some(rest) = name.strip_prefix("model.diffusion_model.") {
                entries.insert(format!("unet.{rest}"), Source::Plain { file: 0, key: name.clone() });
            } else if let Some(rest) = name.strip_prefix("first_stage_model.") {
                entries.insert(format!("vae.{rest}"), Source::Plain { file: 0, key: name.clone() });
            } else if let Some(rest) = name.strip_prefix("conditioner.embedders.0.transformer.") {
                entries.insert(format!("clip_l.{}", with_text_model_prefix(rest)), Source::Plain { file: 0, key: name.clone() });
            } else if let Some(rest) =
                name.strip_prefix("conditioner.embedders.1.model.").or_else(|| name.strip_prefix("conditioner.embedders.0.model."))
            {
                // bigG: the base's second embedder, the refiner's only one.
                for (canonical, source) in open_clip_to_hf(0, name, rest) {
                    entries.insert(format!("clip_g.{canonical}"), source);
                }
            }
        }
        let sd1_text_encoder = names.iter().any(|n| n.starts_with("cond_stage_model."));
        Ok(Self {
            path: path.to_path_buf(),
            files: vec![file],
            entries,
            clip_l_act: None,
            clip_g_act: None,
            loras: HashMap::new(),
            sd1_text_encoder,
        })
    }

    fn open_diffusers(dir: &Path) -> Result<Self> {
        if !dir.join("model_index.json").exists() {
            return Err(EngineError::checkpoint(dir, "a folder must be a diffusers pipeline (no model_index.json)"));
        }
        let find = |sub: &str, stem: &str| -> Result<PathBuf> {
            for name in [format!("{stem}.safetensors"), format!("{stem}.fp16.safetensors")] {
                let p = dir.join(sub).join(name);
                if p.exists() {
                    return Ok(p);
                }
            }
            Err(EngineError::checkpoint(dir, format!("missing {sub}/{stem}.safetensors")))
        };
        // A refiner pipeline has no `text_encoder` (CLIP-L); `require_sdxl` says so for a base.
        let mut parts = vec![("unet", find("unet", "diffusion_pytorch_model")?), ("vae", find("vae", "diffusion_pytorch_model")?)];
        if dir.join("text_encoder").is_dir() {
            parts.push(("clip_l", find("text_encoder", "model")?));
        }
        parts.push(("clip_g", find("text_encoder_2", "model")?));
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (index, (component, path)) in parts.iter().enumerate() {
            let file = Self::mmap(path)?;
            let names: Vec<String> = file.tensors().into_iter().map(|(n, _)| n).collect();
            match *component {
                "unet" => {
                    let map = UnetKeyMap::from_diffusers_names(&names);
                    for n in &names {
                        entries.insert(format!("unet.{}", map.to_ldm(n)), Source::Plain { file: index, key: n.clone() });
                    }
                }
                "vae" => {
                    let levels = count_indices(&names, "decoder.up_blocks.");
                    for n in &names {
                        entries.insert(format!("vae.{}", diffusers_vae_to_ldm(n, levels)), Source::Plain { file: index, key: n.clone() });
                    }
                }
                clip => {
                    for n in &names {
                        let canonical = if n.starts_with("text_projection") { n.clone() } else { with_text_model_prefix(n) };
                        entries.insert(format!("{clip}.{canonical}"), Source::Plain { file: index, key: n.clone() });
                    }
                }
            }
            files.push(file);
        }
        let act = |sub: &str| -> Option<String> {
            let text = std::fs::read_to_string(dir.join(sub).join("config.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            v["hidden_act"].as_str().map(str::to_string)
        };
        Ok(Self {
            path: dir.to_path_buf(),
            files,
            entries,
            clip_l_act: act("text_encoder"),
            clip_g_act: act("text_encoder_2"),
            loras: HashMap::new(),
            sd1_text_encoder: false,
        })
    }

    fn require_sdxl(&self) -> Result<()> {
        // A readable UNet says what the model is; otherwise the missing parts say it.
        match self.architecture() {
            Ok(Architecture::Sdxl) | Err(_) => {}
            Ok(Architecture::SdxlRefiner) => {
                return Err(EngineError::checkpoint(
                    &self.path,
                    "this is an SDXL refiner checkpoint; it cannot be the base model (select it as the refiner)",
                ))
            }
            Ok(Architecture::Sd15) => {
                return Err(EngineError::checkpoint(
                    &self.path,
                    "this is a Stable Diffusion 1.x checkpoint; focal runs SDXL base models (an SD1.5 model can be the refiner)",
                ))
            }
        }
        let needed = [
            ("unet.input_blocks.0.0.weight", "an SDXL UNet"),
            ("unet.label_emb.0.0.weight", "the SDXL UNet's size/pooled-text embedding (label_emb)"),
            ("vae.decoder.conv_in.weight", "a VAE"),
            ("clip_l.text_model.embeddings.token_embedding.weight", "the CLIP-L text encoder"),
            ("clip_g.text_model.embeddings.token_embedding.weight", "the OpenCLIP bigG text encoder"),
            ("clip_g.text_projection.weight", "bigG's text_projection"),
        ];
        let has = |prefix: &str| self.entries.keys().any(|k| k.starts_with(prefix));
        let hint = match (has("clip_l."), has("clip_g."), self.sd1_text_encoder) {
            (_, _, true) => " (this looks like a Stable Diffusion 1.x/2.x checkpoint)",
            (false, true, _) => " (this looks like an SDXL refiner checkpoint)",
            _ => "",
        };
        for (key, what) in needed {
            if !self.entries.contains_key(key) {
                return Err(EngineError::checkpoint(&self.path, format!("not an SDXL base checkpoint: {what} is missing{hint}")));
            }
        }
        self.architecture().map(|_| ())
    }

    /// A canonical tensor's shape, from the file header (no data read).
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let source = self.entries.get(name)?;
        let (file, key) = source.file_and_key();
        let mut dims = self.files[file].get(key).ok()?.shape().to_vec();
        match source {
            Source::Plain { .. } => {}
            Source::Third { .. } => dims[0] /= 3,
            Source::Transposed { .. } => dims.reverse(),
        }
        Some(dims)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Canonical tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Read a canonical tensor (split/transposed as needed) in `dtype`.
    pub fn tensor(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let source =
            self.entries.get(name).ok_or_else(|| candle_core::Error::Msg(format!("{}: tensor {name} is missing", self.path.display())))?;
        let (file, key) = source.file_and_key();
        let view = self.files[file].get(key)?;
        let t = candle_core::safetensors::Load::load(&view, device)?;
        // The bytes are copied out: their file pages leave this process's resident set, so a
        // load never holds the whole f16 file beside the f32 weights (a re-read faults them in).
        release_pages(view.data());
        let t = match source {
            Source::Plain { .. } => t,
            Source::Third { index, .. } => {
                let third = t.dim(0)? / 3;
                t.narrow(0, index * third, third)?
            }
            Source::Transposed { .. } => t.t()?,
        };
        let Some(patches) = self.loras.get(name) else { return crate::cpu::to_dtype(&t, dtype) };
        let mut merged = crate::cpu::to_dtype(&t, DType::F32)?;
        for p in patches {
            merged = (merged + p.delta(t.dims())?.to_device(device)?)?;
        }
        merged.to_dtype(dtype)
    }

    /// A `VarBuilder` over the canonical names, converting to `dtype` on `device`.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Backend(self.clone())), dtype, device.clone())
    }
}

struct Backend(Arc<Checkpoint>);

impl candle_nn::var_builder::SimpleBackend for Backend {
    fn get(&self, shape: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.0.tensor(name, dtype, dev)?;
        if t.shape() == &shape {
            return Ok(t);
        }
        // `[C, C, 1, 1]` 1x1-conv weights serve as `[C, C]` linear weights and vice versa.
        let squeeze = |d: &[usize]| d.iter().copied().filter(|&x| x != 1).collect::<Vec<_>>();
        if squeeze(t.dims()) == squeeze(shape.dims()) && t.elem_count() == shape.elem_count() {
            return t.reshape(shape);
        }
        Err(candle_core::Error::Msg(format!(
            "{}: tensor {name} has shape {:?}, the model expects {:?}",
            self.0.path.display(),
            t.dims(),
            shape.dims()
        )))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.tensor(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// Drops the mapped pages wholly inside `bytes` from the resident set (`MADV_DONTNEED` on a
/// read-only file mapping: the contents stay in the file and the page cache).
fn release_pages(bytes: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
        let start = (bytes.as_ptr() as usize).div_ceil(page) * page;
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if end > start {
            // SAFETY: [start, end) lies inside a live read-only mapping that no one writes;
            // discarding its pages only makes the next read fault them in from the file again.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
    #[cfg(not(unix))]
    let _ = bytes;
}

/// Names that identify checkpoints focal cannot use as an SDXL base, with what to say.
fn reject_other_formats(path: &Path, names: &[String]) -> Result<()> {
    let any = |f: &dyn Fn(&str) -> bool| names.iter().any(|n| f(n));
    let reason = if any(&|n| n.starts_with("lora_") || n.contains("lora_down") || n.contains("lora_A") || n.contains(".lora.")) {
        Some("this is a LoRA, not a checkpoint; put it in models/loras and reference it as a LoRA")
    } else if any(&|n| n.contains("joint_blocks.")) {
        Some("this is a Stable Diffusion 3 checkpoint; focal runs SDXL checkpoints")
    } else if any(&|n| n.contains("double_blocks.")) {
        Some("this is a FLUX checkpoint; focal runs SDXL checkpoints")
    } else if names.is_empty() {
        Some("the file holds no tensors")
    } else {
        None
    };
    match reason {
        Some(r) => Err(EngineError::checkpoint(path, r)),
        None => Ok(()),
    }
}

fn with_text_model_prefix(name: &str) -> String {
    if name.starts_with("text_model.") {
        name.to_string()
    } else {
        format!("text_model.{name}")
    }
}

/// OpenCLIP bigG names → transformers CLIP names (one fused qkv tensor gives three entries).
fn open_clip_to_hf(file: usize, key: &str, rest: &str) -> Vec<(String, Source)> {
    let plain = |c: String| vec![(c, Source::Plain { file, key: key.to_string() })];
    match rest {
        "token_embedding.weight" => return plain("text_model.embeddings.token_embedding.weight".into()),
        "positional_embedding" => return plain("text_model.embeddings.position_embedding.weight".into()),
        "text_projection" => return vec![("text_projection.weight".into(), Source::Transposed { file, key: key.to_string() })],
        _ => {}
    }
    if let Some(p) = rest.strip_prefix("ln_final.") {
        return plain(format!("text_model.final_layer_norm.{p}"));
    }
    let Some(layer_rest) = rest.strip_prefix("transformer.resblocks.") else { return vec![] };
    let (layer, inner) = layer_rest.split_once('.').unwrap_or((layer_rest, ""));
    let base = format!("text_model.encoder.layers.{layer}");
    if let Some(kind) = inner.strip_prefix("attn.in_proj_") {
        return ["q_proj", "k_proj", "v_proj"]
            .iter()
            .enumerate()
            .map(|(index, proj)| (format!("{base}.self_attn.{proj}.{kind}"), Source::Third { file, key: key.to_string(), index }))
            .collect();
    }
    let renamed = [
        ("attn.out_proj.", "self_attn.out_proj."),
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ]
    .iter()
    .find_map(|(from, to)| inner.strip_prefix(from).map(|p| format!("{to}{p}")));
    renamed.map(|r| plain(format!("{base}.{r}"))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tensor's pages leave the resident set once read; reading it again faults them back in
    /// from the file, unchanged.
    #[test]
    fn a_tensor_reads_the_same_after_its_pages_are_released() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-sdxl/tiny-sdxl-a.safetensors");
        let checkpoint = Checkpoint::open(&path).unwrap();
        // The largest tensor: it spans whole pages, which are the ones released.
        let size = |n: &&str| checkpoint.shape(n).unwrap().iter().product::<usize>();
        let name = checkpoint.names().into_iter().max_by_key(size).unwrap().to_string();
        assert!(size(&name.as_str()) * 2 >= 2 * 4096, "{name}: its f16 bytes should span two pages");
        let read = || checkpoint.tensor(&name, DType::F32, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let first = read();
        assert!(!first.is_empty());
        assert_eq!(first, read());
    }
}
