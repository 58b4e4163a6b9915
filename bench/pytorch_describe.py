"""PyTorch side of `focal bench --describe`: Fooocus's photo captioner built from Fooocus's own BLIP classes
(extras/BLIP/models/blip.py: BLIP_Decoder, ViT-B/16 at 384 px, BERT-base decoder from configs/med_config.json)
with random weights, float32 on the CPU, on one 512x512 image preprocessed as extras/interrogate.py does:
  blip_image_encode  the visual encoder on the normalised 384 px input;
  blip_caption_75    `generate(image, sample=True, num_beams=1, max_length=75, min_length=75)`: Fooocus's call
                     with the minimum length raised to the maximum, so every caption has 75 tokens (focal does
                     the same work: `[SEP]` barred throughout).
Prints one JSON line {"blip_image_encode": s, "blip_caption_75": s, "torch": version}.

    python bench/pytorch_describe.py --fooocus <Fooocus v2.5.5 checkout> --repeat 2
(needs torch, torchvision, transformers 4.42.4, timm; `focal bench --describe --pytorch <python> --fooocus <dir>`
runs it.)
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--fooocus", required=True)
ap.add_argument("--repeat", type=int, default=2)
args = ap.parse_args()
sys.path.insert(0, args.fooocus)
from extras.BLIP.models.blip import BLIP_Decoder  # noqa: E402  Fooocus's own classes
from torchvision import transforms  # noqa: E402
from torchvision.transforms.functional import InterpolationMode  # noqa: E402

torch.manual_seed(0)
model = BLIP_Decoder(med_config=os.path.join(args.fooocus, "extras", "BLIP", "configs", "med_config.json"),
                     image_size=384, vit="base").eval()
pixels = (np.arange(512 * 512 * 3) * 37 % 251).astype(np.uint8).reshape(512, 512, 3)
x = transforms.Compose([
    transforms.ToTensor(),
    transforms.Resize((384, 384), interpolation=InterpolationMode.BICUBIC),
    transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
])(pixels).unsqueeze(0)


def best(f):
    times = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


with torch.inference_mode():
    encode = best(lambda: model.visual_encoder(x))
    caption = best(lambda: model.generate(x, sample=True, num_beams=1, max_length=75, min_length=75))
print(json.dumps({"blip_image_encode": encode, "blip_caption_75": caption, "torch": torch.__version__}))
