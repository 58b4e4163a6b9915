// The group-norm kernels (group_norm.cuh), compiled to PTX by build.rs and loaded by
// group_norm_cuda.rs: statistics and application per element type.
#include "convert.cuh"
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
