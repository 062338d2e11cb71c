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

struct Ticket {
  int64_t idx;  // destination pixel, -1 when outside the frame or of zero area
  float area;
};

// Ticket t (0: top-left, 1: top-right, 2: bottom-left, 3: bottom-right) of the particle of pixel (i, j).
inline Ticket ticket(const InfresParams& p, int64_t i, int64_t j, int t) {
  const int64_t s = i * p.W + j;
  const float px = float(j) + p.fwd[s], py = float(i) + p.fwd[p.H * p.W + s];
  const float x0 = std::floor(px), y0 = std::floor(py);
  const float fx = px - x0, fy = py - y0;
  const float tx = x0 + float(t & 1), ty = y0 + float(t >> 1);
  const float ax = (t & 1) ? fx : 1.0f - fx, ay = (t >> 1) ? fy : 1.0f - fy;
  const float a = ax * ay;
  const bool inside = tx >= 0.0f && tx <= float(p.W - 1) && ty >= 0.0f && ty <= float(p.H - 1) && a > 0.0f;
  return {inside ? int64_t(ty) * p.W + int64_t(tx) : -1, a};
}

}  // namespace

void infres_transport_cpu(const InfresParams& p, int threads) {
  const int64_t C = p.C, H = p.H, W = p.W, HW = H * W;
  // Tasks 0..C-1: channel c's pieces into out[c]; task C: the areas.
  parallel_for_dynamic(C + 1, threads, [&](int64_t task) {
    if (task == C) {
      std::fill(p.area, p.area + HW, 0.0f);
      for (int t = 0; t < 4; ++t)
        for (int64_t i = 0; i < H; ++i)
          for (int64_t j = 0; j < W; ++j) {
            const Ticket k = ticket(p, i, j, t);
            if (k.idx >= 0) p.area[k.idx] += k.area;
          }
      return;
    }
    const int64_t c = task;
    const float* x = p.prev + c * HW;
    const float* z = p.z + c * 4 * HW;  // [4, H, W] of this channel
    float* acc = p.out + c * HW;
    std::fill(acc, acc + HW, 0.0f);
    std::vector<float> bridge(HW);  // sum_u sqrt(a_u) Z_u per particle
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j) {
        const int64_t s = i * W + j;
        float sum = 0.0f;
        for (int t = 0; t < 4; ++t) sum += std::sqrt(ticket(p, i, j, t).area) * z[t * HW + s];
        bridge[s] = sum;
      }
    for (int t = 0; t < 4; ++t)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) {
          const Ticket k = ticket(p, i, j, t);
          if (k.idx < 0) continue;
          const int64_t s = i * W + j;
          acc[k.idx] += k.area * x[s] + (std::sqrt(k.area) * z[t * HW + s] - k.area * bridge[s]);
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
