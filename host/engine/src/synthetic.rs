//! Random-weight SDXL checkpoints of any size, written in the single-file LDM layout that the
//! loader reads. They exist for benchmarks (full-size shapes without a download; compute does
//! not depend on the weight values) and for testing the loader against a known architecture.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::Result;

/// The hyper-parameters that fix every tensor shape of an SDXL checkpoint.
#[derive(Clone, Debug)]
pub struct SdxlArchitecture {
    pub model_channels: usize,
    pub channel_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Transformer depth per level (0 = no attention); the middle block uses the last level's.
    pub transformer_depth: Vec<usize>,
    pub time_embed_dim: usize,
    pub adm_size_dim: usize,
    pub clip_l: TextEncoderShape,
    pub clip_g: TextEncoderShape,
    pub vae_channels: usize,
    pub vae_mult: Vec<usize>,
    pub vae_res_blocks: usize,
    pub latent_channels: usize,
}

#[derive(Clone, Debug)]
pub struct TextEncoderShape {
    pub width: usize,
    pub layers: usize,
    pub mlp: usize,
}

impl SdxlArchitecture {
    /// Stable Diffusion XL 1.0 base (2.57 B UNet parameters).
    pub fn sdxl_base() -> Self {
        Self {
            model_channels: 320,
            channel_mult: vec![1, 2, 4],
            num_res_blocks: 2,
            transformer_depth: vec![0, 2, 10],
            time_embed_dim: 1280,
            adm_size_dim: 256,
            clip_l: TextEncoderShape { width: 768, layers: 12, mlp: 3072 },
            clip_g: TextEncoderShape { width: 1280, layers: 32, mlp: 5120 },
            vae_channels: 128,
            vae_mult: vec![1, 2, 4, 4],
            vae_res_blocks: 2,
            latent_channels: 4,
        }
    }

    /// Every tensor `(name, shape)` of the single-file checkpoint.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut t = Tensors::default();
        self.unet(&mut t);
        self.vae(&mut t);
        self.text_encoders(&mut t);
        t.0
    }

    fn unet(&self, t: &mut Tensors) {
        let p = "model.diffusion_model";
        let (mc, te) = (self.model_channels, self.time_embed_dim);
        let ctx = self.clip_l.width + self.clip_g.width;
        let adm = self.clip_g.width + 6 * self.adm_size_dim;
        t.linear(&format!("{p}.time_embed.0"), mc, te);
        t.linear(&format!("{p}.time_embed.2"), te, te);
        t.linear(&format!("{p}.label_emb.0.0"), adm, te);
        t.linear(&format!("{p}.label_emb.0.2"), te, te);
        t.conv(&format!("{p}.input_blocks.0.0"), 4, mc, 3);
        let levels = self.channel_mult.len();
        let mut skips = vec![mc];
        let mut ch = mc;
        let mut idx = 1;
        for (level, mult) in self.channel_mult.iter().enumerate() {
            let out = mc * mult;
            for _ in 0..self.num_res_blocks {
                t.resblock(&format!("{p}.input_blocks.{idx}.0"), ch, out, te);
                ch = out;
                if self.transformer_depth[level] > 0 {
                    t.transformer(&format!("{p}.input_blocks.{idx}.1"), ch, self.transformer_depth[level], ctx);
                }
                skips.push(ch);
                idx += 1;
            }
            if level + 1 < levels {
                t.conv(&format!("{p}.input_blocks.{idx}.0.op"), ch, ch, 3);
                skips.push(ch);
                idx += 1;
            }
        }
        let mid_depth = *self.transformer_depth.last().unwrap();
        t.resblock(&format!("{p}.middle_block.0"), ch, ch, te);
        if mid_depth > 0 {
            t.transformer(&format!("{p}.middle_block.1"), ch, mid_depth, ctx);
        }
        t.resblock(&format!("{p}.middle_block.{}", if mid_depth > 0 { 2 } else { 1 }), ch, ch, te);
        let mut idx = 0;
        for level in (0..levels).rev() {
            let out = mc * self.channel_mult[level];
            for j in 0..=self.num_res_blocks {
                let skip = skips.pop().unwrap();
                t.resblock(&format!("{p}.output_blocks.{idx}.0"), ch + skip, out, te);
                ch = out;
                let attn = self.transformer_depth[level] > 0;
                if attn {
                    t.transformer(&format!("{p}.output_blocks.{idx}.1"), ch, self.transformer_depth[level], ctx);
                }
                if level > 0 && j == self.num_res_blocks {
                    t.conv(&format!("{p}.output_blocks.{idx}.{}.conv", if attn { 2 } else { 1 }), ch, ch, 3);
                }
                idx += 1;
            }
        }
        t.norm(&format!("{p}.out.0"), ch);
        t.conv(&format!("{p}.out.2"), ch, 4, 3);
    }

    fn vae(&self, t: &mut Tensors) {
        let (base, z) = (self.vae_channels, self.latent_channels);
        let levels = self.vae_mult.len();
        let e = "first_stage_model.encoder";
        t.conv(&format!("{e}.conv_in"), 3, base, 3);
        let mut ch = base;
        for (i, mult) in self.vae_mult.iter().enumerate() {
            let out = base * mult;
            for j in 0..self.vae_res_blocks {
                t.vae_resblock(&format!("{e}.down.{i}.block.{j}"), ch, out);
                ch = out;
            }
            if i + 1 < levels {
                t.conv(&format!("{e}.down.{i}.downsample.conv"), ch, ch, 3);
            }
        }
        t.vae_mid(&format!("{e}.mid"), ch);
        t.norm(&format!("{e}.norm_out"), ch);
        t.conv(&format!("{e}.conv_out"), ch, 2 * z, 3);
        t.conv("first_stage_model.quant_conv", 2 * z, 2 * z, 1);
        t.conv("first_stage_model.post_quant_conv", z, z, 1);
        let d = "first_stage_model.decoder";
        let mut ch = base * self.vae_mult[levels - 1];
        t.conv(&format!("{d}.conv_in"), z, ch, 3);
        t.vae_mid(&format!("{d}.mid"), ch);
        for i in (0..levels).rev() {
            let out = base * self.vae_mult[i];
            for j in 0..=self.vae_res_blocks {
                t.vae_resblock(&format!("{d}.up.{i}.block.{j}"), ch, out);
                ch = out;
            }
            if i > 0 {
                t.conv(&format!("{d}.up.{i}.upsample.conv"), ch, ch, 3);
            }
        }
        t.norm(&format!("{d}.norm_out"), ch);
        t.conv(&format!("{d}.conv_out"), ch, 3, 3);
    }

    fn text_encoders(&self, t: &mut Tensors) {
        const VOCAB: usize = 49408;
        const POSITIONS: usize = 77;
        let l = &self.clip_l;
        let p = "conditioner.embedders.0.transformer.text_model";
        t.add(&format!("{p}.embeddings.token_embedding.weight"), vec![VOCAB, l.width]);
        t.add(&format!("{p}.embeddings.position_embedding.weight"), vec![POSITIONS, l.width]);
        for i in 0..l.layers {
            let q = format!("{p}.encoder.layers.{i}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                t.linear(&format!("{q}.self_attn.{proj}"), l.width, l.width);
            }
            t.norm(&format!("{q}.layer_norm1"), l.width);
            t.norm(&format!("{q}.layer_norm2"), l.width);
            t.linear(&format!("{q}.mlp.fc1"), l.width, l.mlp);
            t.linear(&format!("{q}.mlp.fc2"), l.mlp, l.width);
        }
        t.norm(&format!("{p}.final_layer_norm"), l.width);
        let g = &self.clip_g;
        let p = "conditioner.embedders.1.model";
        t.add(&format!("{p}.token_embedding.weight"), vec![VOCAB, g.width]);
        t.add(&format!("{p}.positional_embedding"), vec![POSITIONS, g.width]);
        for i in 0..g.layers {
            let q = format!("{p}.transformer.resblocks.{i}");
            t.add(&format!("{q}.attn.in_proj_weight"), vec![3 * g.width, g.width]);
            t.add(&format!("{q}.attn.in_proj_bias"), vec![3 * g.width]);
            t.linear(&format!("{q}.attn.out_proj"), g.width, g.width);
            t.norm(&format!("{q}.ln_1"), g.width);
            t.norm(&format!("{q}.ln_2"), g.width);
            t.linear(&format!("{q}.mlp.c_fc"), g.width, g.mlp);
            t.linear(&format!("{q}.mlp.c_proj"), g.mlp, g.width);
        }
        t.norm(&format!("{p}.ln_final"), g.width);
        t.add(&format!("{p}.text_projection"), vec![g.width, g.width]);
    }

    pub fn parameter_count(&self) -> usize {
        self.tensors().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    /// Write the checkpoint as f16 safetensors with small random weights (norm weights 1),
    /// streaming so that multi-GB files need no more memory than one tensor.
    pub fn write_random_checkpoint(&self, path: &Path, seed: u64) -> Result<()> {
        let tensors = self.tensors();
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for (name, shape) in &tensors {
            let bytes = shape.iter().product::<usize>() * 2;
            header.insert(name.clone(), serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + bytes]}));
            offset += bytes;
        }
        let mut json = serde_json::to_string(&header).expect("header serialises");
        while !json.len().is_multiple_of(8) {
            json.push(' ');
        }
        let mut out = BufWriter::with_capacity(1 << 22, std::fs::File::create(path)?);
        out.write_all(&(json.len() as u64).to_le_bytes())?;
        out.write_all(json.as_bytes())?;
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut buf = Vec::new();
        for (name, shape) in &tensors {
            let n: usize = shape.iter().product();
            let fan_in = if shape.len() > 1 { shape[1..].iter().product::<usize>() } else { 0 };
            let is_norm_weight = shape.len() == 1 && name.ends_with("weight");
            let scale = if fan_in > 0 { 1.0 / (fan_in as f32).sqrt() } else { 0.02 };
            buf.clear();
            for _ in 0..n {
                let v = if is_norm_weight {
                    1.0
                } else {
                    // xorshift64*: uniform in [-√3, √3)·scale has unit variance before scaling.
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    let u = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
                    (u * 2.0 - 1.0) * 1.732 * scale
                };
                buf.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
            out.write_all(&buf)?;
        }
        out.flush()?;
        Ok(())
    }
}

#[derive(Default)]
struct Tensors(Vec<(String, Vec<usize>)>);

impl Tensors {
    fn add(&mut self, name: &str, shape: Vec<usize>) {
        self.0.push((name.to_string(), shape));
    }
    fn linear(&mut self, p: &str, inp: usize, out: usize) {
        self.add(&format!("{p}.weight"), vec![out, inp]);
        self.add(&format!("{p}.bias"), vec![out]);
    }
    fn conv(&mut self, p: &str, inp: usize, out: usize, k: usize) {
        self.add(&format!("{p}.weight"), vec![out, inp, k, k]);
        self.add(&format!("{p}.bias"), vec![out]);
    }
    fn norm(&mut self, p: &str, ch: usize) {
        self.add(&format!("{p}.weight"), vec![ch]);
        self.add(&format!("{p}.bias"), vec![ch]);
    }
    fn resblock(&mut self, p: &str, inp: usize, out: usize, emb: usize) {
        self.norm(&format!("{p}.in_layers.0"), inp);
        self.conv(&format!("{p}.in_layers.2"), inp, out, 3);
        self.linear(&format!("{p}.emb_layers.1"), emb, out);
        self.norm(&format!("{p}.out_layers.0"), out);
        self.conv(&format!("{p}.out_layers.3"), out, out, 3);
        if inp != out {
            self.conv(&format!("{p}.skip_connection"), inp, out, 1);
        }
    }
    fn transformer(&mut self, p: &str, ch: usize, depth: usize, ctx: usize) {
        self.norm(&format!("{p}.norm"), ch);
        self.linear(&format!("{p}.proj_in"), ch, ch);
        for k in 0..depth {
            let b = format!("{p}.transformer_blocks.{k}");
            for (attn, kv) in [("attn1", ch), ("attn2", ctx)] {
                self.add(&format!("{b}.{attn}.to_q.weight"), vec![ch, ch]);
                self.add(&format!("{b}.{attn}.to_k.weight"), vec![ch, kv]);
                self.add(&format!("{b}.{attn}.to_v.weight"), vec![ch, kv]);
                self.linear(&format!("{b}.{attn}.to_out.0"), ch, ch);
            }
            for n in ["norm1", "norm2", "norm3"] {
                self.norm(&format!("{b}.{n}"), ch);
            }
            self.linear(&format!("{b}.ff.net.0.proj"), ch, ch * 8);
            self.linear(&format!("{b}.ff.net.2"), ch * 4, ch);
        }
        self.linear(&format!("{p}.proj_out"), ch, ch);
    }
    fn vae_resblock(&mut self, p: &str, inp: usize, out: usize) {
        self.norm(&format!("{p}.norm1"), inp);
        self.conv(&format!("{p}.conv1"), inp, out, 3);
        self.norm(&format!("{p}.norm2"), out);
        self.conv(&format!("{p}.conv2"), out, out, 3);
        if inp != out {
            self.conv(&format!("{p}.nin_shortcut"), inp, out, 1);
        }
    }
    fn vae_mid(&mut self, p: &str, ch: usize) {
        self.vae_resblock(&format!("{p}.block_1"), ch, ch);
        self.norm(&format!("{p}.attn_1.norm"), ch);
        for n in ["q", "k", "v", "proj_out"] {
            self.conv(&format!("{p}.attn_1.{n}"), ch, ch, 1);
        }
        self.vae_resblock(&format!("{p}.block_2"), ch, ch);
    }
}
