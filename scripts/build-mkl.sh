#!/usr/bin/env bash
# Build focal with Intel MKL for the CPU matrix products (the library PyTorch's CPU build uses):
# the linears and attention (candle's `mkl` feature) and the convolutions' GEMMs (`host/engine/src/blas.rs`).
# MKL's static libraries come from PyPI (mkl-static, mkl-include, intel-openmp; Intel Simplified Software
# Licence, redistributable) into target/mkl; OpenMP is linked statically too, so the binary needs nothing
# at run time. The default build (`cargo build --release`) does not use MKL and needs none of this.
#
#   scripts/build-mkl.sh [PYTHON]      # any Python 3 with pip (default: python3); ~1.3 GB download cache
#
# Then: target/release/focal (same CLI). Compare it with the default build on one machine in one run:
#   target/release/focal bench --sizes 512 --pytorch venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
prefix="$PWD/target/mkl"
if [ ! -f "$prefix/lib/libmkl_core.a" ]; then
    "$python" -m pip install --prefix "$prefix" --ignore-installed --no-warn-script-location mkl-static mkl-include intel-openmp
fi
# intel-mkl-src asks for `iomp5` without a kind: with only the archive there, it is linked statically.
rm -f "$prefix"/lib/libiomp5.so* "$prefix"/lib/libiomp5_db.so* "$prefix"/lib/libiompstubs5.so*
MKLROOT="$prefix" cargo build --release --features mkl
echo "built target/release/focal with MKL"
