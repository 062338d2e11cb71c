// CPU kernels of the guidance step (method section 4, Algorithm 1): the fused masked residual with
// per-row squared norms, and the fused Euler + guidance update.
#include <algorithm>

#include "bilinear.h"
#include "kernels_cpu.h"
#include "parallel.h"

namespace warped_fast {

template <class T>
void guidance_residual_cpu(const T* pred, const T* prev, const T* flow, const uint8_t* mask, T* r, double* row_sumsq,
                           int64_t N, int64_t C, int64_t H, int64_t W, int threads) {
  const int64_t HW = H * W;
  parallel_for(N * H, threads, [&](int64_t row) {
    const int64_t n = row / H, yy = row % H;
    const T* fx = flow + n * 2 * HW;
    const T* fy = fx + HW;
    double acc = 0.0;
    for (int64_t xx = 0; xx < W; ++xx) {
      const int64_t p = yy * W + xx;
      const Taps<T> t = make_taps<T>(T(xx) + fx[p], T(yy) + fy[p], H, W);
      const bool keep = t.inside_frame && (mask == nullptr || mask[n * HW + p] != 0);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t o = (n * C + c) * HW + p;
        const T v = keep ? sample(pred + (n * C + c) * HW, t, W) - prev[o] : T(0);
        r[o] = v;
        acc += double(v) * double(v);
      }
    }
    row_sumsq[row] = acc;
  });
}

template <class T>
void euler_guided_step_cpu(const T* u, const T* pred, const T* grad, const T* sigma, const T* sigma_next, double lam,
                           T* out, int64_t N, int64_t per_item, int threads) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (per_item + kChunk - 1) / kChunk;
  parallel_for(N * chunks, threads, [&](int64_t task) {
    const int64_t n = task / chunks, s0 = (task % chunks) * kChunk;
    const int64_t s1 = std::min(per_item, s0 + kChunk);
    const T k = (sigma_next[n] - sigma[n]) / sigma[n], l = T(lam);
    const int64_t base = n * per_item;
    if (grad != nullptr) {
      for (int64_t i = base + s0; i < base + s1; ++i) out[i] = u[i] + k * (u[i] - pred[i]) - l * grad[i];
    } else {
      for (int64_t i = base + s0; i < base + s1; ++i) out[i] = u[i] + k * (u[i] - pred[i]);
    }
  });
}

#define WF_INSTANTIATE(T)                                                                                             \
  template void guidance_residual_cpu<T>(const T*, const T*, const T*, const uint8_t*, T*, double*, int64_t, int64_t, \
                                         int64_t, int64_t, int);                                                      \
  template void euler_guided_step_cpu<T>(const T*, const T*, const T*, const T*, const T*, double, T*, int64_t,       \
                                         int64_t, int);
WF_INSTANTIATE(float)
WF_INSTANTIATE(double)
#undef WF_INSTANTIATE

}  // namespace warped_fast
