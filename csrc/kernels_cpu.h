// CPU kernels: declarations. Contiguous inputs; sizes as int64; `threads` OpenMP threads.
#pragma once
#include <cstdint>

#include "params.h"

namespace warped_fast {

void gp_noise_cpu(const GpNoiseParams& p, int threads);

// out[n,c,y,x] = bilinear(image[n,c], (x,y) + flow[n,:,y,x]) with zero padding; valid in {0,1}.
// back_flow may be null; when given, pixels failing the forward-backward check are invalid.
template <class T>
void warp_forward_cpu(const T* image, const T* flow, const T* back_flow, T* out, uint8_t* valid, int64_t N, int64_t C,
                      int64_t H, int64_t W, int threads);

// Adjoint of warp_forward. grad_image (nullable) = splat of scale[n] * grad_out (scale nullable = 1);
// grad_flow (nullable) = d<grad_out, out>/d flow. Both are fully overwritten.
template <class T>
void warp_backward_cpu(const T* grad_out, const T* image, const T* flow, const T* scale, T* grad_image, T* grad_flow,
                       int64_t N, int64_t C, int64_t H, int64_t W, int threads);

// out[n,y,x] = p + D(p), p = (x,y) + flow[n,:,y,x], D = coords - identity sampled bilinearly with
// linear extrapolation from the border cell. coords/out: [N,H,W,2].
template <class T>
void compose_coords_cpu(const T* coords, const T* flow, T* out, int64_t N, int64_t H, int64_t W, int threads);

// r = M * (warp(pred, flow) - prev), M = in-frame (& mask); row_sumsq[n*H + y] = sum over the row of r^2.
template <class T>
void guidance_residual_cpu(const T* pred, const T* prev, const T* flow, const uint8_t* mask, T* r, double* row_sumsq,
                           int64_t N, int64_t C, int64_t H, int64_t W, int threads);

// out = u + (sn[n] - s[n]) * (u - pred) / s[n] - lam * grad (grad nullable); per_item = C*H*W.
template <class T>
void euler_guided_step_cpu(const T* u, const T* pred, const T* grad, const T* sigma, const T* sigma_next, double lam,
                           T* out, int64_t N, int64_t per_item, int threads);

// HIWYN integral noise warping, one step (warped_fast.noise.hiwyn.hiwyn_transport_reference). Float32,
// contiguous: prev/zmean/fresh/out [C,H,W], cx/cy [H+1,W+1] corner positions, z [C,H,W,k,k];
// H*k, W*k <= 2^24.
struct HiwynParams {
  const float* prev;
  const float* cx;
  const float* cy;
  const float* z;
  const float* zmean;  // mean of z over each pixel's k*k draws
  const float* fresh;
  float* out;
  int64_t C, H, W;
  int k;           // sub-pixels per pixel side, 1..32
  int max_extent;  // source pixels per axis, >= 1
};

void hiwyn_transport_cpu(const HiwynParams& p, int threads);

// InfRes particle step (warped_fast.noise.infres.infres_transport_reference). Float32, contiguous:
// prev/fresh/out [C,H,W], fwd [2,H,W], z [C,4,H,W]; area [H,W] is scratch (the area that arrives);
// H, W <= 2^24 and H*W < 2^31.
struct InfresParams {
  const float* prev;
  const float* fwd;
  const float* z;
  const float* fresh;
  float* out;
  float* area;
  int64_t C, H, W;
  bool fill;       // missing area: fill with fresh noise (true) or renormalize
  float min_area;  // renormalize: pixels receiving at most this area get fresh noise
};

void infres_transport_cpu(const InfresParams& p, int threads);

// Go-with-the-Flow step (warped_fast.noise.gwtf.gwtf_transport_reference). Float32, contiguous:
// q/zc/ze/fresh/out [C,H,W], weight/weight_out [H,W] (density, not normalized), fwd/back [2,H,W];
// H, W <= 2^24 and H*W < 2^31.
struct GwtfParams {
  const float* q;
  const float* weight;
  const float* fwd;
  const float* back;
  const float* zc;
  const float* ze;
  const float* fresh;
  float* out;
  float* weight_out;
  int64_t C, H, W;
};

void gwtf_transport_cpu(const GwtfParams& p, int threads);

}  // namespace warped_fast
