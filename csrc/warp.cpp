// CPU kernels of the warp family (method section 3): backward warp with validity and
// forward-backward occlusion check, its adjoint (splat) and flow gradient, coordinate composition.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "bilinear.h"
#include "kernels_cpu.h"
#include "parallel.h"

namespace warped_fast {

namespace {
constexpr double kOcclusionAlpha1 = 0.01, kOcclusionAlpha2 = 0.5;  // UnFlow thresholds
}

template <class T>
void warp_forward_cpu(const T* image, const T* flow, const T* back_flow, T* out, uint8_t* valid, int64_t N, int64_t C,
                      int64_t H, int64_t W, int threads) {
  const int64_t HW = H * W;
  parallel_for(N * H, threads, [&](int64_t row) {
    const int64_t n = row / H, yy = row % H;
    const T* fx = flow + n * 2 * HW + yy * W;
    const T* fy = fx + HW;
    for (int64_t xx = 0; xx < W; ++xx) {
      const T dx = fx[xx], dy = fy[xx];
      const Taps<T> t = make_taps<T>(T(xx) + dx, T(yy) + dy, H, W);
      for (int64_t c = 0; c < C; ++c) out[(n * C + c) * HW + yy * W + xx] = sample(image + (n * C + c) * HW, t, W);
      bool ok = t.inside_frame;
      if (back_flow != nullptr) {
        const T bx = sample(back_flow + n * 2 * HW, t, W), by = sample(back_flow + n * 2 * HW + HW, t, W);
        const double sx = double(dx) + bx, sy = double(dy) + by;
        const double m2 = double(dx) * dx + double(dy) * dy + double(bx) * bx + double(by) * by;
        ok = ok && !(sx * sx + sy * sy > kOcclusionAlpha1 * m2 + kOcclusionAlpha2);
      }
      valid[n * HW + yy * W + xx] = ok ? 1 : 0;
    }
  });
}

template <class T>
void warp_backward_cpu(const T* grad_out, const T* image, const T* flow, const T* scale, T* grad_image, T* grad_flow,
                       int64_t N, int64_t C, int64_t H, int64_t W, int threads) {
  const int64_t HW = H * W;
  if (grad_image != nullptr) {
    // One task per (n, c) plane: the splat of a plane is race-free.
    parallel_for(N * C, threads, [&](int64_t nc) {
      const int64_t n = nc / C;
      T* gi = grad_image + nc * HW;
      std::fill(gi, gi + HW, T(0));
      const T* go = grad_out + nc * HW;
      const T s = scale != nullptr ? scale[n] : T(1);
      const T* fx = flow + n * 2 * HW;
      const T* fy = fx + HW;
      for (int64_t yy = 0; yy < H; ++yy)
        for (int64_t xx = 0; xx < W; ++xx) {
          const int64_t p = yy * W + xx;
          const T g = s * go[p];
          if (g == T(0)) continue;
          const Taps<T> t = make_taps<T>(T(xx) + fx[p], T(yy) + fy[p], H, W);
          const int64_t i = t.y0 * W + t.x0;
          if (t.in[0]) gi[i] += g * (T(1) - t.wx) * (T(1) - t.wy);
          if (t.in[1]) gi[i + 1] += g * t.wx * (T(1) - t.wy);
          if (t.in[2]) gi[i + W] += g * (T(1) - t.wx) * t.wy;
          if (t.in[3]) gi[i + W + 1] += g * t.wx * t.wy;
        }
    });
  }
  if (grad_flow != nullptr) {
    parallel_for(N * H, threads, [&](int64_t row) {
      const int64_t n = row / H, yy = row % H;
      const T* fx = flow + n * 2 * HW;
      const T* fy = fx + HW;
      for (int64_t xx = 0; xx < W; ++xx) {
        const int64_t p = yy * W + xx;
        const Taps<T> t = make_taps<T>(T(xx) + fx[p], T(yy) + fy[p], H, W);
        const int64_t i = t.y0 * W + t.x0;
        T gx = T(0), gy = T(0);
        for (int64_t c = 0; c < C; ++c) {
          const T* pl = image + (n * C + c) * HW;
          const T v00 = t.in[0] ? pl[i] : T(0), v01 = t.in[1] ? pl[i + 1] : T(0);
          const T v10 = t.in[2] ? pl[i + W] : T(0), v11 = t.in[3] ? pl[i + W + 1] : T(0);
          const T g = grad_out[(n * C + c) * HW + p];
          gx += g * ((v01 - v00) * (T(1) - t.wy) + (v11 - v10) * t.wy);
          gy += g * ((v10 - v00) * (T(1) - t.wx) + (v11 - v01) * t.wx);
        }
        grad_flow[n * 2 * HW + p] = gx;
        grad_flow[n * 2 * HW + HW + p] = gy;
      }
    });
  }
}

template <class T>
inline T nan_to_zero(T v) {
  return std::isnan(v) ? T(0) : v;
}

template <class T>
void compose_coords_cpu(const T* coords, const T* flow, T* out, int64_t N, int64_t H, int64_t W, int threads) {
  const int64_t HW = H * W;
  parallel_for(N * H, threads, [&](int64_t row) {
    const int64_t n = row / H, yy = row % H;
    const T* cn = coords + n * HW * 2;
    for (int64_t xx = 0; xx < W; ++xx) {
      const int64_t p = yy * W + xx;
      const T px = T(xx) + flow[n * 2 * HW + p], py = T(yy) + flow[n * 2 * HW + HW + p];
      // Border cell, weights may leave [0, 1]: linear extrapolation of the displacement. A NaN position
      // takes cell 0 (its weights, hence the output, are NaN); +-inf clamps to the border cell.
      const T cx = nan_to_zero(std::min(std::max(std::floor(px), T(0)), T(std::max<int64_t>(W - 2, 0))));
      const T cy = nan_to_zero(std::min(std::max(std::floor(py), T(0)), T(std::max<int64_t>(H - 2, 0))));
      const int64_t x0 = int64_t(cx), y0 = int64_t(cy);
      const int64_t x1 = std::min<int64_t>(x0 + 1, W - 1), y1 = std::min<int64_t>(y0 + 1, H - 1);
      const T wx = px - cx, wy = py - cy;
      T o[2];
      for (int k = 0; k < 2; ++k) {
        const T id0 = k == 0 ? T(x0) : T(y0), id1x = k == 0 ? T(x1) : T(y0);
        const T id2 = k == 0 ? T(x0) : T(y1), id3 = k == 0 ? T(x1) : T(y1);
        const T d00 = cn[(y0 * W + x0) * 2 + k] - id0, d01 = cn[(y0 * W + x1) * 2 + k] - id1x;
        const T d10 = cn[(y1 * W + x0) * 2 + k] - id2, d11 = cn[(y1 * W + x1) * 2 + k] - id3;
        const T d = (d00 * (T(1) - wx) + d01 * wx) * (T(1) - wy) + (d10 * (T(1) - wx) + d11 * wx) * wy;
        o[k] = (k == 0 ? px : py) + d;
      }
      out[p * 2 + n * HW * 2] = o[0];
      out[p * 2 + n * HW * 2 + 1] = o[1];
    }
  });
}

#define WF_INSTANTIATE(T)                                                                                           \
  template void warp_forward_cpu<T>(const T*, const T*, const T*, T*, uint8_t*, int64_t, int64_t, int64_t, int64_t, \
                                    int);                                                                           \
  template void warp_backward_cpu<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t,     \
                                     int64_t, int);                                                                 \
  template void compose_coords_cpu<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int);
WF_INSTANTIATE(float)
WF_INSTANTIATE(double)
#undef WF_INSTANTIATE

}  // namespace warped_fast
