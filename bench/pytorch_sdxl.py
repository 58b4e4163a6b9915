#!/usr/bin/env python3
"""The PyTorch side of `focal bench`: the same SDXL work timed with diffusers on this machine.

Builds the full-size SDXL base UNet and VAE from their published configs with random weights (no
download; compute does not depend on the values), then times one CFG UNet step (batch 2: cond +
uncond, as ComfyUI/Fooocus batch them) and one VAE decode per size, in float32 on the CPU.
Prints one JSON object on the last line: {"unet_step_512": seconds, "vae_decode_512": seconds, ...}.

Run: python bench/pytorch_sdxl.py --sizes 512,1024 [--repeat 2] [--skip-vae]
Needs: pip install torch diffusers   (tested with torch 2.15.0, diffusers 0.42.1)
"""
import argparse, json, os, time

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
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    sizes = [int(s) for s in args.sizes.split(",")]
    with torch.inference_mode():
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
        del unet
        if not args.skip_vae:
            with torch.device("meta"):
                vae = AutoencoderKL(**VAE)
            vae = randomized(vae.to_empty(device="cpu"))
            for s in sizes:
                z = torch.randn(1, 4, s // 8, s // 8)
                results[f"vae_decode_{s}"] = timed(lambda: vae.decode(z / 0.13025), args.repeat)
                print(f"pytorch vae decode {s}: {results[f'vae_decode_{s}']:.2f} s", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
