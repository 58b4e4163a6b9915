#!/usr/bin/env bash
# Makes the GPU check fit the device tool's 64 MiB working tree: the device gets the tracked
# files plus the folders a run carries, and tests/fixtures alone is over 200 MB.
#
#   scripts/build-cuda.sh          # first: target/cuda/focal
#   scripts/gpu-pack.sh            # .gpu/ (xz'd binary, the tiny model, its reference, wheels);
#                                  # tests/fixtures untracked for the run
#   device run, carry [".gpu"]:    bash scripts/gpu-check.sh
#   scripts/gpu-pack.sh --restore  # tests/fixtures tracked again: DO THIS BEFORE ANY COMMIT
#
# Untracking is `git rm --cached` (files stay on disk) plus a line in .git/info/exclude;
# --restore puts the index back from HEAD and removes the line.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=.git/info/exclude
if [ "${1:-}" = --restore ]; then
    git reset -q -- tests/fixtures
    sed -i '\#^/tests/fixtures/$#d' "$exclude"
    git status --short tests/fixtures | head -n 3
    echo "tests/fixtures is tracked again"
    exit 0
fi
[ -x target/cuda/focal ] || { echo "no target/cuda/focal: run scripts/build-cuda.sh first" >&2; exit 1; }
rm -rf .gpu && mkdir -p .gpu/whl
grep -qx '/.gpu/' "$exclude" || echo '/.gpu/' >> "$exclude"
xz -9 -T0 -c target/cuda/focal > .gpu/focal.xz
xz -9 -T0 -c tests/fixtures/tiny-sdxl/tiny-sdxl-a.safetensors > .gpu/tiny-sdxl-a.safetensors.xz
cp tests/fixtures/tiny-sdxl/reference/t2i_euler_karras.png .gpu/
# The device's image has torch, transformers, huggingface_hub and safetensors but not diffusers
# (pure Python) or its importlib_metadata; zipp pinned beside it (one version of each).
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .gpu/whl diffusers==0.42.1 importlib_metadata==8.7.0 zipp==3.23.0
git rm -r -q --cached tests/fixtures
grep -qx '/tests/fixtures/' "$exclude" || echo '/tests/fixtures/' >> "$exclude"
echo "packed: $(du -sh .gpu | cut -f1) in .gpu; tracked files now $(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1) bytes"
echo "run on the device with carry [\".gpu\"]: bash scripts/gpu-check.sh — then scripts/gpu-pack.sh --restore before committing"
