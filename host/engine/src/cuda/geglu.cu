// GEGLU with its projection's bias, for NVIDIA GPUs in f16/bf16: out = (value + b_v) · gelu(gate + b_g)
// for each row h = [value | gate] of the projection's product (its bias not yet added): one pass
// instead of candle's three (the bias, the GELU of the gate half, the product). Rounded to T where
// PyTorch rounds (the biased halves, the GELU), computed in f32. Compiled to PTX by build.rs and
// loaded by geglu_cuda.rs; tests/cuda_emulated runs this source on the CPU.
#include "convert.cuh"
#include "geglu.cuh"

#define GEGLU_ENTRY(NAME, T)                                                                              \
    extern "C" __global__ void NAME(const T* h, const T* bias, T* out, long long rows, int half) {      \
        focal_geglu::geglu_bias<T>(h, bias, out, rows, half);                                           \
    }

GEGLU_ENTRY(geglu_bias_f16, __half)
GEGLU_ENTRY(geglu_bias_bf16, __nv_bfloat16)
