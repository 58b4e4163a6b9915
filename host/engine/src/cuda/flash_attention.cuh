// Fused multi-head attention for NVIDIA GPUs ("flash" attention, forward only, no mask): each block
// takes 64 query rows of one (item, head), walks the keys 64 at a time and keeps a running
// softmax (the row's maximum, its sum and the unnormalised output), so no score leaves the
// multiprocessor — the candle-ops path writes and re-reads every score through device memory.
//
// Products on the tensor cores through WMMA (16×16×16 tiles, f16/bf16 inputs, f32 sums). The
// code touches a fragment only through load/store/mma/fill, never element by element, so it is
// correct whatever the hardware's fragment layout — which is what lets tests/cuda_emulated run
// this same source on the CPU with an emulated WMMA.
//
// The including file provides: `wmma` (nvcuda::wmma or the emulation), `from_f32<T>(float)`,
// `uint4`/`make_uint4`, `threadIdx`/`blockIdx`, `__syncthreads`, `__syncwarp`, `__shfl_xor_sync`.
#pragma once

namespace focal_flash {

constexpr int WARPS = 4;
constexpr int THREADS = 32 * WARPS;
constexpr int ROWS = 16 * WARPS;  // query rows per block, 16 per warp
constexpr int KEYS = 64;          // keys per step

// Shared memory, in bytes from the block's dynamic base (each tile start 32-byte aligned, as WMMA
// wants): keys and values [KEYS][D + 8] (the 8 spread rows over the banks), then per warp its
// scores [16][KEYS + 4] in f32 — overwritten in place by the probabilities in T, same row starts —
// then per warp its output rows [16][D + 4] in f32.
template <int D>
struct Layout {
    static_assert(D % 16 == 0 && D <= 256, "head dimension: a multiple of 16, at most 256");
    static constexpr int KV_LD = D + 8;
    static constexpr int S_LD = KEYS + 4;
    static constexpr int P_LD = 2 * S_LD;
    static constexpr int O_LD = D + 4;
    static constexpr int K_AT = 0;
    static constexpr int V_AT = K_AT + KEYS * KV_LD * 2;
    static constexpr int S_AT = V_AT + KEYS * KV_LD * 2;
    static constexpr int O_AT = S_AT + WARPS * 16 * S_LD * 4;
    static constexpr int BYTES = O_AT + WARPS * 16 * O_LD * 4;
};

// 64 rows of D values from `src` (row stride `ld` values) into `dst` (row stride D + 8), 16 bytes
// a load; rows from `valid` on are zeros (past the sequence's end).
template <typename T, int D>
__device__ __forceinline__ void load_rows(T* dst, const T* __restrict__ src, int valid, int ld) {
    constexpr int PER_ROW = D / 8;
    for (int i = threadIdx.x; i < 64 * PER_ROW; i += THREADS) {
        const int r = i / PER_ROW, c = (i % PER_ROW) * 8;
        uint4 value = make_uint4(0, 0, 0, 0);
        if (r < valid) value = *reinterpret_cast<const uint4*>(src + static_cast<long long>(r) * ld + c);
        *reinterpret_cast<uint4*>(dst + r * (D + 8) + c) = value;
    }
}

// q: [B, n, heads·D], k and v: [B, m, heads·D], out like q; grid (⌈n/64⌉, heads, B), 128 threads,
// Layout<D>::BYTES of dynamic shared memory. `scale_log2` = log2(e)/√D: the scores go through exp2.
template <typename T, int D>
__device__ __forceinline__ void flash_attention(const T* __restrict__ q, const T* __restrict__ k,
                                                const T* __restrict__ v, T* __restrict__ out, int n, int m,
                                                int heads, float scale_log2, unsigned char* smem) {
    using L = Layout<D>;
    const int ld = heads * D;
    const int row0 = blockIdx.x * ROWS;
    const int head = blockIdx.y;
    const long long item = blockIdx.z;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    T* keys = reinterpret_cast<T*>(smem + L::K_AT);
    T* values = reinterpret_cast<T*>(smem + L::V_AT);
    float* scores = reinterpret_cast<float*>(smem + L::S_AT) + warp * 16 * L::S_LD;
    T* probs = reinterpret_cast<T*>(scores);
    float* acc_rows = reinterpret_cast<float*>(smem + L::O_AT) + warp * 16 * L::O_LD;

    // The warp's 16 query rows stay in registers, staged through the keys' buffer.
    load_rows<T, D>(keys, q + (item * n + row0) * ld + head * D, n - row0, ld);
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> query[D / 16];
    for (int kk = 0; kk < D / 16; ++kk)
        wmma::load_matrix_sync(query[kk], keys + warp * 16 * L::KV_LD + kk * 16, L::KV_LD);

    // Two lanes per row: lane/2 is the row, lane%2 the half of the columns it updates.
    const int r = lane / 2, side = lane % 2;
    float row_max = -INFINITY, row_sum = 0.f;
    for (int c = side * (D / 2); c < (side + 1) * (D / 2); ++c) acc_rows[r * L::O_LD + c] = 0.f;

    for (int key0 = 0; key0 < m; key0 += KEYS) {
        __syncthreads();  // every warp is done with the previous keys and values (or the queries)
        const long long kv_at = (item * m + key0) * ld + head * D;
        load_rows<T, D>(keys, k + kv_at, m - key0, ld);
        load_rows<T, D>(values, v + kv_at, m - key0, ld);
        __syncthreads();

        // Scores of the warp's rows against these keys: S = Q·Kᵀ (K's rows read as Kᵀ's columns).
        for (int j = 0; j < KEYS / 16; ++j) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> s;
            wmma::fill_fragment(s, 0.f);
            for (int kk = 0; kk < D / 16; ++kk) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> key;
                wmma::load_matrix_sync(key, keys + j * 16 * L::KV_LD + kk * 16, L::KV_LD);
                wmma::mma_sync(s, query[kk], key, s);
            }
            wmma::store_matrix_sync(scores + j * 16, s, L::S_LD, wmma::mem_row_major);
        }
        __syncwarp();

        // The running softmax: new maximum, the old sums and outputs rescaled to it.
        const int valid = m - key0;
        float x[KEYS / 2];
        float block_max = -INFINITY;
        for (int c = 0; c < KEYS / 2; ++c) {
            const int col = side * (KEYS / 2) + c;
            x[c] = col < valid ? scores[r * L::S_LD + col] * scale_log2 : -INFINITY;
            block_max = fmaxf(block_max, x[c]);
        }
        block_max = fmaxf(block_max, __shfl_xor_sync(0xffffffffu, block_max, 1));
        const float new_max = fmaxf(row_max, block_max);  // finite: every step has a valid key
        const float rescale = exp2f(row_max - new_max);
        float sum = 0.f;
        for (int c = 0; c < KEYS / 2; ++c) {
            x[c] = exp2f(x[c] - new_max);
            sum += x[c];
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        row_sum = row_sum * rescale + sum;
        row_max = new_max;
        __syncwarp();  // every score is read before the probabilities overwrite them
        for (int c = 0; c < KEYS / 2; ++c) probs[r * L::P_LD + side * (KEYS / 2) + c] = from_f32<T>(x[c]);
        for (int c = side * (D / 2); c < (side + 1) * (D / 2); ++c) acc_rows[r * L::O_LD + c] *= rescale;
        __syncwarp();

        // O += P·V (the probabilities loaded once for every output column tile)
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> p[KEYS / 16];
        for (int kk = 0; kk < KEYS / 16; ++kk) wmma::load_matrix_sync(p[kk], probs + kk * 16, L::P_LD);
        for (int t = 0; t < D / 16; ++t) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
            wmma::load_matrix_sync(o, acc_rows + t * 16, L::O_LD, wmma::mem_row_major);
            for (int kk = 0; kk < KEYS / 16; ++kk) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> value;
                wmma::load_matrix_sync(value, values + kk * 16 * L::KV_LD + t * 16, L::KV_LD);
                wmma::mma_sync(o, p[kk], value, o);
            }
            wmma::store_matrix_sync(acc_rows + t * 16, o, L::O_LD, wmma::mem_row_major);
        }
        __syncwarp();
    }

    const int row = row0 + warp * 16 + r;
    if (row < n) {
        const float inv = 1.f / row_sum;
        T* dst = out + (item * n + row) * ld + head * D;
        for (int c = side * (D / 2); c < (side + 1) * (D / 2); ++c) dst[c] = from_f32<T>(acc_rows[r * L::O_LD + c] * inv);
    }
}

}  // namespace focal_flash
