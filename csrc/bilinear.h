// Bilinear taps in pixel units with zero padding, shared by the CPU warp and guidance kernels.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace warped_fast {

template <class T>
struct Taps {
  int64_t x0, y0;
  T wx, wy;           // fractional weights of the (x0+1) column and (y0+1) row
  bool in[4];         // (x0,y0), (x0+1,y0), (x0,y0+1), (x0+1,y0+1) inside the frame
  bool inside_frame;  // sample point in [0, W-1] x [0, H-1]
};

template <class T>
inline Taps<T> make_taps(T x, T y, int64_t H, int64_t W) {
  Taps<T> t{};
  // Non-finite or absurd positions sample nothing (no UB from the integer conversion).
  const T lim = T(1e15);
  if (!(x > -lim && x < lim && y > -lim && y < lim)) {
    t.x0 = t.y0 = -2;
    t.wx = t.wy = T(0);
    t.in[0] = t.in[1] = t.in[2] = t.in[3] = false;
    t.inside_frame = false;
    return t;
  }
  const T fx = std::floor(x), fy = std::floor(y);
  t.x0 = static_cast<int64_t>(fx);
  t.y0 = static_cast<int64_t>(fy);
  t.wx = x - fx;
  t.wy = y - fy;
  const bool cx0 = t.x0 >= 0 && t.x0 < W, cx1 = t.x0 + 1 >= 0 && t.x0 + 1 < W;
  const bool cy0 = t.y0 >= 0 && t.y0 < H, cy1 = t.y0 + 1 >= 0 && t.y0 + 1 < H;
  t.in[0] = cx0 && cy0;
  t.in[1] = cx1 && cy0;
  t.in[2] = cx0 && cy1;
  t.in[3] = cx1 && cy1;
  t.inside_frame = x >= T(0) && x <= T(W - 1) && y >= T(0) && y <= T(H - 1);
  // Kept within a tap of the frame: a flat index y0 * W + x0 is formed before the in[] tests, and a
  // position far outside would overflow it (a tap that is in[] is unchanged by this).
  t.x0 = std::min<int64_t>(std::max<int64_t>(t.x0, -2), W);
  t.y0 = std::min<int64_t>(std::max<int64_t>(t.y0, -2), H);
  return t;
}

// Zero-padded bilinear sample of one plane [H, W].
template <class T>
inline T sample(const T* plane, const Taps<T>& t, int64_t W) {
  const int64_t i = t.y0 * W + t.x0;
  T v00 = t.in[0] ? plane[i] : T(0), v01 = t.in[1] ? plane[i + 1] : T(0);
  T v10 = t.in[2] ? plane[i + W] : T(0), v11 = t.in[3] ? plane[i + W + 1] : T(0);
  return (v00 * (T(1) - t.wx) + v01 * t.wx) * (T(1) - t.wy) + (v10 * (T(1) - t.wx) + v11 * t.wx) * t.wy;
}

}  // namespace warped_fast
