// Just enough of CUDA to run the engine's kernels (src/cuda/*.cuh) on the CPU: one OS thread per CUDA
// thread of a block, barriers for __syncthreads/__syncwarp, an exchange buffer for shuffles, and a
// WMMA whose fragments each hold the whole 16×16 tile (the kernel never depends on the layout).
// A fragment's store is done by lane 0 alone, so a read of shared memory that a kernel forgot to
// order after a store (a missing __syncwarp) shows up here as a wrong result.
#pragma once
#include <barrier>
#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#define __device__
#define __forceinline__ inline

struct dim3 {
    unsigned x = 0, y = 0, z = 0;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// bf16 by its bits: rounded to nearest even from f32, as __float2bfloat16_rn.
struct bf16 {
    uint16_t bits;
};
inline float to_f32(bf16 x) {
    uint32_t u = uint32_t(x.bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float to_f32(_Float16 x) { return float(x); }
inline float to_f32(float x) { return x; }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }

template <typename T>
T from_f32(float x);
template <>
inline float from_f32<float>(float x) { return x; }
template <>
inline _Float16 from_f32<_Float16>(float x) { return _Float16(x); }
template <>
inline bf16 from_f32<bf16>(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return bf16{uint16_t(u >> 16)};
}

// What a warp's lanes hand each other for one mma16816: every lane's operand registers.
struct MmaExchange {
    unsigned a[32][4], b[32][2];
};

struct BlockSync {
    explicit BlockSync(int threads) : block(threads), exchange(threads), mma(threads / 32) {
        for (int w = 0; w < threads / 32; ++w) warps.push_back(std::make_unique<std::barrier<>>(32));
    }
    std::barrier<> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<float> exchange;
    std::vector<MmaExchange> mma;
};
inline thread_local BlockSync* block_sync = nullptr;

inline void __syncthreads() { block_sync->block.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { block_sync->warps[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float value, int lane_mask) {
    block_sync->exchange[threadIdx.x] = value;
    __syncwarp();
    const unsigned lane = threadIdx.x % 32, base = threadIdx.x - lane;
    const float other = block_sync->exchange[base + (lane ^ unsigned(lane_mask))];
    __syncwarp();
    return other;
}

// Two values' bits as one register, the first in the low half (an mma operand register).
template <typename T>
unsigned pack_f32(float lo, float hi) {
    const T l = from_f32<T>(lo), h = from_f32<T>(hi);
    uint16_t lb, hb;
    std::memcpy(&lb, &l, 2);
    std::memcpy(&hb, &h, 2);
    return unsigned(lb) | (unsigned(hb) << 16);
}

template <typename T>
float half_of(unsigned bits, int high) {
    const uint16_t b = uint16_t(high ? bits >> 16 : bits & 0xffffu);
    T value;
    std::memcpy(&value, &b, 2);
    return to_f32(value);
}

// PTX mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: the warp's A (16×16) and B (16×8) put
// together from every lane's registers by the PTX ISA's documented fragment layout (lane l: group
// g = l/4, position t = l%4; A rows g, g+8 × columns 2t, 2t+1, 2t+8, 2t+9; B rows 2t, 2t+1,
// 2t+8, 2t+9 of column g; C/D rows g, g+8 × columns 2t, 2t+1), then this lane's part of D.
template <typename T>
void mma16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4]) {
    MmaExchange& x = block_sync->mma[threadIdx.x / 32];
    const unsigned lane = threadIdx.x % 32;
    std::memcpy(x.a[lane], a, sizeof a);
    std::memcpy(x.b[lane], b, sizeof b);
    __syncwarp();
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        const int g = l / 4, t = l % 4;
        for (int e = 0; e < 2; ++e) {
            A[g][2 * t + e] = half_of<T>(x.a[l][0], e);
            A[g + 8][2 * t + e] = half_of<T>(x.a[l][1], e);
            A[g][2 * t + 8 + e] = half_of<T>(x.a[l][2], e);
            A[g + 8][2 * t + 8 + e] = half_of<T>(x.a[l][3], e);
            B[2 * t + e][g] = half_of<T>(x.b[l][0], e);
            B[2 * t + 8 + e][g] = half_of<T>(x.b[l][1], e);
        }
    }
    __syncwarp();  // every lane has read the exchange before the next product overwrites it
    const int g = lane / 4, t = lane % 4;
    float out[4];
    for (int e = 0; e < 4; ++e) {
        const int row = g + 8 * (e / 2), col = 2 * t + (e % 2);
        float sum = c[e];
        for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
        out[e] = sum;
    }
    std::memcpy(d, out, sizeof out);
}

namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    float x[256];
};

template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float value) {
    for (float& x : f.x) x = value;
}

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ld) {
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j)
            f.x[i * 16 + j] = to_f32(std::is_same_v<Layout, row_major> ? p[i * ld + j] : p[j * ld + i]);
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ld, layout_t layout) {
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) f.x[i * 16 + j] = layout == mem_row_major ? p[i * ld + j] : p[j * ld + i];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ld, layout_t layout) {
    if (threadIdx.x % 32 != 0) return;
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) (layout == mem_row_major ? p[i * ld + j] : p[j * ld + i]) = f.x[i * 16 + j];
}

template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
    float out[256];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) {
            float sum = c.x[i * 16 + j];
            for (int k = 0; k < 16; ++k) sum += a.x[i * 16 + k] * b.x[k * 16 + j];
            out[i * 16 + j] = sum;
        }
    std::memcpy(d.x, out, sizeof out);
}
}  // namespace wmma
