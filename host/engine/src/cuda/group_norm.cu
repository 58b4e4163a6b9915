// The group-norm kernels (group_norm.cuh), compiled to PTX by build.rs and loaded by
// group_norm_cuda.rs: statistics and application per element type.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
    return x;
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) {
    return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

#include "group_norm.cuh"

using focal_group_norm::Moments;

#define GROUP_NORM_ENTRIES(SUFFIX, T)                                                                          \
    extern "C" __global__ void __launch_bounds__(focal_group_norm::THREADS)                                    \
        group_norm_stats_##SUFFIX(const T* x, Moments* partials, long long span, long long chunk) {            \
        __shared__ Moments shared[focal_group_norm::THREADS];                                                  \
        focal_group_norm::stats<T>(x, partials, span, chunk, shared);                                          \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(focal_group_norm::THREADS) group_norm_apply_##SUFFIX(          \
        const T* x, const Moments* partials, const T* weight, const T* bias, T* out, long long span,           \
        long long chunk, long long spatial, int groups, int channels_per_group, float eps, int silu) {         \
        focal_group_norm::apply<T>(x, partials, weight, bias, out, span, chunk, spatial, groups,              \
                                   channels_per_group, eps, silu);                                             \
    }

GROUP_NORM_ENTRIES(f32, float)
GROUP_NORM_ENTRIES(f16, __half)
GROUP_NORM_ENTRIES(bf16, __nv_bfloat16)
