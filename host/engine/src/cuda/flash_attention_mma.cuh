// The fused attention of flash_attention.cuh with its running state in registers ("FlashAttention-2"
// style): the products are PTX `mma.sync.m16n8k16` (f16/bf16 in, f32 out), whose per-lane
// fragment layouts the PTX ISA documents, so the scores, the probabilities and the output rows
// never leave the registers: the scores' accumulator tiles are exactly the probabilities' A
// operand (two 16×8 tiles = one 16×16 A tile), and each lane rescales the two rows it holds.
// Shared memory holds only the keys [64][D + 8] and the values transposed [D][64 + 8] (so a lane's
// B operand is two adjacent values: one 32-bit load, no bank conflicts with these strides).
//
// Lane l of a warp is in group g = l / 4 at position t = l % 4; for one m16n8k16 product it holds
// (PTX ISA, "Matrix Fragments for mma.m16n8k16"): A rows g and g + 8, columns 2t, 2t + 1 and
// 2t + 8, 2t + 9 (four 32-bit registers of two values); B rows (k) 2t, 2t + 1 and 2t + 8, 2t + 9 of
// column g (two registers); C/D rows g and g + 8, columns 2t and 2t + 1 (four floats).
//
// The including file provides `mma16816<T>` (the instruction, or its emulation), `pack_f32<T>`,
// `uint4`/`make_uint4`, `threadIdx`/`blockIdx`, `__syncthreads`, `__shfl_xor_sync`, `exp2f`/`fmaxf`.
#pragma once

namespace focal_flash_mma {

constexpr int WARPS = 4;
constexpr int THREADS = 32 * WARPS;
constexpr int ROWS = 16 * WARPS;
constexpr int KEYS = 64;

template <int D>
struct Layout {
    static_assert(D % 16 == 0 && D <= 128, "head dimension: a multiple of 16, at most 128");
    static constexpr int K_LD = D + 8;     // keys (and the queries, staged), in values
    static constexpr int VT_LD = KEYS + 8; // values transposed: [D][KEYS + 8]
    static constexpr int K_AT = 0;
    static constexpr int VT_AT = K_AT + KEYS * K_LD * 2;
    static constexpr int BYTES = VT_AT + D * VT_LD * 2;
};

// Two adjacent values at `p` (an even index) as one register.
template <typename T>
__device__ __forceinline__ unsigned pair(const T* p) {
    return *reinterpret_cast<const unsigned*>(p);
}

// q: [B, n, heads·D], k and v: [B, m, heads·D], out like q; grid (⌈n/64⌉, heads, B), 128 threads,
// Layout<D>::BYTES of dynamic shared memory; scale_log2 = log2(e)/√D.
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
    const int g = lane / 4, t = lane % 4;
    T* keys = reinterpret_cast<T*>(smem + L::K_AT);
    T* values_t = reinterpret_cast<T*>(smem + L::VT_AT);

    // Rows [valid, 64) of a [64][D] tile are zeros; 8 values (16 bytes) a load.
    auto load = [&](const T* src, int valid, bool transpose) {
        for (int i = threadIdx.x; i < 64 * (D / 8); i += THREADS) {
            const int r = i / (D / 8), c = (i % (D / 8)) * 8;
            uint4 bits = make_uint4(0, 0, 0, 0);
            if (r < valid) bits = *reinterpret_cast<const uint4*>(src + static_cast<long long>(r) * ld + c);
            if (!transpose) {
                *reinterpret_cast<uint4*>(keys + r * L::K_LD + c) = bits;
            } else {
                const T* e = reinterpret_cast<const T*>(&bits);
                for (int j = 0; j < 8; ++j) values_t[(c + j) * L::VT_LD + r] = e[j];
            }
        }
    };

    // The warp's queries as A operands, staged through the keys' buffer.
    load(q + (item * n + row0) * ld + head * D, n - row0, false);
    __syncthreads();
    unsigned query[D / 16][4];
    {
        const T* rows = keys + warp * 16 * L::K_LD;
        for (int kk = 0; kk < D / 16; ++kk) {
            query[kk][0] = pair(rows + g * L::K_LD + kk * 16 + 2 * t);
            query[kk][1] = pair(rows + (g + 8) * L::K_LD + kk * 16 + 2 * t);
            query[kk][2] = pair(rows + g * L::K_LD + kk * 16 + 2 * t + 8);
            query[kk][3] = pair(rows + (g + 8) * L::K_LD + kk * 16 + 2 * t + 8);
        }
    }

    // Output tiles (16 rows × 8 columns each) and, per held row (g, g + 8), the running maximum
    // and this lane's part of the running sum.
    float acc[D / 8][4];
    for (int j = 0; j < D / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

    for (int key0 = 0; key0 < m; key0 += KEYS) {
        __syncthreads();
        const long long kv_at = (item * m + key0) * ld + head * D;
        load(k + kv_at, m - key0, false);
        load(v + kv_at, m - key0, true);
        __syncthreads();

        // Scores: 8 tiles of 8 keys.
        float s[KEYS / 8][4];
        for (int j = 0; j < KEYS / 8; ++j) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
            const T* key = keys + (j * 8 + g) * L::K_LD;
            for (int kk = 0; kk < D / 16; ++kk) {
                const unsigned b[2] = {pair(key + kk * 16 + 2 * t), pair(key + kk * 16 + 2 * t + 8)};
                mma16816<T>(s[j], query[kk], b, s[j]);
            }
        }

        // Running softmax per held row; the four lanes of a group hold a row's 64 scores.
        const int valid = m - key0;
        float block_max[2] = {-INFINITY, -INFINITY};
        for (int j = 0; j < KEYS / 8; ++j)
            for (int e = 0; e < 4; ++e) {
                const int col = j * 8 + 2 * t + (e & 1);
                s[j][e] = col < valid ? s[j][e] * scale_log2 : -INFINITY;
                block_max[e / 2] = fmaxf(block_max[e / 2], s[j][e]);
            }
        float rescale[2];
        for (int h = 0; h < 2; ++h) {
            block_max[h] = fmaxf(block_max[h], __shfl_xor_sync(0xffffffffu, block_max[h], 1));
            block_max[h] = fmaxf(block_max[h], __shfl_xor_sync(0xffffffffu, block_max[h], 2));
            const float new_max = fmaxf(row_max[h], block_max[h]);  // finite: every step has a valid key
            rescale[h] = exp2f(row_max[h] - new_max);
            row_max[h] = new_max;
            row_sum[h] *= rescale[h];
        }
        for (int j = 0; j < KEYS / 8; ++j)
            for (int e = 0; e < 4; ++e) {
                s[j][e] = exp2f(s[j][e] - row_max[e / 2]);
                row_sum[e / 2] += s[j][e];
            }
        for (int j = 0; j < D / 8; ++j)
            for (int e = 0; e < 4; ++e) acc[j][e] *= rescale[e / 2];

        // O += P·V: two score tiles make one A operand of 16 keys.
        for (int kk = 0; kk < KEYS / 16; ++kk) {
            const unsigned p[4] = {pack_f32<T>(s[2 * kk][0], s[2 * kk][1]), pack_f32<T>(s[2 * kk][2], s[2 * kk][3]),
                                   pack_f32<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                   pack_f32<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            for (int j = 0; j < D / 8; ++j) {
                const T* column = values_t + (j * 8 + g) * L::VT_LD + kk * 16;
                const unsigned b[2] = {pair(column + 2 * t), pair(column + 2 * t + 8)};
                mma16816<T>(acc[j], p, b, acc[j]);
            }
        }
    }

    // Whole row sums (the group's four lanes), then rows g and g + 8 of the warp's 16.
    for (int h = 0; h < 2; ++h) {
        row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
        row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
    }
    for (int h = 0; h < 2; ++h) {
        const int row = row0 + warp * 16 + g + 8 * h;
        if (row >= n) continue;
        const float inv = 1.f / row_sum[h];
        T* dst = out + (item * n + row) * ld + head * D + 2 * t;
        for (int j = 0; j < D / 8; ++j)
            *reinterpret_cast<unsigned*>(dst + j * 8) = pack_f32<T>(acc[j][2 * h] * inv, acc[j][2 * h + 1] * inv);
    }
}

}  // namespace focal_flash_mma
