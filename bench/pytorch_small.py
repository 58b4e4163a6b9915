#!/usr/bin/env python3
"""The PyTorch side of `focal bench --small`: one tiny-SDXL request, end to end, with diffusers.

The same work focal times: the tiny SDXL fixture (tests/fixtures/tiny-sdxl/diffusers, the same
weights as tiny-sdxl-a.safetensors), both CLIP encoders on a prompt and a negative prompt, 4
Euler steps on the Karras schedule at 256x256 with CFG 5 (batch 2: cond + uncond), VAE decode and
a PNG written to memory. Loading is timed separately from the request. float32 on the CPU, every
core. Prints one JSON object on the last line: {"small_load": s, "small_request": s, ...}.

Run: python bench/pytorch_small.py [--model tests/fixtures/tiny-sdxl/diffusers] [--repeat 5]
Needs: pip install torch diffusers transformers   (tested: torch 2.15, diffusers 0.42.1, transformers 5.25)
"""
import argparse, io, json, os, resource, time

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

PROMPT = "a photograph of an astronaut riding a horse, highly detailed"
NEGATIVE = "blurry, low quality"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tests/fixtures/tiny-sdxl/diffusers")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    t0 = time.perf_counter()
    pipe = StableDiffusionXLPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - t0

    def request(seed):
        image = pipe(PROMPT, negative_prompt=NEGATIVE, width=256, height=256, num_inference_steps=4,
                     guidance_scale=5.0, generator=torch.Generator().manual_seed(seed)).images[0]
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    times = []
    with torch.inference_mode():
        for i in range(args.repeat + 1):  # the first run warms up (allocations, lazy init)
            t0 = time.perf_counter()
            request(i)
            if i > 0:
                times.append(time.perf_counter() - t0)
    print(json.dumps({"torch": torch.__version__, "small_load": load, "small_request": min(times),
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


if __name__ == "__main__":
    main()
