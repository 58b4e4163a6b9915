"""PyTorch side of `focal bench --upscale`: Fooocus's upscaler network (ESRGAN's RRDBNet in the old layout that
`fooocus_upscaler_s409985e5.bin` uses, as ldm_patched/pfn/architecture/RRDB.py builds it: 64 filters, growth 32,
23 RRDB blocks, ×4 by two nearest-neighbour up-convolutions) with random weights, float32 on the CPU, on one
SIZE×SIZE image (one 512 px tile of ComfyUI's ImageUpscaleWithModel for SIZE ≤ 512).
Prints one JSON line {"esrgan_upscale_SIZE": seconds, "torch": version} for focal to put beside its own.

    python bench/pytorch_upscale.py --size 256 --repeat 2
(needs torch; `focal bench --upscale --pytorch <python>` runs it.)
"""
import argparse
import json
import math
import time

import torch
from torch import nn

ap = argparse.ArgumentParser()
ap.add_argument("--size", type=int, default=256)
ap.add_argument("--repeat", type=int, default=2)
args = ap.parse_args()

NF, GC, NB = 64, 32, 23


def conv(i, o):
    return nn.Conv2d(i, o, 3, 1, 1)


class Dense(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([conv(NF + k * GC, GC) for k in range(4)] + [conv(NF + 4 * GC, NF)])

    def forward(self, x):
        feats = [x]
        for k, c in enumerate(self.convs):
            y = c(torch.cat(feats, 1))
            if k < 4:
                feats.append(nn.functional.leaky_relu(y, 0.2))
        return y * 0.2 + x


class Rrdb(nn.Module):
    def __init__(self):
        super().__init__()
        self.d = nn.Sequential(Dense(), Dense(), Dense())

    def forward(self, x):
        return self.d(x) * 0.2 + x


class RRDBNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = conv(3, NF)
        self.body = nn.Sequential(*[Rrdb() for _ in range(NB)])
        self.trunk = conv(NF, NF)
        self.ups = nn.ModuleList([conv(NF, NF), conv(NF, NF)])
        self.hr, self.last = conv(NF, NF), conv(NF, 3)

    def forward(self, x):
        fea = self.first(x)
        y = self.trunk(self.body(fea)) + fea
        for up in self.ups:
            y = nn.functional.leaky_relu(up(nn.functional.interpolate(y, scale_factor=2, mode="nearest")), 0.2)
        return self.last(nn.functional.leaky_relu(self.hr(y), 0.2))


torch.manual_seed(0)
model = RRDBNet().eval()
x = torch.rand(1, 3, args.size, args.size)
best = math.inf
with torch.inference_mode():
    for _ in range(max(args.repeat, 1)):
        t0 = time.perf_counter()
        model(x).clamp(0, 1)
        best = min(best, time.perf_counter() - t0)
print(json.dumps({f"esrgan_upscale_{args.size}": best, "torch": torch.__version__}))
