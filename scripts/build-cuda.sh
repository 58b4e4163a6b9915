#!/usr/bin/env bash
# Build focal with candle's CUDA backend and cuDNN (`--features cudnn`) on a machine without a GPU.
# nvcc, the CUDA headers and the libraries candle links (cuBLAS, cuBLASLt, cuRAND, NVRTC) come as
# NVIDIA's Python wheels into target/cuda/env; the driver library (libcuda.so.1) exists only where
# a driver is installed, so the link uses a stub with the driver API's names (made here from
# cudarc's bindings) and the real one is loaded at run time.
#
#   scripts/build-cuda.sh [PYTHON]     # any Python 3 with venv/pip (default: python3)
#
# Environment: CUDA_VERSION (default 13.0: the toolkit must not be newer than what the target's
# driver runs, or its PTX will not load — driver 580 runs CUDA 13.0), CUDA_COMPUTE_CAP (default 90:
# H100/H200; 80 for A100, 89 for L4/Ada). Output: target/cuda/focal (stripped). At run time it needs
# the driver (libcuda.so.1) and libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10 and
# libnvrtc.so.13 and libcudnn.so.9 on LD_LIBRARY_PATH (these wheels' target/cuda/env/.../nvidia/cu13/lib, or PyTorch's);
# `focal serve --device cuda` then runs the engine on GPU 0.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
version=${CUDA_VERSION:-13.0}
major=${version%%.*}
prefix="$PWD/target/cuda"
env="$prefix/env"
if [ ! -x "$env/bin/python" ]; then
    "$python" -m venv "$env"
fi
# nvvm and crt are nvcc's own parts: pinned too, or pip takes the newest and their PTX is newer.
"$env/bin/pip" install --quiet "nvidia-cuda-nvcc==$version.*" "nvidia-nvvm==$version.*" "nvidia-cuda-crt==$version.*" \
    "nvidia-cuda-runtime==$version.*" "nvidia-cuda-cccl==$version.*" "nvidia-cuda-nvrtc==$version.*" \
    "nvidia-cublas==$version.*" "nvidia-curand"
root=$(dirname "$(dirname "$(find "$env" -path "*/nvidia/cu$major/bin/nvcc" | head -n 1)")")
[ -x "$root/bin/nvcc" ] || { echo "no nvcc found under $env" >&2; exit 1; }

# Link-time names: unversioned links to the wheels' libraries, and the driver stub.
stubs="$root/lib/stubs"
mkdir -p "$stubs"
for lib in cublas cublasLt curand nvrtc cudart; do
    file=$(cd "$root/lib" && ls "lib$lib.so."* | grep -v alt | sort | head -n 1)
    ln -sf "../$file" "$stubs/lib$lib.so"
done
cargo fetch --locked
cudarc=$(cargo metadata --format-version 1 --locked --features cudnn 2>/dev/null |
    "$env/bin/python" -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc").rsplit("/",1)[0])')
# A library that exports every function cudarc declares for it, as empty functions: the link
# needs the names only, the real library is loaded at run time.
stub() { # stub SYS_MOD_RS LIBNAME SONAME
    grep -oE '^\s+fn (cu[A-Za-z0-9_]+)\(' "$cudarc/src/$1" | sed -E 's/^\s+fn ([A-Za-z0-9_]+)\(/void \1(void) {}/' |
        sort -u > "$prefix/$2_stub.c"
    cc -shared -fPIC -o "$stubs/$2.so" -Wl,-soname,"$3" "$prefix/$2_stub.c"
}
stub driver/sys/mod.rs libcuda libcuda.so.1
# cuDNN 9 is PyTorch's (the GPU machine's image has it); its wheel is hundreds of MB, so the link uses a stub too.
stub cudnn/sys/mod.rs libcudnn libcudnn.so.9

PATH="$root/bin:$PATH" CUDA_ROOT="$root" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" \
    cargo build --release --locked --features cudnn --target-dir "$prefix/build"
cp "$prefix/build/release/focal" "$prefix/focal"
strip "$prefix/focal"
echo "built $prefix/focal with CUDA $version for compute capability ${CUDA_COMPUTE_CAP:-90}"
