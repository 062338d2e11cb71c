// CPU kernel of Go-with-the-Flow noise warping (Burgert et al., CVPR 2025, Algorithm 1); semantics of
// warped_fast.noise.gwtf.gwtf_transport_reference: contraction of each previous pixel to its rounded
// forward target, expansion of each uncovered new pixel from its rounded backward source, splitting of
// a source used by k edges into k independent pieces, density-weighted aggregation.
//
// Float32 with the reference's formulas and its order of summation (scatters in pixel order, one task
// per channel, no atomics): deterministic, and the reference's result to float32 rounding.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels_cpu.h"
#include "parallel.h"

namespace warped_fast {

namespace {

constexpr int32_t kOutside = -1, kCovered = -2;  // expansion sources that are not pixels

// round(x + flow(x)) of pixel s = (i, j) as a flat index (H*W < 2^31), kOutside outside the frame.
inline int32_t round_target(const float* flow, int64_t H, int64_t W, int64_t i, int64_t j) {
  const int64_t s = i * W + j;
  const float tx = std::floor(float(j) + flow[s] + 0.5f), ty = std::floor(float(i) + flow[H * W + s] + 0.5f);
  const bool ok = tx >= 0.0f && tx <= float(W - 1) && ty >= 0.0f && ty <= float(H - 1);
  return ok ? int32_t(int64_t(ty) * W + int64_t(tx)) : kOutside;
}

}  // namespace

void gwtf_transport_cpu(const GwtfParams& p, int threads) {
  const int64_t C = p.C, H = p.H, W = p.W, HW = H * W;
  // Contraction target of each previous pixel; expansion source of each new pixel (kCovered where a
  // contraction arrives: covered pixels take no expansion edge).
  std::vector<int32_t> tgt(HW), src(HW);
  parallel_for(H, threads, [&](int64_t i) {
    for (int64_t j = 0; j < W; ++j) {
      tgt[i * W + j] = round_target(p.fwd, H, W, i, j);
      src[i * W + j] = round_target(p.back, H, W, i, j);
    }
  });
  for (int64_t s = 0; s < HW; ++s)
    if (tgt[s] >= 0) src[tgt[s]] = kCovered;
  // Edges per source (k, at least 1), the weight of each piece, and the covered pixels' sums of the
  // weights (into weight_out) and of their squares.
  std::vector<float> kk(HW), wpiece(HW), den(HW, 0.0f);
  for (int64_t s = 0; s < HW; ++s) kk[s] = tgt[s] >= 0 ? 1.0f : 0.0f;
  for (int64_t d = 0; d < HW; ++d)
    if (src[d] >= 0) kk[src[d]] += 1.0f;
  for (int64_t s = 0; s < HW; ++s) {
    kk[s] = std::max(kk[s], 1.0f);
    wpiece[s] = p.weight[s] / kk[s];
  }
  float* wsum = p.weight_out;
  std::fill(wsum, wsum + HW, 0.0f);
  for (int64_t s = 0; s < HW; ++s)
    if (tgt[s] >= 0) {
      den[tgt[s]] += wpiece[s] * wpiece[s];
      wsum[tgt[s]] += wpiece[s];
    }
  for (int64_t d = 0; d < HW; ++d)
    if (src[d] != kCovered) p.weight_out[d] = src[d] >= 0 ? wpiece[src[d]] : 1.0f;

  parallel_for_dynamic(C, threads, [&](int64_t c) {
    const float* q = p.q + c * HW;
    const float* zc = p.zc + c * HW;
    const float* ze = p.ze + c * HW;
    const float* fresh = p.fresh + c * HW;
    float* num = p.out + c * HW;
    // zbar: the mean of each source's edge draws (its contraction edge's, then its expansion edges').
    std::vector<float> zbar(HW);
    for (int64_t s = 0; s < HW; ++s) zbar[s] = zc[s] * (tgt[s] >= 0 ? 1.0f : 0.0f);  // NaN stays NaN
    for (int64_t d = 0; d < HW; ++d)
      if (src[d] >= 0) zbar[src[d]] += ze[d];
    for (int64_t s = 0; s < HW; ++s) zbar[s] = zbar[s] / kk[s];
    auto base = [&](int64_t s) { return q[s] / std::sqrt(kk[s]); };
    std::fill(num, num + HW, 0.0f);
    for (int64_t s = 0; s < HW; ++s)
      if (tgt[s] >= 0) num[tgt[s]] += wpiece[s] * (base(s) + (zc[s] - zbar[s]));
    for (int64_t d = 0; d < HW; ++d) {
      const int32_t e = src[d];
      num[d] = e == kCovered ? num[d] / std::sqrt(den[d]) : e >= 0 ? base(e) + (ze[d] - zbar[e]) : fresh[d];
    }
  });
}

}  // namespace warped_fast
