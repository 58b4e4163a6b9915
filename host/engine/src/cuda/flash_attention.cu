// The fused attention kernels, compiled to PTX by build.rs (feature `cuda`) and loaded by
// attention_flash.rs: one entry point per element type and head dimension.
#include "convert.cuh"
#include <mma.h>

namespace wmma = nvcuda::wmma;

#include "flash_attention.cuh"

#define FLASH_ENTRY(NAME, T, D)                                                                             \
    extern "C" __global__ void __launch_bounds__(focal_flash::THREADS)                                      \
        NAME(const T* q, const T* k, const T* v, T* out, int n, int m, int heads, float scale_log2) {         \
        extern __shared__ __align__(128) unsigned char smem[];                                              \
        focal_flash::flash_attention<T, D>(q, k, v, out, n, m, heads, scale_log2, smem);                    \
    }

FLASH_ENTRY(flash_attention_f16_d64, __half, 64)
FLASH_ENTRY(flash_attention_bf16_d64, __nv_bfloat16, 64)
FLASH_ENTRY(flash_attention_f16_d128, __half, 128)
FLASH_ENTRY(flash_attention_bf16_d128, __nv_bfloat16, 128)
