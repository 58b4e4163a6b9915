// The fused attention kernels, compiled to PTX by build.rs (feature `cuda`) and loaded by
// attention_flash.rs: one entry point per variant (WMMA with the running output in shared memory,
// or mma.sync with everything in registers), element type and head dimension.
#include "convert.cuh"
#include <mma.h>

namespace wmma = nvcuda::wmma;

#include "mma.cuh"

#include "flash_attention.cuh"
#include "flash_attention_mma.cuh"

// One entry point: VARIANT is the kernel's namespace (focal_flash: WMMA, focal_flash_mma: mma.sync).
#define FLASH_ENTRY(NAME, VARIANT, T, D)                                                                    \
    extern "C" __global__ void __launch_bounds__(VARIANT::THREADS)                                          \
        NAME(const T* q, const T* k, const T* v, T* out, int n, int m, int heads, float scale_log2) {         \
        extern __shared__ __align__(128) unsigned char smem[];                                              \
        VARIANT::flash_attention<T, D>(q, k, v, out, n, m, heads, scale_log2, smem);                        \
    }

FLASH_ENTRY(flash_attention_f16_d64, focal_flash, __half, 64)
FLASH_ENTRY(flash_attention_bf16_d64, focal_flash, __nv_bfloat16, 64)
FLASH_ENTRY(flash_attention_f16_d128, focal_flash, __half, 128)
FLASH_ENTRY(flash_attention_bf16_d128, focal_flash, __nv_bfloat16, 128)
FLASH_ENTRY(flash_attention_mma_f16_d64, focal_flash_mma, __half, 64)
FLASH_ENTRY(flash_attention_mma_bf16_d64, focal_flash_mma, __nv_bfloat16, 64)
FLASH_ENTRY(flash_attention_mma_f16_d128, focal_flash_mma, __half, 128)
FLASH_ENTRY(flash_attention_mma_bf16_d128, focal_flash_mma, __nv_bfloat16, 128)
