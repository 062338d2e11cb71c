// CPU kernel of Infinite-Resolution integral noise warping, particle variant (Deng et al., ICLR 2025);
// semantics of warped_fast.noise.infres.infres_transport_reference. Each previous pixel's 4 bilinear area
// tickets along the forward flow carry Brownian-bridge pieces of its value; each new pixel sums what
// arrives and completes the missing area.
//
// Float32 with the reference's formulas and its order of summation: the pieces are scattered ticket by
// ticket (all pixels' first tickets, then the second ones, ...), in pixel order, one task per channel and
// one for the areas, so the result is deterministic (no atomics) and differs from the reference's only
// where torch's vectorized square root rounds differently (an ulp).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels_cpu.h"
#include "parallel.h"

namespace warped_fast {

namespace {

// Ticket t (0: top-left, 1: top-right, 2: bottom-left, 3: bottom-right) of the particle of pixel (i, j):
// its area, and its destination pixel (-1 when outside the frame or of zero area; H*W < 2^31).
inline int32_t ticket(const InfresParams& p, int64_t i, int64_t j, int t, float& area) {
  const int64_t s = i * p.W + j;
  const float px = float(j) + p.fwd[s], py = float(i) + p.fwd[p.H * p.W + s];
  const float x0 = std::floor(px), y0 = std::floor(py);
  const float fx = px - x0, fy = py - y0;
  const float tx = x0 + float(t & 1), ty = y0 + float(t >> 1);
  const float ax = (t & 1) ? fx : 1.0f - fx, ay = (t >> 1) ? fy : 1.0f - fy;
  area = ax * ay;
  const bool inside = tx >= 0.0f && tx <= float(p.W - 1) && ty >= 0.0f && ty <= float(p.H - 1) && area > 0.0f;
  return inside ? int32_t(int64_t(ty) * p.W + int64_t(tx)) : -1;
}

}  // namespace

void infres_transport_cpu(const InfresParams& p, int threads) {
  const int64_t C = p.C, H = p.H, W = p.W, HW = H * W;
  // The tickets, [4, H*W] each: destination, area and its square root.
  std::vector<int32_t> dst(4 * HW);
  std::vector<float> area(4 * HW), root(4 * HW);
  parallel_for(H, threads, [&](int64_t i) {
    for (int t = 0; t < 4; ++t)
      for (int64_t j = 0; j < W; ++j) {
        const int64_t k = t * HW + i * W + j;
        dst[k] = ticket(p, i, j, t, area[k]);
        root[k] = std::sqrt(area[k]);
      }
  });
  // Tasks 0..C-1: channel c's pieces into out[c]; task C: the areas. Scatters ticket by ticket.
  parallel_for_dynamic(C + 1, threads, [&](int64_t task) {
    if (task == C) {
      std::fill(p.area, p.area + HW, 0.0f);
      for (int64_t k = 0; k < 4 * HW; ++k)
        if (dst[k] >= 0) p.area[dst[k]] += area[k];
      return;
    }
    const int64_t c = task;
    const float* x = p.prev + c * HW;
    const float* z = p.z + c * 4 * HW;  // [4, H, W] of this channel
    float* acc = p.out + c * HW;
    std::vector<float> bridge(HW);  // sum_u sqrt(a_u) Z_u per particle
    for (int64_t s = 0; s < HW; ++s) {
      float sum = 0.0f;
      for (int t = 0; t < 4; ++t) sum += root[t * HW + s] * z[t * HW + s];
      bridge[s] = sum;
    }
    std::fill(acc, acc + HW, 0.0f);
    for (int t = 0; t < 4; ++t)
      for (int64_t s = 0; s < HW; ++s) {
        const int64_t k = t * HW + s;
        if (dst[k] >= 0) acc[dst[k]] += area[k] * x[s] + (root[k] * z[k] - area[k] * bridge[s]);
      }
  });
  // The missing area: filled with fresh noise, or renormalized.
  parallel_for(C * H, threads, [&](int64_t row) {
    const int64_t c = row / H, off = (row % H) * W;
    float* o = p.out + c * HW + off;
    const float* fr = p.fresh + c * HW + off;
    const float* ar = p.area + off;
    for (int64_t j = 0; j < W; ++j) {
      const float a = ar[j];
      if (p.fill)
        o[j] = (o[j] + std::sqrt(std::max(1.0f - a, 0.0f)) * fr[j]) / std::sqrt(std::max(a, 1.0f));
      else
        o[j] = a > p.min_area ? o[j] / std::sqrt(a) : fr[j];
    }
  });
}

}  // namespace warped_fast
