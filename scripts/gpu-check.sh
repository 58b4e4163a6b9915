#!/usr/bin/env bash
# Issue 16's check on a machine with an NVIDIA GPU, as one script: the binary from
# scripts/build-cuda.sh (carried as target/cuda/focal) against the CPU path on the tiny fixture,
# then the full-size benchmark. Run from the repository root; results go to $OUT (or ./gpu-check).
#
#   scripts/gpu-check.sh                 # needs the driver, and cuBLAS/cuRAND/NVRTC 13 libraries
#                                        # (found in PyTorch's nvidia wheels when python3 has them)
# Environment: FOCAL_BIN (default target/cuda/focal), SIZES (bench sizes, default 1024),
# PYTORCH (a python with torch + diffusers for the side-by-side bench; default: none).
set -uo pipefail
bin=${FOCAL_BIN:-target/cuda/focal}
out=${OUT:-$PWD/gpu-check}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
nvidia-smi || true

# The CUDA libraries the binary links: PyTorch's wheels carry them under site-packages/nvidia/*.
if libs=$(python3 -c 'import nvidia, os; print(":".join(sorted({r for p in nvidia.__path__ for r, _, fs in os.walk(p) if any(f.startswith(("libcublas.so", "libcurand.so", "libnvrtc.so", "libcudart.so")) for f in fs)})))' 2>/dev/null); then
    export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"
fi
ldd "$bin" | grep -E "not found|cuda|cublas|curand|nvrtc"

# 1. Tiny fixture: the same request on the CPU (f32) and the GPU (f32, f16); pixel differences.
work=$(mktemp -d)
mkdir -p "$work/models/checkpoints"
cp tests/fixtures/tiny-sdxl/tiny-sdxl-a.safetensors "$work/models/checkpoints/tiny.safetensors"
cat > "$work/request.json" <<'EOF'
{"prompt": "a photograph of an astronaut riding a horse", "negative_prompt": "blurry, low quality, watermark",
 "image_seed": 42, "image_number": 1, "guidance_scale": 7.0, "aspect_ratios_selection": "128*128", "sharpness": 0,
 "style_selections": [], "advanced_params": {"sampler_name": "euler", "scheduler_name": "karras", "overwrite_step": 8,
 "adm_scaler_positive": 1, "adm_scaler_negative": 1}}
EOF
for run in "cpu f32" "cuda f32" "cuda f16" "cuda bf16"; do
    set -- $run
    /usr/bin/time -v "$bin" generate --models-dir "$work/models" --base-model tiny.safetensors --request "$work/request.json" \
        --out "$work/out-$1-$2" --data-dir "$work/data-$1-$2" --device "$1" --dtype "$2" 2> "$out/time-$1-$2.txt"
    echo "generate --device $1 --dtype $2: rc=$? $(grep -E 'Elapsed|Maximum resident' "$out/time-$1-$2.txt" | tr -s ' ' | tr '\n' ';')"
    cp "$work/out-$1-$2/0.png" "$out/tiny-$1-$2.png" 2>/dev/null
done
cp tests/fixtures/tiny-sdxl/reference/t2i_euler_karras.png "$out/tiny-reference.png"
python3 - "$out" <<'EOF'
import sys, numpy as np
from PIL import Image
out = sys.argv[1]
load = lambda n: np.asarray(Image.open(f"{out}/{n}").convert("RGB")).astype(np.int16)
ref = load("tiny-reference.png")
for n in ["tiny-cpu-f32.png", "tiny-cuda-f32.png", "tiny-cuda-f16.png", "tiny-cuda-bf16.png"]:
    try:
        d = np.abs(load(n) - ref)
        print(f"{n}: max {d.max()}/255, mean {d.mean():.3f} against the CPU reference (tests/fixtures/tiny-sdxl/reference)")
    except Exception as e:
        print(f"{n}: {e}")
EOF

# 2. Full-size SDXL (random weights) on the GPU: load, encode, UNet step at batch 2, VAE, whole image.
for dtype in f16 f32; do
    "$bin" bench --device cuda --dtype "$dtype" --sizes "${SIZES:-1024}" --whole-steps 30 --repeat 3 ${PYTORCH:+--pytorch "$PYTORCH"} \
        --work-dir "$work/bench" 2>&1 | tee "$out/bench-cuda-$dtype.txt"
done
nvidia-smi --query-gpu=memory.used,memory.total --format=csv

# 3. Out of memory (issue 16, must-show 3): through the server, a full-size 8192² f32 job (its VAE decode needs far
#    more than the card has) must fail alone, saying the GPU ran out of memory; the 1024² job after it must succeed.
if [ "${OOM_CHECK:-1}" = 1 ] && [ -f "$work/bench/sdxl-base-random-f16.safetensors" ]; then
    mkdir -p "$work/oom/models/checkpoints"
    ln -sf "$work/bench/sdxl-base-random-f16.safetensors" "$work/oom/models/checkpoints/sdxl.safetensors"
    "$bin" serve --device cuda --dtype f32 --models-dir "$work/oom/models" --base-model sdxl.safetensors --port 8897 \
        --data-dir "$work/oom/data" --max-generation-pixels 70000000 > "$out/oom-server.log" 2>&1 &
    server=$!
    for _ in $(seq 120); do curl -sf http://127.0.0.1:8897/ping > /dev/null && break; sleep 1; done
    for size in 8192 1024; do
        echo "== ${size}² job:"
        curl -s -m 900 -X POST http://127.0.0.1:8897/v1/generation/text-to-image -H 'content-type: application/json' \
            -d "{\"prompt\": \"a lighthouse\", \"style_selections\": [], \"image_seed\": 1, \"aspect_ratios_selection\": \"${size}*${size}\", \"advanced_params\": {\"overwrite_step\": 2}}" \
            | head -c 600
        echo
        nvidia-smi --query-gpu=memory.used --format=csv,noheader
    done
    grep -i "ran out of memory\|job failed" "$out/oom-server.log" | head -5
    kill "$server"
fi
rm -rf "$work"
