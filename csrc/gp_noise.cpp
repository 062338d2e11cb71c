// CPU kernel of the RFF GP noise field (method section 2): fused, never materializes [pixels, J].
// Each task owns a block of pixels; the inner loop over the block vectorizes (AVX2+FMA clone).
//
// Phases are taken relative to an integer anchor near the centre of the block's coordinates, as in the
// CUDA kernels: <z, x> + b = <z, x - x0> + c with c = (<z, x0> + b) mod 2 pi in float64, once per
// (block, feature). The offsets x - x0 are small (exact where |x0| >= 512; nearer the origin they round
// by at most 8e-6 px), so the float32 phase error is that of the offsets, not of the absolute
// coordinates: the far-away tiles of fresh noise (16384 px and more) are then as accurate as the frame
// itself (absolute float32 phases there err by ~3e-3 rad per feature), and the CPU and CUDA kernels
// agree. A block spread wider than kAnchorSpread keeps the anchor 0.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels_cpu.h"
#include "parallel.h"

namespace warped_fast {
namespace {

constexpr int kBlock = 64;
constexpr float kAnchorSpread = 256.f;  // largest half-extent (pixels) of a block's coordinates around its anchor
constexpr double kTwoPiD = 6.283185307179586476925;

// Moves the block's np coordinates to offsets from its integer anchor (padding lanes to 0) and sets
// the anchor. Anchor 0 where the coordinates spread wider than kAnchorSpread or are not finite.
void anchor_block(float* xs, float* ys, int np, double* x0, double* y0) {
  float lo_x = INFINITY, hi_x = -INFINITY, lo_y = INFINITY, hi_y = -INFINITY;
  for (int p = 0; p < np; ++p) {
    lo_x = std::min(lo_x, xs[p]), hi_x = std::max(hi_x, xs[p]);
    lo_y = std::min(lo_y, ys[p]), hi_y = std::max(hi_y, ys[p]);
  }
  const float ax = std::rint(0.5f * lo_x + 0.5f * hi_x), ay = std::rint(0.5f * lo_y + 0.5f * hi_y);
  const bool near = std::max(hi_x - ax, ax - lo_x) <= kAnchorSpread &&
                    std::max(hi_y - ay, ay - lo_y) <= kAnchorSpread;  // false for NaN or inf
  *x0 = near ? ax : 0.0, *y0 = near ? ay : 0.0;
  for (int p = 0; p < kBlock; ++p) {
    xs[p] = p < np ? xs[p] - static_cast<float>(*x0) : 0.0f;
    ys[p] = p < np ? ys[p] - static_cast<float>(*y0) : 0.0f;
  }
}

// Each feature's phase at the anchor in turns, reduced to [-1/2, 1/2]: (<zt, x0> + bt) mod 1, with zt and bt
// the frequencies and phases in turns in float64.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((noinline, target_clones("avx2,fma", "default")))
#endif
void anchored_turns(const double* __restrict zt, const double* __restrict bt, int64_t J, double x0, double y0,
                    float* __restrict out) {
#pragma omp simd
  for (int64_t j = 0; j < J; ++j) {
    const double t = zt[2 * j] * x0 + (zt[2 * j + 1] * y0 + bt[j]);
    out[j] = static_cast<float>(t - std::nearbyint(t));
  }
}

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
  std::vector<float> zt(Cz * J * 2);
  std::vector<double> zd(Cz * J * 2), bd(Cz * J);  // float64 for the anchors' phases
  for (int64_t i = 0; i < Cz * J * 2; ++i) zt[i] = P.z[i] * kInvTwoPi, zd[i] = P.z[i] / kTwoPiD;
  for (int64_t i = 0; i < Cz * J; ++i) bd[i] = P.b[i] / kTwoPiD;
  const float scale = std::sqrt(2.0f / static_cast<float>(J));
  // Blocks of kBlock pixels in raster order; on frames wider than an anchor's reach, row segments
  // instead, so that no block spans a whole row's width (it would lose its anchor).
  const bool by_rows = P.width > 2 * static_cast<int64_t>(kAnchorSpread);
  const int64_t segments = (P.width + kBlock - 1) / kBlock;  // per row, when by_rows
  const int64_t blocks_per_frame = by_rows ? P.pixels / P.width * segments : (P.pixels + kBlock - 1) / kBlock;
  const int64_t tasks = P.batch * blocks_per_frame * (Cz == 1 ? 1 : C);

  parallel_for_dynamic(tasks, threads, [&](int64_t task) {
    const int64_t ch = Cz == 1 ? 0 : task % C;
    const int64_t blk = (Cz == 1 ? task : task / C) % blocks_per_frame;
    const int64_t n = (Cz == 1 ? task : task / C) / blocks_per_frame;
    const int64_t col = by_rows ? blk % segments * kBlock : 0;
    const int64_t p0 = by_rows ? blk / segments * P.width + col : blk * kBlock;
    const int np = static_cast<int>(std::min<int64_t>(kBlock, by_rows ? P.width - col : P.pixels - p0));
    alignas(64) float xs[kBlock], ys[kBlock];
    const float* cp = P.coords + (n * P.pixels + p0) * 2;
    for (int p = 0; p < np; ++p) xs[p] = cp[2 * p], ys[p] = cp[2 * p + 1];
    double x0, y0;
    anchor_block(xs, ys, np, &x0, &y0);
    thread_local std::vector<float> bt;  // the block's anchored phases, [J] turns
    bt.resize(J);
    const int64_t cz = Cz == 1 ? 0 : ch;
    anchored_turns(zd.data() + cz * J * 2, bd.data() + cz * J, J, x0, y0, bt.data());
    float* outn = P.out + n * C * P.pixels + p0;
    if (Cz == 1) {
      std::vector<float> acc(C * kBlock);
      accumulate_shared(xs, ys, zt.data(), bt.data(), P.w, J, C, acc.data());
      for (int64_t c = 0; c < C; ++c)
        for (int p = 0; p < np; ++p) outn[c * P.pixels + p] = scale * acc[c * kBlock + p];
    } else {
      alignas(64) float acc[kBlock];
      accumulate_channel(xs, ys, np, zt.data() + ch * J * 2, bt.data(), P.w + ch * J, J, acc);
      for (int p = 0; p < np; ++p) outn[ch * P.pixels + p] = scale * acc[p];
    }
  });
}

}  // namespace warped_fast
