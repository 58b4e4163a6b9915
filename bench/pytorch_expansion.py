"""PyTorch side of `focal bench --expansion`: the Fooocus V2 expansion (Fooocus 2.5.5's
algorithm: allowed-word bias, no repeats, comma allowed, top_k=100 sampling to 75 tokens) on a
random-weight full-size GPT-2 (transformers' default GPT2Config, 124M), float32 on the CPU.
Prints one JSON line {"expand": seconds, "torch": version} for focal to put beside its own.

    python bench/pytorch_expansion.py --tokenizer tests/fixtures/tiny-gpt2 --prompt "..." --repeat 2
(needs torch and transformers; `focal bench --expansion --pytorch <python>` runs it.)
"""
import argparse
import json
import math
import time

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LogitsProcessorList

ap = argparse.ArgumentParser()
ap.add_argument("--tokenizer", required=True)
ap.add_argument("--prompt", required=True)
ap.add_argument("--repeat", type=int, default=2)
args = ap.parse_args()

torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
model = GPT2LMHeadModel(GPT2Config()).eval()
vocab = tokenizer.get_vocab()
# The same kind of list focal's side uses: every 8th plain lower-case word token, 642 of them.
words = [t for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if t.startswith("Ġ") and len(t) > 4 and t[1:].isascii() and t[1:].isalpha() and t[1:].islower()][::8][:642]
bias = torch.full((1, len(vocab)), -8192.0)
for w in words:
    bias[0, vocab[w]] = 0


def processor(input_ids, scores):
    b = bias.clone()
    b[0, input_ids[0]] = -8192.0
    b[0, 11] = 0
    return scores + b


def expand():
    torch.manual_seed(12345)
    enc = tokenizer(args.prompt + ",", return_tensors="pt")
    n = enc["input_ids"].shape[1]
    with torch.inference_mode():
        model.generate(**enc, top_k=100, do_sample=True, max_new_tokens=75 * math.ceil(n / 75) - n,
                       logits_processor=LogitsProcessorList([processor]), pad_token_id=50256)


best = math.inf
for _ in range(max(args.repeat, 1)):
    t0 = time.perf_counter()
    expand()
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"expand": best, "torch": torch.__version__}))
