// The GEGLU kernel's body (see geglu.cu); the including file provides to_f32/from_f32<T>, uint4,
// threadIdx/blockIdx/blockDim/gridDim and erff.
#pragma once

namespace focal_geglu {

// h: [rows, 2·half] without its bias; bias: [2·half]; out: [rows, half]; half a multiple of 8 and
// every pointer 16-byte aligned (8 values a load). A grid-stride loop over 8-value groups.
template <typename T>
__device__ __forceinline__ void geglu_bias(const T* __restrict__ h, const T* __restrict__ bias, T* __restrict__ out,
                                           long long rows, int half) {
    const int groups = half / 8;
    const long long total = rows * groups;
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long r = i / groups;
        const int j = static_cast<int>(i % groups) * 8;
        const T* row = h + r * 2 * half;
        const uint4 value_bits = *reinterpret_cast<const uint4*>(row + j);
        const uint4 gate_bits = *reinterpret_cast<const uint4*>(row + half + j);
        const uint4 value_bias_bits = *reinterpret_cast<const uint4*>(bias + j);
        const uint4 gate_bias_bits = *reinterpret_cast<const uint4*>(bias + half + j);
        const T* value = reinterpret_cast<const T*>(&value_bits);
        const T* gate = reinterpret_cast<const T*>(&gate_bits);
        const T* value_bias = reinterpret_cast<const T*>(&value_bias_bits);
        const T* gate_bias = reinterpret_cast<const T*>(&gate_bias_bits);
        uint4 out_bits;
        T* o = reinterpret_cast<T*>(&out_bits);
        for (int e = 0; e < 8; ++e) {
            const float v = to_f32(from_f32<T>(to_f32(value[e]) + to_f32(value_bias[e])));
            const float g = to_f32(from_f32<T>(to_f32(gate[e]) + to_f32(gate_bias[e])));
            const float gelu = to_f32(from_f32<T>(0.5f * g * (1.f + erff(g * 0.70710678118654752f))));
            o[e] = from_f32<T>(v * gelu);
        }
        *reinterpret_cast<uint4*>(out + r * half + j) = out_bits;
    }
}

}  // namespace focal_geglu
