// Runs the engine's GPU kernels (src/cuda/*.cuh, the same sources nvcc compiles) on the CPU under
// emulated_cuda.hpp and checks every output against f64 arithmetic on the same rounded inputs:
// the fused attention, the GEGLU with its bias and the group norm (+ SiLU). Built and run by tests/cuda_kernels_emulated.rs:
//   c++ -std=c++20 -O2 -fno-strict-aliasing -pthread -I src/cuda tests/cuda_emulated/main.cpp && ./a.out
// Exit status 0 when every case is within its tolerance.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <string>
#include <tuple>

#include "emulated_cuda.hpp"
#include "flash_attention.cuh"
#include "flash_attention_mma.cuh"
#include "geglu.cuh"
#include "group_norm.cuh"

struct Case {
    int batch, heads, n, m;
    float spread;  // the queries' scale: larger gives peaked softmaxes (the running maximum moves)
    float v_mean = 0.f;  // the values' mean: a wrong weight then moves the output by that much
};

// Registers: the mma.sync variant (flash_attention_mma.cuh), else the WMMA one.
template <typename T, int D, bool Registers>
double run_case(const Case& c, std::mt19937& rng) {
    const int ld = c.heads * D;
    std::normal_distribution<float> normal(0.f, 1.f);
    auto fill = [&](std::vector<T>& t, size_t count, float scale, float mean = 0.f) {
        t.resize(count);
        for (auto& x : t) x = from_f32<T>(mean + normal(rng) * scale);
    };
    std::vector<T> q, k, v;
    fill(q, size_t(c.batch) * c.n * ld, c.spread);
    fill(k, size_t(c.batch) * c.m * ld, 1.f);
    fill(v, size_t(c.batch) * c.m * ld, 1.f, c.v_mean);
    std::vector<T> out(size_t(c.batch) * c.n * ld, from_f32<T>(NAN));

    const float scale_log2 = float(M_LOG2E / std::sqrt(double(D)));
    const int row_blocks = (c.n + focal_flash::ROWS - 1) / focal_flash::ROWS;
    for (int z = 0; z < c.batch; ++z)
        for (int y = 0; y < c.heads; ++y)
            for (int x = 0; x < row_blocks; ++x) {
                BlockSync sync(focal_flash::THREADS);
                const int bytes = Registers ? focal_flash_mma::Layout<D>::BYTES : focal_flash::Layout<D>::BYTES;
                std::vector<unsigned char> smem(bytes + 128);
                std::vector<std::thread> threads;
                for (unsigned t = 0; t < unsigned(focal_flash::THREADS); ++t)
                    threads.emplace_back([&, t] {
                        threadIdx = dim3{t, 0, 0};
                        blockIdx = dim3{unsigned(x), unsigned(y), unsigned(z)};
                        block_sync = &sync;
                        if constexpr (Registers)
                            focal_flash_mma::flash_attention<T, D>(q.data(), k.data(), v.data(), out.data(), c.n, c.m,
                                                                   c.heads, scale_log2, smem.data());
                        else
                            focal_flash::flash_attention<T, D>(q.data(), k.data(), v.data(), out.data(), c.n, c.m, c.heads,
                                                               scale_log2, smem.data());
                    });
                for (auto& t : threads) t.join();
            }

    // f64 reference; the error relative to the largest |v| (the output is a weighted mean of v's rows).
    double worst = 0, v_max = 0;
    for (auto x : v) v_max = std::max(v_max, std::abs(double(to_f32(x))));
    std::vector<double> s(c.m);
    for (int b = 0; b < c.batch; ++b)
        for (int h = 0; h < c.heads; ++h)
            for (int i = 0; i < c.n; ++i) {
                const T* qi = &q[(size_t(b) * c.n + i) * ld + h * D];
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < c.m; ++j) {
                    const T* kj = &k[(size_t(b) * c.m + j) * ld + h * D];
                    double dot = 0;
                    for (int d = 0; d < D; ++d) dot += double(to_f32(qi[d])) * to_f32(kj[d]);
                    s[j] = dot / std::sqrt(double(D));
                    mx = std::max(mx, s[j]);
                }
                for (int j = 0; j < c.m; ++j) sum += (s[j] = std::exp(s[j] - mx));
                for (int d = 0; d < D; ++d) {
                    double o = 0;
                    for (int j = 0; j < c.m; ++j) o += s[j] * to_f32(v[(size_t(b) * c.m + j) * ld + h * D + d]);
                    const double got = to_f32(out[(size_t(b) * c.n + i) * ld + h * D + d]);
                    const double err = std::isfinite(got) ? std::abs(got - o / sum) / v_max : INFINITY;
                    worst = std::max(worst, err);
                }
            }
    return worst;
}

// GEGLU with bias: rows × [value | gate] plus the bias, on a grid smaller than the work (the
// kernel's grid-stride loop). Returns max |error| / max |reference|.
template <typename T>
double run_geglu(long long rows, int half, std::mt19937& rng) {
    std::normal_distribution<float> normal(0.f, 1.f);
    std::vector<T> h(rows * 2 * half), bias(2 * half), out(rows * half, from_f32<T>(NAN));
    for (auto& x : h) x = from_f32<T>(normal(rng) * 2.f);
    for (auto& x : bias) x = from_f32<T>(normal(rng) * 0.5f);
    blockDim = dim3{256, 1, 1};
    gridDim = dim3{3, 1, 1};
    for (unsigned b = 0; b < gridDim.x; ++b)
        for (unsigned t = 0; t < blockDim.x; ++t) {  // no barriers: the threads can run one by one
            blockIdx = dim3{b, 0, 0};
            threadIdx = dim3{t, 0, 0};
            focal_geglu::geglu_bias<T>(h.data(), bias.data(), out.data(), rows, half);
        }
    double worst = 0, largest = 0;
    std::vector<double> want(out.size());
    for (long long r = 0; r < rows; ++r)
        for (int j = 0; j < half; ++j) {
            const double v = double(to_f32(h[r * 2 * half + j])) + to_f32(bias[j]);
            const double g = double(to_f32(h[r * 2 * half + half + j])) + to_f32(bias[half + j]);
            want[r * half + j] = v * 0.5 * g * (1 + std::erf(g / std::sqrt(2.0)));
            largest = std::max(largest, std::abs(want[r * half + j]));
        }
    for (size_t i = 0; i < out.size(); ++i) {
        const double got = to_f32(out[i]);
        worst = std::max(worst, std::isfinite(got) ? std::abs(got - want[i]) : INFINITY);
    }
    return worst / largest;
}

// Runs one kernel's grid, a block at a time, each block's threads as OS threads.
template <typename Kernel>
void run_grid(dim3 grid, int threads, Kernel kernel) {
    gridDim = grid;
    blockDim = dim3{unsigned(threads), 1, 1};
    for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
            BlockSync sync(threads);
            std::vector<focal_group_norm::Moments> shared(threads);
            std::vector<std::thread> pool;
            for (unsigned t = 0; t < unsigned(threads); ++t)
                pool.emplace_back([&, t] {
                    threadIdx = dim3{t, 0, 0};
                    blockIdx = dim3{x, y, 0};
                    block_sync = &sync;
                    kernel(shared.data());
                });
            for (auto& t : pool) t.join();
        }
}

// Group norm (+ SiLU) of [items, channels, spatial] in chunks of `chunk` values (one more chunk
// than needed: an empty block). Returns max |error| / max |reference|.
template <typename T>
double run_group_norm(int items, int channels, int groups, long long spatial, long long chunk, bool silu, float offset,
                      std::mt19937& rng) {
    std::normal_distribution<float> normal(0.f, 1.f);
    const long long span = channels / groups * spatial, rows = items * groups;
    const unsigned chunks = unsigned((span + chunk - 1) / chunk) + 1;
    std::vector<T> x(rows * span), weight(channels), bias(channels), out(x.size(), from_f32<T>(NAN));
    for (auto& v : x) v = from_f32<T>(offset + 2.f * normal(rng));
    for (auto& v : weight) v = from_f32<T>(1.f + 0.3f * normal(rng));
    for (auto& v : bias) v = from_f32<T>(0.3f * normal(rng));
    std::vector<focal_group_norm::Moments> partials(rows * chunks);
    const float eps = 1e-5f;
    using focal_group_norm::THREADS;
    run_grid(dim3{chunks, unsigned(rows), 1}, THREADS, [&](focal_group_norm::Moments* shared) {
        focal_group_norm::stats<T>(x.data(), partials.data(), span, chunk, shared);
    });
    run_grid(dim3{chunks, unsigned(rows), 1}, THREADS, [&](focal_group_norm::Moments*) {
        focal_group_norm::apply<T>(x.data(), partials.data(), weight.data(), bias.data(), out.data(), span, chunk, spatial,
                                   groups, channels / groups, eps, silu ? 1 : 0);
    });
    double worst = 0, largest = 0;
    for (long long r = 0; r < rows; ++r) {
        double sum = 0, squares = 0;
        for (long long i = 0; i < span; ++i) sum += to_f32(x[r * span + i]);
        const double mean = sum / span;
        for (long long i = 0; i < span; ++i) squares += std::pow(to_f32(x[r * span + i]) - mean, 2);
        const double rstd = 1 / std::sqrt(squares / span + eps);
        for (long long i = 0; i < span; ++i) {
            const int c = int(r % groups) * (channels / groups) + int(i / spatial);
            double y = (to_f32(x[r * span + i]) - mean) * rstd * to_f32(weight[c]) + to_f32(bias[c]);
            if (silu) y = y / (1 + std::exp(-y));
            const double got = to_f32(out[r * span + i]);
            worst = std::max(worst, std::isfinite(got) ? std::abs(got - y) : INFINITY);
            largest = std::max(largest, std::abs(y));
        }
    }
    return worst / largest;
}

int main() {
    std::mt19937 rng(7);
    // Partial row and key blocks, cross-attention's 77 keys, several heads and items, peaked scores.
    // Flat scores with an odd number of keys in the last step and values around 4: a padded key let
    // through would take ~1/67 of the weight and move the output by ~4/67.
    const Case cases[] = {{2, 3, 130, 77, 1.f}, {1, 2, 64, 200, 1.f}, {1, 1, 17, 130, 6.f}, {2, 1, 96, 64, 3.f},
                          {1, 2, 40, 67, 0.1f, 4.f}};
    bool ok = true;
    auto report = [&](const char* name, const Case& c, double worst, double tolerance) {
        const bool pass = worst <= tolerance;
        ok &= pass;
        std::printf("%-14s B=%d heads=%d n=%d m=%d spread=%.0f: max |error| / max |v| = %.2e (tolerance %.1e) %s\n", name,
                    c.batch, c.heads, c.n, c.m, c.spread, worst, tolerance, pass ? "ok" : "FAIL");
    };
    // Tolerances: the probabilities and the outputs are rounded to the element type (f16: 2^-11
    // relative, bf16: 2^-8), each moving a weighted mean of v by at most that much of max |v|.
    auto variant = [&]<bool Registers>(const char* prefix) {
        auto name = [&](const char* what) { return std::string(prefix) + what; };
        for (const Case& c : cases) {
            report(name("f16 d64").c_str(), c, run_case<_Float16, 64, Registers>(c, rng), 2e-3);
            report(name("bf16 d64").c_str(), c, run_case<bf16, 64, Registers>(c, rng), 8e-3);
        }
        report(name("f16 d128").c_str(), cases[0], run_case<_Float16, 128, Registers>(cases[0], rng), 2e-3);
        report(name("bf16 d128").c_str(), cases[2], run_case<bf16, 128, Registers>(cases[2], rng), 8e-3);
    };
    variant.template operator()<false>("wmma ");
    variant.template operator()<true>("mma  ");
    // GEGLU: the biased halves, the GELU and the product each rounded to the type (a few ulps).
    for (auto [name, worst, tolerance] : {std::tuple{"f16", run_geglu<_Float16>(300, 64, rng), 2e-3},
                                          std::tuple{"bf16", run_geglu<bf16>(300, 64, rng), 1.6e-2}}) {
        const bool pass = worst <= tolerance;
        ok &= pass;
        std::printf("geglu %-4s rows=300 half=64: max |error| / max |out| = %.2e (tolerance %.1e) %s\n", name, worst,
                    tolerance, pass ? "ok" : "FAIL");
    }
    // Group norm: chunks across channel boundaries, spatial below and above the block's threads,
    // a large mean beside a small spread (the shifted sums: without the shift the f32 case is off
    // by ~1e-3), empty chunks.
    struct GroupNormCase {
        const char* name;
        double worst, tolerance;
        const char* shape;
    };
    for (auto c : {GroupNormCase{"f32", run_group_norm<float>(1, 16, 8, 1000, 1500, true, 1000.f, rng), 5e-5,
                                 "1x16x1000, 8 groups, chunk 1500, silu, mean 1000"},
                   GroupNormCase{"f16", run_group_norm<_Float16>(1, 16, 4, 1024, 1000, false, 50.f, rng), 2e-3,
                                 "1x16x1024, 4 groups, chunk 1000, mean 50"},
                   GroupNormCase{"bf16", run_group_norm<bf16>(2, 256, 4, 9, 300, true, 1.f, rng), 1.6e-2,
                                 "2x256x9, 4 groups, chunk 300, silu"}}) {
        const bool pass = c.worst <= c.tolerance;
        ok &= pass;
        std::printf("group_norm %-4s %s: max |error| / max |out| = %.2e (tolerance %.1e) %s\n", c.name, c.shape, c.worst,
                    c.tolerance, pass ? "ok" : "FAIL");
    }
    return ok ? 0 : 1;
}
