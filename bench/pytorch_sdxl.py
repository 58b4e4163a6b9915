#!/usr/bin/env python3
"""The PyTorch side of `focal bench`: the same SDXL work timed with diffusers on this machine.

Builds the full-size SDXL base UNet, VAE and both CLIP text encoders from their published configs
with random weights (no download; compute does not depend on the values), then times the prompt
pair's encoding (prompt + negative, both encoders each), one CFG UNet step (batch 2: cond +
uncond, as ComfyUI/Fooocus batch them), one VAE decode and one encode per size, and with --whole-steps N a
whole image per size (encode pair + N CFG Euler steps + VAE decode + PNG), in float32 on the CPU.
Prints one JSON object on the last line: {"unet_step_512": seconds, "vae_decode_512": seconds,
"vae_encode_512": seconds, ...}.

Run: python bench/pytorch_sdxl.py --sizes 512,1024 [--repeat 2] [--skip-vae] [--whole-steps 4]
Needs: pip install torch diffusers transformers   (tested: torch 2.15.0, diffusers 0.42.1, transformers 5.25)
"""
import argparse, io, json, os, resource, time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=[320, 640, 1280],
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
           down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
           layers_per_block=2, norm_num_groups=32, scaling_factor=0.13025, sample_size=1024)


CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
              num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)


def encoders():
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    with torch.device("meta"):
        l = CLIPTextModel(CLIPTextConfig(**CLIP_L))
        g = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G))
    l, g = randomized(l.to_empty(device="cpu")), randomized(g.to_empty(device="cpu"))
    for m in (l, g):  # to_empty leaves buffers unset: the position ids must be 0..76
        for name, buffer in m.named_buffers():
            if name.endswith("position_ids"):
                buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
    return l, g


def encode_pair(clip_l, clip_g):
    """Prompt and negative through both encoders (penultimate layers + G's pooled projection)."""
    out = []
    for _ in range(2):
        ids = torch.randint(0, 49407, (1, 77))
        hl = clip_l(ids, output_hidden_states=True).hidden_states[-2]
        g = clip_g(ids, output_hidden_states=True)
        out.append((torch.cat([hl, g.hidden_states[-2]], dim=-1), g.text_embeds))
    return out


def randomized(module):
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.02, 0.02)
    return module.eval()


def timed(fn, repeat):
    """Best of `repeat` runs (the first one also pays for allocations), as focal bench does."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-vae", action="store_true")
    ap.add_argument("--whole-steps", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    sizes = [int(s) for s in args.sizes.split(",")]
    with torch.inference_mode():
        clip_l, clip_g = encoders()
        results["text_encode_pair"] = timed(lambda: encode_pair(clip_l, clip_g), args.repeat)
        print(f"pytorch text encode pair: {results['text_encode_pair']:.2f} s", flush=True)
        with torch.device("meta"):
            unet = UNet2DConditionModel(**UNET)
        unet = randomized(unet.to_empty(device="cpu"))
        ctx = torch.randn(2, 77, 2048)
        added = {"text_embeds": torch.randn(2, 1280), "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2)}
        for s in sizes:
            x = torch.randn(2, 4, s // 8, s // 8)
            t = torch.tensor([999.0, 999.0])
            results[f"unet_step_{s}"] = timed(lambda: unet(x, t, ctx, added_cond_kwargs=added), args.repeat)
            print(f"pytorch unet step {s}: {results[f'unet_step_{s}']:.2f} s", flush=True)
        if not args.skip_vae or args.whole_steps:
            with torch.device("meta"):
                vae = AutoencoderKL(**VAE)
            vae = randomized(vae.to_empty(device="cpu"))
        if not args.skip_vae:
            for s in sizes:
                z = torch.randn(1, 4, s // 8, s // 8)
                results[f"vae_decode_{s}"] = timed(lambda: vae.decode(z / 0.13025), args.repeat)
                print(f"pytorch vae decode {s}: {results[f'vae_decode_{s}']:.2f} s", flush=True)
            # The image routes' own work: the input image's encode (posterior mean).
            for s in sizes:
                image = torch.rand(1, 3, s, s) * 2 - 1
                results[f"vae_encode_{s}"] = timed(lambda: vae.encode(image).latent_dist.mean, args.repeat)
                print(f"pytorch vae encode {s}: {results[f'vae_encode_{s}']:.2f} s", flush=True)
        for s in sizes if args.whole_steps else []:
            results[f"whole_{s}"] = timed(lambda: whole_image(clip_l, clip_g, unet, vae, s, args.whole_steps), 1)
            print(f"pytorch whole image {s}: {results[f'whole_{s}']:.2f} s", flush=True)
    results["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(results))


def whole_image(clip_l, clip_g, unet, vae, size, steps):
    """Encode pair, `steps` CFG Euler steps (batch 2), decode, PNG: what one focal image does."""
    from PIL import Image
    (c, cp), (u, up) = encode_pair(clip_l, clip_g)
    ctx, pooled = torch.cat([c, u]), torch.cat([cp, up])
    added = {"text_embeds": pooled, "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32)}
    sigmas = torch.linspace(14.6, 0.03, steps).tolist() + [0.0]
    x = torch.randn(1, 4, size // 8, size // 8) * sigmas[0]
    for i in range(steps):
        scaled = x / (sigmas[i] ** 2 + 1) ** 0.5
        eps = unet(torch.cat([scaled, scaled]), torch.tensor([999.0 * (1 - i / steps)] * 2), ctx, added_cond_kwargs=added).sample
        e_c, e_u = eps.chunk(2)
        eps = e_u + 5.0 * (e_c - e_u)
        x = x + eps * (sigmas[i + 1] - sigmas[i])
    image = vae.decode(x / 0.13025).sample
    pixels = ((image[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(io.BytesIO(), format="PNG")


if __name__ == "__main__":
    main()
