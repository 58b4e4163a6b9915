#!/usr/bin/env python3
"""The PyTorch side of `focal bench`: the same SDXL work timed with diffusers on this machine.

Builds the full-size SDXL base UNet, VAE and both CLIP text encoders from their published configs
with random weights (no download; compute does not depend on the values), then times the prompt
pair's encoding (prompt + negative, both encoders each), one CFG UNet step (batch 2: cond +
uncond, as ComfyUI/Fooocus batch them), one VAE decode and one encode per size, and with --whole-steps N a
whole image per size (encode pair + N CFG steps + VAE decode + PNG), in float32 on the CPU by
default; with --device cuda on the GPU, the UNet and text encoders in --dtype (f16: diffusers'
fp16 pipelines), the VAE in --vae-dtype, attention through PyTorch's SDPA (diffusers' default
AttnProcessor2_0), every timing synchronised with the device.
Prints one JSON object on the last line: {"unet_step_512": seconds, "vae_decode_512": seconds,
"vae_encode_512": seconds, "step_1024": seconds per sampling step of the whole image, ...,
"peak_vram_gib": device memory in use above the start, polled every 20 ms (GPU only)}.

Run: python bench/pytorch_sdxl.py --sizes 512,1024 [--repeat 2] [--skip-vae] [--whole-steps 4]
         [--sampler euler|dpmpp_2m_sde_gpu] [--device cpu|cuda] [--dtype f32|f16|bf16] [--vae-dtype ...]
Needs: pip install torch diffusers transformers   (tested: torch 2.15.0, diffusers 0.42.1, transformers 5.25)
"""
import argparse, io, json, math, os, resource, threading, time

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


DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
DEVICE, DTYPE = torch.device("cpu"), torch.float32  # set by main()


def sync():
    """Device work is asynchronous: a timing ends when the kernels did."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def built(cls, config, dtype=None):
    """A diffusers/transformers module from its config, random weights, on DEVICE in `dtype`."""
    with torch.device("meta"):
        module = cls(config) if not isinstance(config, dict) else cls(**config)
    module, dtype = randomized(module.to_empty(device=DEVICE)), dtype or DTYPE
    return module if dtype == torch.float32 else module.to(dtype)


def encoders():
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    l, g = built(CLIPTextModel, CLIPTextConfig(**CLIP_L)), built(CLIPTextModelWithProjection, CLIPTextConfig(**CLIP_G))
    for m in (l, g):  # to_empty leaves buffers unset: the position ids must be 0..76
        for name, buffer in m.named_buffers():
            if name.endswith("position_ids"):
                buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
    return l, g


def encode_pair(clip_l, clip_g):
    """Prompt and negative through both encoders (penultimate layers + G's pooled projection)."""
    out = []
    for _ in range(2):
        ids = torch.randint(0, 49407, (1, 77), device=DEVICE)
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
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


class VramPeak:
    """Device memory in use (total - free) above what it was at the start, polled every 20 ms
    by a thread: the same measure focal bench takes of itself."""

    def __init__(self):
        self.peak, self.done = 0, threading.Event()
        if DEVICE.type == "cuda":
            free, total = torch.cuda.mem_get_info()
            self.start_used = total - free
            self.thread = threading.Thread(target=self.poll, daemon=True)
            self.thread.start()

    def poll(self):
        while not self.done.wait(0.02):
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free - self.start_used)

    def stop_gib(self):
        self.done.set()
        return self.peak / 2**30


def main():
    global DEVICE, DTYPE
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-vae", action="store_true")
    ap.add_argument("--whole-steps", type=int, default=0)
    ap.add_argument("--sampler", default="euler", choices=["euler", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=list(DTYPES))
    ap.add_argument("--vae-dtype", default=None, choices=list(DTYPES))
    args = ap.parse_args()
    DEVICE, DTYPE = torch.device(args.device), DTYPES[args.dtype]
    vae_dtype = DTYPES[args.vae_dtype] if args.vae_dtype else DTYPE
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if DEVICE.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(DEVICE)
    vram = VramPeak()
    sizes = [int(s) for s in args.sizes.split(",")]
    with torch.inference_mode():
        clip_l, clip_g = encoders()
        results["text_encode_pair"] = timed(lambda: encode_pair(clip_l, clip_g), args.repeat)
        print(f"pytorch text encode pair: {results['text_encode_pair']:.2f} s", flush=True)
        unet = built(UNet2DConditionModel, UNET)
        ctx = torch.randn(2, 77, 2048, device=DEVICE, dtype=DTYPE)
        added = {"text_embeds": torch.randn(2, 1280, device=DEVICE, dtype=DTYPE),
                 "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2, device=DEVICE, dtype=DTYPE)}
        for s in sizes:
            x = torch.randn(2, 4, s // 8, s // 8, device=DEVICE, dtype=DTYPE)
            t = torch.tensor([999.0, 999.0], device=DEVICE)
            results[f"unet_step_{s}"] = timed(lambda: unet(x, t, ctx, added_cond_kwargs=added), args.repeat)
            print(f"pytorch unet step {s}: {results[f'unet_step_{s}']:.3f} s", flush=True)
        if not args.skip_vae or args.whole_steps:
            vae = built(AutoencoderKL, VAE, vae_dtype)
        if not args.skip_vae:
            for s in sizes:
                z = torch.randn(1, 4, s // 8, s // 8, device=DEVICE, dtype=vae_dtype)
                results[f"vae_decode_{s}"] = timed(lambda: vae.decode(z / 0.13025), args.repeat)
                print(f"pytorch vae decode {s}: {results[f'vae_decode_{s}']:.3f} s", flush=True)
            # The image routes' own work: the input image's encode (posterior mean).
            for s in sizes:
                image = torch.rand(1, 3, s, s, device=DEVICE, dtype=vae_dtype) * 2 - 1
                results[f"vae_encode_{s}"] = timed(lambda: vae.encode(image).latent_dist.mean, args.repeat)
                print(f"pytorch vae encode {s}: {results[f'vae_encode_{s}']:.3f} s", flush=True)
        for s in sizes if args.whole_steps else []:
            steps = []
            results[f"whole_{s}"] = timed(lambda: steps.append(whole_image(clip_l, clip_g, unet, vae, s, args.whole_steps, args.sampler)), 1)
            if steps[-1] is not None:
                results[f"step_{s}"] = steps[-1]
            print(f"pytorch whole image {s}: {results[f'whole_{s}']:.2f} s", flush=True)
    results["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if DEVICE.type == "cuda":
        results["peak_vram_gib"] = vram.stop_gib()
    print(json.dumps(results))


def karras_sigmas(n, sigma_min=0.0291675, sigma_max=14.614642, rho=7.0):
    """k-diffusion's Karras schedule with SDXL's sigma range, and the final 0."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + i / max(n - 1, 1) * (lo - hi)) ** rho for i in range(n)] + [0.0]


def whole_image(clip_l, clip_g, unet, vae, size, steps, sampler):
    """Encode pair, `steps` CFG steps (batch 2) of Euler or DPM++ 2M SDE (k-diffusion's, eta 1,
    Karras sigmas), decode, PNG: what one focal image does. Returns the mean seconds of a
    sampling step after the first (None for one step)."""
    from PIL import Image
    (c, cp), (u, up) = encode_pair(clip_l, clip_g)
    ctx, pooled = torch.cat([c, u]), torch.cat([cp, up])
    added = {"text_embeds": pooled, "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, device=DEVICE, dtype=DTYPE)}
    euler = sampler == "euler"
    sigmas = torch.linspace(14.6, 0.03, steps).tolist() + [0.0] if euler else karras_sigmas(steps)

    def denoised(x, i):
        scaled = (x / (sigmas[i] ** 2 + 1) ** 0.5).to(DTYPE)
        t = torch.tensor([999.0 * (1 - i / steps)] * 2, device=DEVICE)
        e_c, e_u = unet(torch.cat([scaled, scaled]), t, ctx, added_cond_kwargs=added).sample.float().chunk(2)
        return x - (e_u + 5.0 * (e_c - e_u)) * sigmas[i]

    x = torch.randn(1, 4, size // 8, size // 8, device=DEVICE) * sigmas[0]
    old, h_last, ends = None, None, []
    for i in range(steps):
        d = denoised(x, i)
        if euler or sigmas[i + 1] == 0:
            x = d if sigmas[i + 1] == 0 else x + (x - d) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        else:  # k-diffusion sample_dpmpp_2m_sde, midpoint, eta 1
            h = math.log(sigmas[i]) - math.log(sigmas[i + 1])
            x = sigmas[i + 1] / sigmas[i] * math.exp(-h) * x - math.expm1(-2 * h) * d
            if old is not None:
                x = x - 0.5 * math.expm1(-2 * h) * (h / h_last) * (d - old)
            x = x + torch.randn_like(x) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * h))
            h_last = h
        old = d
        sync()
        ends.append(time.perf_counter())
    image = vae.decode((x / 0.13025).to(vae.dtype)).sample.float()
    pixels = ((image[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(pixels).save(io.BytesIO(), format="PNG")
    return (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else None


if __name__ == "__main__":
    main()
