//! `focal bench --describe`: Fooocus's photo captioner (BLIP: ViT-B/16 at 384 px, BERT-base decoder
//! with cross-attention, 30524 ids) with random full-size weights, on one 512² image: the image
//! encoding, and one caption of the longest length (75 tokens, `[SEP]` barred, so both sides do
//! the same work), beside bench/pytorch_describe.py running Fooocus's own BLIP classes.

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use focal_describe::BlipCaptioner;
use focal_imageops::Pixels;

use crate::bench::{best_of, peak_rss_gib, Row};

const WIDTH: usize = 768;
const LAYERS: usize = 12;
const VOCAB: usize = 30524;
const TOKENS: usize = 577;

pub fn rows(repeat: usize) -> Result<Vec<Row>> {
    let model = BlipCaptioner::from_tensors(random_weights()?, &Device::Cpu)?;
    let data: Vec<u8> = (0..512 * 512 * 3).map(|i| (i * 37 % 251) as u8).collect();
    let image = Pixels::rgb(512, 512, data).expect("512² RGB");
    let mut rows = Vec::new();
    let encode = best_of(repeat, || model.image_embeddings(&image))?;
    rows.push(("blip_image_encode".to_string(), encode, peak_rss_gib()));
    let mut seed = 0;
    let caption = best_of(repeat, || {
        seed += 1;
        model.longest_caption_ids(&image, seed)
    })?;
    rows.push(("blip_caption_75".to_string(), caption, peak_rss_gib()));
    Ok(rows)
}

/// The checkpoint's keys at BLIP-base sizes; weights N(0, 0.02²), norms 1 and 0, biases 0.
fn random_weights() -> Result<HashMap<String, Tensor>> {
    let dev = Device::Cpu;
    let mut t = HashMap::new();
    let randn = |t: &mut HashMap<String, Tensor>, name: String, shape: &[usize]| -> Result<()> {
        t.insert(name, Tensor::randn(0f32, 0.02, shape, &dev)?);
        Ok(())
    };
    randn(&mut t, "visual_encoder.patch_embed.proj.weight".into(), &[WIDTH, 3, 16, 16])?;
    randn(&mut t, "visual_encoder.cls_token".into(), &[1, 1, WIDTH])?;
    randn(&mut t, "visual_encoder.pos_embed".into(), &[1, TOKENS, WIDTH])?;
    randn(&mut t, "text_decoder.bert.embeddings.word_embeddings.weight".into(), &[VOCAB, WIDTH])?;
    randn(&mut t, "text_decoder.bert.embeddings.position_embeddings.weight".into(), &[512, WIDTH])?;
    randn(&mut t, "text_decoder.cls.predictions.decoder.weight".into(), &[VOCAB, WIDTH])?;
    let mut linears: Vec<(String, usize, usize)> = vec![("text_decoder.cls.predictions.transform.dense".into(), WIDTH, WIDTH)];
    let mut norms = vec!["visual_encoder.norm".to_string(), "text_decoder.bert.embeddings.LayerNorm".into()];
    norms.push("text_decoder.cls.predictions.transform.LayerNorm".into());
    for i in 0..LAYERS {
        let b = format!("visual_encoder.blocks.{i}");
        linears.extend([
            (format!("{b}.attn.qkv"), 3 * WIDTH, WIDTH),
            (format!("{b}.attn.proj"), WIDTH, WIDTH),
            (format!("{b}.mlp.fc1"), 4 * WIDTH, WIDTH),
            (format!("{b}.mlp.fc2"), WIDTH, 4 * WIDTH),
        ]);
        norms.extend([format!("{b}.norm1"), format!("{b}.norm2")]);
        let l = format!("text_decoder.bert.encoder.layer.{i}");
        for part in ["attention", "crossattention"] {
            for p in ["self.query", "self.key", "self.value", "output.dense"] {
                linears.push((format!("{l}.{part}.{p}"), WIDTH, WIDTH));
            }
            norms.push(format!("{l}.{part}.output.LayerNorm"));
        }
        linears.extend([(format!("{l}.intermediate.dense"), 4 * WIDTH, WIDTH), (format!("{l}.output.dense"), WIDTH, 4 * WIDTH)]);
        norms.push(format!("{l}.output.LayerNorm"));
    }
    for (name, out, inp) in linears {
        randn(&mut t, format!("{name}.weight"), &[out, inp])?;
        t.insert(format!("{name}.bias"), Tensor::zeros(out, DType::F32, &dev)?);
    }
    t.insert("visual_encoder.patch_embed.proj.bias".into(), Tensor::zeros(WIDTH, DType::F32, &dev)?);
    t.insert("text_decoder.cls.predictions.bias".into(), Tensor::zeros(VOCAB, DType::F32, &dev)?);
    for name in norms {
        t.insert(format!("{name}.weight"), Tensor::ones(WIDTH, DType::F32, &dev)?);
        t.insert(format!("{name}.bias"), Tensor::zeros(WIDTH, DType::F32, &dev)?);
    }
    Ok(t)
}
