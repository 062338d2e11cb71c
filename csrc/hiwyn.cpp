// CPU kernel of HIWYN integral noise warping (Chang et al., ICLR 2024); semantics of
// warped_fast.noise.hiwyn.hiwyn_transport_reference. Per new pixel: the source pixels under its warped
// quad's bounding box (at most max_extent per axis); per source pixel and sub-row, the covered
// sub-pixels as a bit mask (even-odd crossings of the 4 canonical edges, half-open in y); the covered
// draws summed per channel; a fully covered source pixel contributes exactly k x.
//
// Float32 with the reference's formulas, term for term: this file is compiled without FMA contraction
// (CMakeLists.txt), so the covered sets equal the reference's; the order of the draws' sums differs, and
// torch's vectorized square root may round an ulp differently. Frames up to 2^24 sub-pixels per side
// (every index exact in float32).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels_cpu.h"
#include "parallel.h"

namespace warped_fast {

namespace {

struct Edge {
  float ya, yb, xa, slope;  // ya <= yb; x(y) = xa + (y - ya) * slope
};

// Canonical edge (ya <= yb), so that two quads sharing an edge evaluate it identically.
Edge make_edge(float x1, float y1, float x2, float y2) {
  const bool swap = y1 > y2;
  Edge e;
  e.ya = swap ? y2 : y1;
  e.yb = swap ? y1 : y2;
  e.xa = swap ? x2 : x1;
  const float xb = swap ? x1 : x2;
  const float dy = e.yb - e.ya;
  e.slope = dy > 0.0f ? (xb - e.xa) / dy : 0.0f;
  return e;
}

// Global sub-pixel index range [g0, g1] (centres (g + 1/2)/k - 1/2) inside [lo, hi], clipped to n*k.
void sub_range(float lo, float hi, int k, int64_t n, float& g0, float& g1) {
  const float kf = float(k), last = float(n * k - 1);
  g0 = std::min(std::max(std::ceil(kf * (lo + 0.5f) - 0.5f), 0.0f), last);
  g1 = std::min(std::max(std::floor(kf * (hi + 0.5f) - 0.5f), -1.0f), last);
}

// Bit count without a libgcc call (the module is built for baseline x86-64, without POPCNT).
inline int popcount32(uint32_t v) {
  v = v - ((v >> 1) & 0x55555555u);
  v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
  return int((((v + (v >> 4)) & 0x0F0F0F0Fu) * 0x01010101u) >> 24);
}

}  // namespace

void hiwyn_transport_cpu(const HiwynParams& p, int threads) {
  const int64_t C = p.C, H = p.H, W = p.W, HW = H * W;
  const int k = p.k, kk = k * k;
  const float kf = float(k), maxe = float(p.max_extent);
  const int64_t W1 = W + 1;
  std::vector<float> sub(k);  // sub-pixel centre offsets, as the reference computes them
  for (int b = 0; b < k; ++b) sub[b] = (float(b) + 0.5f) / kf - 0.5f;

  parallel_for_dynamic(H, threads, [&](int64_t i) {
    std::vector<float> acc(C), tsum(C);
    std::vector<uint32_t> masks(k);
    for (int64_t j = 0; j < W; ++j) {
      const int64_t q = i * W1 + j;  // top-left corner
      const float x00 = p.cx[q], y00 = p.cy[q], x01 = p.cx[q + 1], y01 = p.cy[q + 1];
      const float x11 = p.cx[q + W1 + 1], y11 = p.cy[q + W1 + 1], x10 = p.cx[q + W1], y10 = p.cy[q + W1];
      const Edge edges[4] = {make_edge(x00, y00, x01, y01), make_edge(x01, y01, x11, y11),
                             make_edge(x11, y11, x10, y10), make_edge(x10, y10, x00, y00)};
      float gx0, gx1, gy0, gy1;
      sub_range(std::min(std::min(x00, x01), std::min(x10, x11)), std::max(std::max(x00, x01), std::max(x10, x11)), k,
                W, gx0, gx1);
      sub_range(std::min(std::min(y00, y01), std::min(y10, y11)), std::max(std::max(y00, y01), std::max(y10, y11)), k,
                H, gy0, gy1);
      const int64_t pix = i * W + j;
      std::fill(acc.begin(), acc.end(), 0.0f);
      float cnt = 0.0f;
      bool finite = true;  // unchecked NaN/inf corners: fresh noise, as for an empty window
      for (const float v : {x00, y00, x01, y01, x11, y11, x10, y10}) finite = finite && std::isfinite(v);
      if (finite && gx0 <= gx1 && gy0 <= gy1) {
        const float sx0 = std::floor(gx0 / kf), sy0 = std::floor(gy0 / kf);
        const int nwx = int(std::min(std::floor(gx1 / kf) - sx0 + 1.0f, maxe));
        const int nwy = int(std::min(std::floor(gy1 / kf) - sy0 + 1.0f, maxe));
        for (int wy = 0; wy < nwy; ++wy) {
          const float sy = sy0 + float(wy);
          for (int wx = 0; wx < nwx; ++wx) {
            const float sx = sx0 + float(wx);
            // Covered sub-pixels, one k-bit mask per sub-row: the sub-pixels left of an active edge's
            // crossing are a prefix (centres increase with b), and crossings flip parity.
            int n_s = 0;
            for (int a = 0; a < k; ++a) {
              const float py = sy + sub[a];
              uint32_t m = 0;
              for (const Edge& e : edges) {
                if (!(e.ya <= py && py < e.yb)) continue;
                const float xi = e.xa + (py - e.ya) * e.slope;
                // left = #{b : sx + sub[b] < xi}: estimated, then settled by the exact comparisons
                const float est = (xi - sx + 0.5f) * kf - 0.5f;
                int left = est > 0.0f ? (est < kf ? int(std::ceil(est)) : k) : 0;  // NaN: 0
                while (left > 0 && !(sx + sub[left - 1] < xi)) --left;
                while (left < k && sx + sub[left] < xi) ++left;
                m ^= (left >= 32 ? ~0u : (1u << left) - 1u);
              }
              masks[a] = m;
              n_s += popcount32(m);
            }
            const int64_t src = int64_t(sy) * W + int64_t(sx);
            if (n_s == 0) {  // adds 0 (NaN where the source's x or draws are not finite, as the reference)
              for (int64_t c = 0; c < C; ++c)
                acc[c] += 0.0f * p.prev[c * HW + src] + (0.0f - 0.0f * p.zmean[c * HW + src]);
              continue;
            }
            const float ns = float(n_s), frac = ns / kf;
            if (n_s == kk) {  // fully covered: the residual sums to 0 exactly
              for (int64_t c = 0; c < C; ++c) acc[c] += frac * p.prev[c * HW + src];
            } else {
              std::fill(tsum.begin(), tsum.end(), 0.0f);
              for (int a = 0; a < k; ++a) {
                const uint32_t m = masks[a];
                if (m == 0) continue;
                const int lo = __builtin_ctz(m), hi = 32 - __builtin_clz(m);  // the covered span
                for (int64_t c = 0; c < C; ++c) {
                  const float* zr = p.z + ((c * HW + src) * k + a) * k;
                  float t = 0.0f;
                  for (int b = lo; b < hi; ++b) t += (m >> b & 1u) ? zr[b] : 0.0f;
                  tsum[c] += t;
                }
              }
              for (int64_t c = 0; c < C; ++c)
                acc[c] += frac * p.prev[c * HW + src] + (tsum[c] - ns * p.zmean[c * HW + src]);
            }
            cnt += ns;
          }
        }
      }
      const float root = std::sqrt(std::max(cnt, 1.0f));
      for (int64_t c = 0; c < C; ++c) p.out[c * HW + pix] = cnt > 0.0f ? acc[c] / root : p.fresh[c * HW + pix];
    }
  });
}

}  // namespace warped_fast
