// GEGLU with its projection's bias, for NVIDIA GPUs in f16/bf16: out = (value + b_v) · gelu(gate + b_g)
// for each row h = [value | gate] of the projection's product (its bias not yet added): one pass
// instead of candle's three (the bias, the GELU of the gate half, the product). Rounded to T where
// PyTorch rounds (the biased halves, the GELU), computed in f32. Compiled to PTX by build.rs and
// loaded by geglu_cuda.rs; tests/cuda_emulated runs this source on the CPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) {
    return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

#include "geglu.cuh"

#define GEGLU_ENTRY(NAME, T)                                                                              \
    extern "C" __global__ void NAME(const T* h, const T* bias, T* out, long long rows, int half) {      \
        focal_geglu::geglu_bias<T>(h, bias, out, rows, half);                                           \
    }

GEGLU_ENTRY(geglu_bias_f16, __half)
GEGLU_ENTRY(geglu_bias_bf16, __nv_bfloat16)
