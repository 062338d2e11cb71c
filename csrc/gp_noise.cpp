// CPU kernel of the RFF GP noise field (method section 2): fused, never materializes [pixels, J].
// Each task owns a block of pixels; the inner loop over the block vectorizes (AVX2+FMA clone).
#include <cmath>
#include <vector>

#include "kernels_cpu.h"
#include "parallel.h"

namespace warped_fast {
namespace {

constexpr int kBlock = 64;

// Independent channels: acc[p] = sum_j w[j] * cos(turns(p, j)) for one channel.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((noinline, target_clones("avx2,fma", "default")))
#endif
void accumulate_channel(const float* __restrict xs, const float* __restrict ys, int np, const float* __restrict zt,
                        const float* __restrict bt, const float* __restrict w, int64_t J, float* __restrict acc) {
  for (int p = 0; p < kBlock; ++p) acc[p] = 0.0f;
  for (int64_t j = 0; j < J; ++j) {
    const float zx = zt[2 * j], zy = zt[2 * j + 1], bb = bt[j], wj = w[j];
#pragma omp simd
    for (int p = 0; p < kBlock; ++p) {
      float t = zx * xs[p] + (zy * ys[p] + bb);
      float c;
      WF_COS_TURNS_BODY(t, c);
      acc[p] += wj * c;
    }
  }
  (void)np;
}

// Shared features: one cosine per (pixel, feature), accumulated into every channel.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((noinline, target_clones("avx2,fma", "default")))
#endif
void accumulate_shared(const float* __restrict xs, const float* __restrict ys, const float* __restrict zt,
                       const float* __restrict bt, const float* __restrict w, int64_t J, int64_t C,
                       float* __restrict acc /* [C, kBlock] */) {
  for (int64_t i = 0; i < C * kBlock; ++i) acc[i] = 0.0f;
  float cs[kBlock];
  for (int64_t j = 0; j < J; ++j) {
    const float zx = zt[2 * j], zy = zt[2 * j + 1], bb = bt[j];
#pragma omp simd
    for (int p = 0; p < kBlock; ++p) {
      float t = zx * xs[p] + (zy * ys[p] + bb);
      float c;
      WF_COS_TURNS_BODY(t, c);
      cs[p] = c;
    }
    for (int64_t ch = 0; ch < C; ++ch) {
      const float wj = w[ch * J + j];
      float* a = acc + ch * kBlock;
#pragma omp simd
      for (int p = 0; p < kBlock; ++p) a[p] += wj * cs[p];
    }
  }
}

}  // namespace

void gp_noise_cpu(const GpNoiseParams& P, int threads) {
  const int64_t J = P.features, C = P.channels, Cz = P.zb_channels;
  // Frequencies and phases in turns (radians / 2 pi), so range reduction is a rounding.
  std::vector<float> zt(Cz * J * 2), bt(Cz * J);
  for (int64_t i = 0; i < Cz * J * 2; ++i) zt[i] = P.z[i] * kInvTwoPi;
  for (int64_t i = 0; i < Cz * J; ++i) bt[i] = P.b[i] * kInvTwoPi;
  const float scale = std::sqrt(2.0f / static_cast<float>(J));
  const int64_t blocks_per_frame = (P.pixels + kBlock - 1) / kBlock;
  const int64_t tasks = P.batch * blocks_per_frame * (Cz == 1 ? 1 : C);

  parallel_for_dynamic(tasks, threads, [&](int64_t task) {
    const int64_t ch = Cz == 1 ? 0 : task % C;
    const int64_t blk = (Cz == 1 ? task : task / C) % blocks_per_frame;
    const int64_t n = (Cz == 1 ? task : task / C) / blocks_per_frame;
    const int64_t p0 = blk * kBlock;
    const int np = static_cast<int>(std::min<int64_t>(kBlock, P.pixels - p0));
    alignas(64) float xs[kBlock], ys[kBlock];
    const float* cp = P.coords + (n * P.pixels + p0) * 2;
    for (int p = 0; p < kBlock; ++p) {
      xs[p] = p < np ? cp[2 * p] : 0.0f;
      ys[p] = p < np ? cp[2 * p + 1] : 0.0f;
    }
    float* outn = P.out + n * C * P.pixels + p0;
    if (Cz == 1) {
      std::vector<float> acc(C * kBlock);
      accumulate_shared(xs, ys, zt.data(), bt.data(), P.w, J, C, acc.data());
      for (int64_t c = 0; c < C; ++c)
        for (int p = 0; p < np; ++p) outn[c * P.pixels + p] = scale * acc[c * kBlock + p];
    } else {
      alignas(64) float acc[kBlock];
      accumulate_channel(xs, ys, np, zt.data() + ch * J * 2, bt.data() + ch * J, P.w + ch * J, J, acc);
      for (int p = 0; p < np; ++p) outn[ch * P.pixels + p] = scale * acc[p];
    }
  });
}

}  // namespace warped_fast
