// Group normalisation (optionally followed by SiLU) for NVIDIA GPUs, in two kernels. A group of
// an NCHW tensor is one contiguous span (its channels × the spatial positions); each span is cut
// into chunks so that a VAE's few huge groups (32 per item, millions of values each) still fill
// the GPU. `stats`: each block's chunk → (count, mean, M2), per thread from sums shifted by the
// span's first value (no cancellation), merged across the block by Chan's formula. `apply`: each
// block merges its span's partials, then writes silu?((x − mean)·rstd·w[c] + b[c]) for its chunk,
// computed in f32 and rounded once (PyTorch's GroupNorm computes in f32 too).
//
// The including file provides to_f32/from_f32<T>, threadIdx/blockIdx/gridDim, __syncthreads,
// rsqrtf and expf.
#pragma once

namespace focal_group_norm {

constexpr int THREADS = 256;

struct Moments {
    float count, mean, m2;
};

__device__ __forceinline__ Moments merge(Moments a, Moments b) {
    const float count = a.count + b.count;
    if (count == 0.f) return a;
    const float delta = b.mean - a.mean;
    const float share = b.count / count;
    return Moments{count, a.mean + delta * share, a.m2 + b.m2 + delta * delta * a.count * share};
}

// Every thread's moments merged; the result in every thread. `shared` holds THREADS moments.
__device__ __forceinline__ Moments block_merge(Moments m, Moments* shared) {
    shared[threadIdx.x] = m;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if (static_cast<int>(threadIdx.x) < s) shared[threadIdx.x] = merge(shared[threadIdx.x], shared[threadIdx.x + s]);
        __syncthreads();
    }
    const Moments all = shared[0];
    __syncthreads();
    return all;
}

// grid (chunks, items·groups), THREADS threads; partials: [items·groups][chunks] moments.
template <typename T>
__device__ __forceinline__ void stats(const T* __restrict__ x, Moments* __restrict__ partials, long long span,
                                      long long chunk, Moments* shared) {
    const long long row = blockIdx.y;
    const long long start = blockIdx.x * chunk;
    const long long end = start + chunk < span ? start + chunk : span;
    const T* values = x + row * span;
    const float shift = to_f32(values[0]);
    float n = 0.f, s1 = 0.f, s2 = 0.f;
    for (long long i = start + threadIdx.x; i < end; i += THREADS) {
        const float d = to_f32(values[i]) - shift;
        n += 1.f;
        s1 += d;
        s2 += d * d;
    }
    Moments m{0.f, 0.f, 0.f};
    if (n > 0.f) {
        const float m2 = s2 - s1 * s1 / n;
        m = Moments{n, shift + s1 / n, m2 > 0.f ? m2 : 0.f};
    }
    m = block_merge(m, shared);
    if (threadIdx.x == 0) partials[row * gridDim.x + blockIdx.x] = m;
}

// grid (chunks, items·groups) as `stats`; weight and bias: one per channel; silu: 0 or 1.
template <typename T>
__device__ __forceinline__ void apply(const T* __restrict__ x, const Moments* __restrict__ partials,
                                      const T* __restrict__ weight, const T* __restrict__ bias, T* __restrict__ out,
                                      long long span, long long chunk, long long spatial, int groups,
                                      int channels_per_group, float eps, int silu) {
    const long long row = blockIdx.y;
    Moments m{0.f, 0.f, 0.f};
    for (unsigned k = 0; k < gridDim.x; ++k) m = merge(m, partials[row * gridDim.x + k]);
    const float mean = m.mean;
    const float rstd = rsqrtf(m.m2 / m.count + eps);
    const int first_channel = static_cast<int>(row % groups) * channels_per_group;
    const long long start = blockIdx.x * chunk;
    const long long end = start + chunk < span ? start + chunk : span;
    long long i = start + threadIdx.x;
    if (i >= end) return;
    // The channel is tracked as i advances (no 64-bit division per value).
    long long channel_end = (i / spatial + 1) * spatial;
    int channel = first_channel + static_cast<int>(i / spatial);
    float scale = rstd * to_f32(weight[channel]), shift = to_f32(bias[channel]);
    const T* src = x + row * span;
    T* dst = out + row * span;
    for (; i < end; i += THREADS) {
        if (i >= channel_end) {
            do {
                ++channel;
                channel_end += spatial;
            } while (i >= channel_end);
            scale = rstd * to_f32(weight[channel]);
            shift = to_f32(bias[channel]);
        }
        float y = (to_f32(src[i]) - mean) * scale + shift;
        if (silu) y = y / (1.f + expf(-y));
        dst[i] = from_f32<T>(y);
    }
}

}  // namespace focal_group_norm
