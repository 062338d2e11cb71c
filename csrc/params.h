// Kernel parameter structs shared by the CPU kernels (csrc/) and the CUDA kernels (kernels/).
// Plain pointers and sizes only: no torch headers, so the module is independent of the torch ABI.
#pragma once
#include <cstdint>

namespace warped_fast {

// RFF field: out[n, c, p] = sqrt(2/J) * sum_j w[c, j] * cos(z[c', j] . coords[n, p] + b[c', j]),
// c' = c when num_zb_channels == channels (independent), 0 when num_zb_channels == 1 (shared).
struct GpNoiseParams {
  const float* coords;  // [N, HW, 2] (x, y) pixels
  const float* z;       // [Cz, J, 2] radians per pixel
  const float* b;       // [Cz, J]
  const float* w;       // [C, J]
  float* out;           // [N, C, HW]
  int64_t batch;        // N
  int64_t pixels;       // HW
  int64_t width;        // W (rows of W pixels; the CUDA kernel tiles the frame in 2-D)
  int64_t channels;     // C
  int64_t zb_channels;  // Cz in {1, C}
  int64_t features;     // J
};

// |x|: one FADD operand modifier on the GPU; the select the CPU kernels' loops vectorize.
#if defined(__CUDACC__)
#define WF_ABS(x) fabsf(x)
#else
#define WF_ABS(x) ((x) < 0.0f ? -(x) : (x))
#endif

// cos(2 pi t) from t in turns: reduce to r in [-1/2, 1/2], then cos(2 pi r) = sin(2 pi (1/4 - |r|)),
// an odd minimax polynomial on [-1/4, 1/4] (max error 2e-7 in float32). Past 2^22 turns the rounding is
// coarser than a turn and |r| may exceed 1/2: s is held at -1/4 (cos = -1), so the value stays in [-1, 1]
// (a float32 phase that large has no fractional turn left anyway).
#define WF_COS_TURNS_BODY(t, result)                      \
  {                                                       \
    float r_ = (t) - (((t) + 12582912.0f) - 12582912.0f); \
    float s_ = 0.25f - WF_ABS(r_);                        \
    s_ = s_ < -0.25f ? -0.25f : s_;                       \
    float u_ = s_ * s_;                                   \
    float p_ = 39.53668975830078f;                        \
    p_ = p_ * u_ - 76.5497817993164f;                     \
    p_ = p_ * u_ + 81.60100555419922f;                    \
    p_ = p_ * u_ - 41.34165573120117f;                    \
    p_ = p_ * u_ + 6.283185005187988f;                    \
    (result) = p_ * s_;                                   \
  }

constexpr float kInvTwoPi = 0.15915494309189535f;

}  // namespace warped_fast
