// CUDA kernels of the RFF GP noise field (method section 2). Fused: each thread evaluates a few
// pixels against feature tiles staged in shared memory; the [pixels, J] matrix never exists.
// Phases are kept in turns, reduced by rintf, and the cosine runs on the special-function unit.
#include <cuda_runtime.h>

#include "cuda_api.h"

namespace warped_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kPix = 2;    // pixels per thread (independent FMA/MUFU chains)
constexpr int kTile = 512;  // features per shared-memory tile

__device__ __forceinline__ float cos_turns(float t) {
  const float r = t - rintf(t);  // [-1/2, 1/2] turns: __cosf is accurate on [-pi, pi]
  return __cosf(r * 6.28318530717958647f);
}

__device__ __forceinline__ void load_coords(const GpNoiseParams& p, int64_t n, int64_t pix0, float* x, float* y) {
#pragma unroll
  for (int q = 0; q < kPix; ++q) {
    const int64_t pix = pix0 + q * kThreads;
    if (pix < p.pixels) {
      const float2 c = reinterpret_cast<const float2*>(p.coords)[n * p.pixels + pix];
      x[q] = c.x;
      y[q] = c.y;
    } else {
      x[q] = y[q] = 0.f;
    }
  }
}

// Independent (z, b, w) per channel. grid = (pixel blocks, C, N).
__global__ void __launch_bounds__(kThreads) gp_independent_kernel(GpNoiseParams p, float scale) {
  __shared__ float4 feat[kTile];  // (zx, zy, b) in turns, w
  const int64_t c = blockIdx.y, n = blockIdx.z;
  const int64_t pix0 = int64_t(blockIdx.x) * kThreads * kPix + threadIdx.x;
  const int64_t J = p.features;
  float x[kPix], y[kPix], acc[kPix];
  load_coords(p, n, pix0, x, y);
#pragma unroll
  for (int q = 0; q < kPix; ++q) acc[q] = 0.f;
  for (int64_t j0 = 0; j0 < J; j0 += kTile) {
    __syncthreads();
    for (int k = threadIdx.x; k < kTile; k += kThreads) {
      const int64_t j = j0 + k;
      feat[k] = j < J ? make_float4(p.z[(c * J + j) * 2] * kInvTwoPi, p.z[(c * J + j) * 2 + 1] * kInvTwoPi,
                                    p.b[c * J + j] * kInvTwoPi, p.w[c * J + j])
                      : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    __syncthreads();
    const int jn = static_cast<int>(J - j0 < kTile ? J - j0 : kTile);
#pragma unroll 4
    for (int k = 0; k < jn; ++k) {
      const float4 f = feat[k];
#pragma unroll
      for (int q = 0; q < kPix; ++q) acc[q] = fmaf(f.w, cos_turns(fmaf(f.x, x[q], fmaf(f.y, y[q], f.z))), acc[q]);
    }
  }
#pragma unroll
  for (int q = 0; q < kPix; ++q) {
    const int64_t pix = pix0 + q * kThreads;
    if (pix < p.pixels) p.out[(n * p.channels + c) * p.pixels + pix] = scale * acc[q];
  }
}

// Shared (z, b), per-channel w: one cosine per (pixel, feature) feeds CB channels.
// grid = (pixel blocks, ceil(C / CB), N).
template <int CB>
__global__ void __launch_bounds__(kThreads) gp_shared_kernel(GpNoiseParams p, float scale) {
  __shared__ float4 zb[kTile];
  __shared__ float ws[kTile][CB];
  const int64_t c0 = int64_t(blockIdx.y) * CB, n = blockIdx.z;
  const int64_t pix0 = int64_t(blockIdx.x) * kThreads * kPix + threadIdx.x;
  const int64_t J = p.features, C = p.channels;
  float x[kPix], y[kPix], acc[kPix][CB];
  load_coords(p, n, pix0, x, y);
#pragma unroll
  for (int q = 0; q < kPix; ++q)
#pragma unroll
    for (int c = 0; c < CB; ++c) acc[q][c] = 0.f;
  for (int64_t j0 = 0; j0 < J; j0 += kTile) {
    __syncthreads();
    for (int k = threadIdx.x; k < kTile; k += kThreads) {
      const int64_t j = j0 + k;
      zb[k] = j < J ? make_float4(p.z[j * 2] * kInvTwoPi, p.z[j * 2 + 1] * kInvTwoPi, p.b[j] * kInvTwoPi, 0.f)
                    : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int c = 0; c < CB; ++c) ws[k][c] = (j < J && c0 + c < C) ? p.w[(c0 + c) * J + j] : 0.f;
    }
    __syncthreads();
    const int jn = static_cast<int>(J - j0 < kTile ? J - j0 : kTile);
#pragma unroll 2
    for (int k = 0; k < jn; ++k) {
      const float4 f = zb[k];
#pragma unroll
      for (int q = 0; q < kPix; ++q) {
        const float cs = cos_turns(fmaf(f.x, x[q], fmaf(f.y, y[q], f.z)));
#pragma unroll
        for (int c = 0; c < CB; ++c) acc[q][c] = fmaf(ws[k][c], cs, acc[q][c]);
      }
    }
  }
#pragma unroll
  for (int q = 0; q < kPix; ++q) {
    const int64_t pix = pix0 + q * kThreads;
    if (pix >= p.pixels) continue;
#pragma unroll
    for (int c = 0; c < CB; ++c)
      if (c0 + c < C) p.out[(n * C + c0 + c) * p.pixels + pix] = scale * acc[q][c];
  }
}

}  // namespace

const char* gp_noise_cuda(const GpNoiseParams& p, uintptr_t stream_handle) {
  if (p.batch == 0 || p.pixels == 0 || p.channels == 0) return nullptr;
  if (p.batch > 65535) return "batch larger than 65535 frames per call";
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const float scale = sqrtf(2.0f / static_cast<float>(p.features));
  const int64_t blocks = (p.pixels + kThreads * kPix - 1) / (kThreads * kPix);
  if (blocks > 0x7fffffff) return "frame too large";
  if (p.zb_channels == 1 && p.channels > 1) {
    const int cb = p.channels <= 4 ? 4 : 8;
    const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>((p.channels + cb - 1) / cb),
                    static_cast<unsigned>(p.batch));
    if (cb == 4)
      gp_shared_kernel<4><<<grid, kThreads, 0, stream>>>(p, scale);
    else
      gp_shared_kernel<8><<<grid, kThreads, 0, stream>>>(p, scale);
  } else {
    if (p.channels > 65535) return "more than 65535 channels";
    const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(p.channels), static_cast<unsigned>(p.batch));
    gp_independent_kernel<<<grid, kThreads, 0, stream>>>(p, scale);
  }
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

int cuda_device_count(const char** err) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    *err = cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky-free error state
    return -1;
  }
  return n;
}

}  // namespace warped_fast
