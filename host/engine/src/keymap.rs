//! Tensor names between the layouts a model ships in: diffusers ↔ LDM for the UNet (one table
//! per kind of module, read in both directions: the folder loader maps diffusers → LDM, LoRA
//! files name UNet modules either way) and diffusers → LDM for the VAE. Shared by `checkpoint`
//! and `lora`, so neither imports the other for names.

pub(crate) fn count_indices(names: &[String], prefix: &str) -> usize {
    names.iter().filter_map(|n| n.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok()).max().map_or(0, |m| m + 1)
}

/// UNet modules outside the blocks: (diffusers prefix, LDM prefix), read in both directions.
const UNET_RENAMES: [(&str, &str); 7] = [
    ("time_embedding.linear_1.", "time_embed.0."),
    ("time_embedding.linear_2.", "time_embed.2."),
    ("add_embedding.linear_1.", "label_emb.0.0."),
    ("add_embedding.linear_2.", "label_emb.0.2."),
    ("conv_in.", "input_blocks.0.0."),
    ("conv_norm_out.", "out.0."),
    ("conv_out.", "out.2."),
];

/// diffusers UNet names → LDM names, for any number of levels and res blocks per level.
pub(crate) struct UnetKeyMap {
    layers_per_block: usize,
    up_levels_with_attention: Vec<bool>,
}

impl UnetKeyMap {
    pub(crate) fn from_diffusers_names(names: &[String]) -> Self {
        let layers_per_block = count_indices(names, "down_blocks.0.resnets.");
        let levels = count_indices(names, "up_blocks.");
        let up_levels_with_attention =
            (0..levels).map(|i| names.iter().any(|n| n.starts_with(&format!("up_blocks.{i}.attentions.")))).collect();
        Self { layers_per_block, up_levels_with_attention }
    }

    pub(crate) fn to_ldm(&self, name: &str) -> String {
        let l = self.layers_per_block;
        for (diffusers, ldm) in UNET_RENAMES {
            if let Some(rest) = name.strip_prefix(diffusers) {
                return format!("{ldm}{rest}");
            }
        }
        let parts: Vec<&str> = name.splitn(5, '.').collect();
        let idx = |k: usize| parts.get(k).and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
        let tail = |k: usize| parts[k..].join(".");
        match (parts.first().copied(), parts.get(2).copied()) {
            (Some("down_blocks"), Some("resnets")) => {
                format!("input_blocks.{}.0.{}", (l + 1) * idx(1) + idx(3) + 1, resnet_to_ldm(&tail(4)))
            }
            (Some("down_blocks"), Some("attentions")) => format!("input_blocks.{}.1.{}", (l + 1) * idx(1) + idx(3) + 1, tail(4)),
            (Some("down_blocks"), Some("downsamplers")) => {
                format!("input_blocks.{}.0.op.{}", (l + 1) * (idx(1) + 1), tail(4).trim_start_matches("conv."))
            }
            (Some("up_blocks"), Some("resnets")) => format!("output_blocks.{}.0.{}", (l + 1) * idx(1) + idx(3), resnet_to_ldm(&tail(4))),
            (Some("up_blocks"), Some("attentions")) => format!("output_blocks.{}.1.{}", (l + 1) * idx(1) + idx(3), tail(4)),
            (Some("up_blocks"), Some("upsamplers")) => {
                let slot = if self.up_levels_with_attention[idx(1)] { 2 } else { 1 };
                format!("output_blocks.{}.{slot}.{}", (l + 1) * idx(1) + l, tail(4))
            }
            (Some("mid_block"), _) => {
                let (kind, i, rest) = (parts[1], idx(2), parts[3..].join("."));
                if kind == "attentions" {
                    format!("middle_block.1.{rest}")
                } else {
                    format!("middle_block.{}.{}", 2 * i, resnet_to_ldm(&rest))
                }
            }
            _ => name.to_string(),
        }
    }
}

/// diffusers ↔ LDM names inside a res block: (diffusers prefix, LDM prefix).
const RESNET_RENAMES: [(&str, &str); 6] = [
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
];

fn resnet_to_ldm(rest: &str) -> String {
    RESNET_RENAMES.iter().find_map(|(from, to)| rest.strip_prefix(from).map(|r| format!("{to}{r}"))).unwrap_or_else(|| rest.to_string())
}

fn resnet_to_diffusers(rest: &str) -> String {
    RESNET_RENAMES
        .iter()
        .find_map(|(diffusers, ldm)| rest.strip_prefix(ldm).map(|r| format!("{diffusers}{r}")))
        .unwrap_or_else(|| rest.to_string())
}

/// LDM UNet names (without the `unet.` prefix) → diffusers names, the inverse of the folder
/// loader's mapping; LoRAs name UNet modules either way. `None` for names with no counterpart.
pub fn unet_ldm_to_diffusers(name: &str, ldm_names: &[&str]) -> Option<String> {
    // Res blocks per level: the first downsampler (`input_blocks.N.0.op`) follows them.
    let first_down = ldm_names
        .iter()
        .filter(|n| n.contains(".0.op."))
        .filter_map(|n| n.strip_prefix("input_blocks.")?.split('.').next()?.parse::<usize>().ok())
        .min()?;
    let l = first_down - 1;
    for (diffusers, ldm) in UNET_RENAMES {
        if let Some(rest) = name.strip_prefix(ldm) {
            return Some(format!("{diffusers}{rest}"));
        }
    }
    if let Some(mid) = name.strip_prefix("middle_block.") {
        let (i, rest) = mid.split_once('.')?;
        return match i {
            "1" => Some(format!("mid_block.attentions.0.{rest}")),
            "0" | "2" => Some(format!("mid_block.resnets.{}.{}", i.parse::<usize>().ok()? / 2, resnet_to_diffusers(rest))),
            _ => None,
        };
    }
    let parts: Vec<&str> = name.splitn(4, '.').collect();
    let (block, n, slot, rest) = (parts.first()?, parts.get(1)?.parse::<usize>().ok()?, *parts.get(2)?, *parts.get(3)?);
    match *block {
        "input_blocks" => {
            let (level, i) = ((n - 1) / (l + 1), (n - 1) % (l + 1));
            match (i == l, slot) {
                (true, "0") => Some(format!("down_blocks.{level}.downsamplers.0.conv.{}", rest.strip_prefix("op.")?)),
                (false, "0") => Some(format!("down_blocks.{level}.resnets.{i}.{}", resnet_to_diffusers(rest))),
                (false, "1") => Some(format!("down_blocks.{level}.attentions.{i}.{rest}")),
                _ => None,
            }
        }
        "output_blocks" => {
            let (level, i) = (n / (l + 1), n % (l + 1));
            let has_attention =
                ldm_names.iter().any(|x| x.starts_with(&format!("output_blocks.{n}.1.")) && x.contains("transformer_blocks"));
            match slot {
                "0" => Some(format!("up_blocks.{level}.resnets.{i}.{}", resnet_to_diffusers(rest))),
                "1" if has_attention => Some(format!("up_blocks.{level}.attentions.{i}.{rest}")),
                "1" | "2" => Some(format!("up_blocks.{level}.upsamplers.0.{rest}")),
                _ => None,
            }
        }
        _ => None,
    }
}

/// diffusers VAE names → LDM names (`levels` = number of decoder up blocks).
pub(crate) fn diffusers_vae_to_ldm(name: &str, levels: usize) -> String {
    let (half, rest) = name.split_once('.').unwrap_or((name, ""));
    let parts: Vec<&str> = rest.split('.').collect();
    let idx = |k: usize| parts.get(k).and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    let tail = |k: usize| parts.get(k..).map(|p| p.join(".")).unwrap_or_default();
    let inner = match (parts.first().copied(), parts.get(2).copied()) {
        (Some("down_blocks"), Some("resnets")) => format!("down.{}.block.{}.{}", idx(1), idx(3), vae_resnet(&tail(4))),
        (Some("down_blocks"), Some("downsamplers")) => format!("down.{}.downsample.{}", idx(1), tail(4)),
        (Some("up_blocks"), Some("resnets")) => format!("up.{}.block.{}.{}", levels - 1 - idx(1), idx(3), vae_resnet(&tail(4))),
        (Some("up_blocks"), Some("upsamplers")) => format!("up.{}.upsample.{}", levels - 1 - idx(1), tail(4)),
        (Some("mid_block"), _) if parts.get(1) == Some(&"resnets") => format!("mid.block_{}.{}", idx(2) + 1, vae_resnet(&tail(3))),
        (Some("mid_block"), _) => {
            let t = tail(3);
            let renames = [
                ("group_norm.", "norm."),
                ("to_q.", "q."),
                ("to_k.", "k."),
                ("to_v.", "v."),
                ("to_out.0.", "proj_out."),
                ("query.", "q."),
                ("key.", "k."),
                ("value.", "v."),
                ("proj_attn.", "proj_out."),
            ];
            let r = renames.iter().find_map(|(f, to)| t.strip_prefix(f).map(|x| format!("{to}{x}"))).unwrap_or(t);
            format!("mid.attn_1.{r}")
        }
        (Some("conv_norm_out"), _) => format!("norm_out.{}", tail(1)),
        _ => rest.to_string(),
    };
    if half == "encoder" || half == "decoder" {
        format!("{half}.{inner}")
    } else {
        name.to_string()
    }
}

fn vae_resnet(rest: &str) -> String {
    rest.strip_prefix("conv_shortcut.").map(|r| format!("nin_shortcut.{r}")).unwrap_or_else(|| rest.to_string())
}
