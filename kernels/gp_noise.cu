// CUDA kernels of the RFF GP noise field (method section 2). Fused: the [pixels, J] matrix never exists.
//
// A block of kThreads threads is SPLIT slices x (kThreads / SPLIT) pixel lanes; every lane evaluates
// kPix pixels against the slice's share of each feature tile staged in shared memory, and the slices'
// partial sums are added in a fixed order at the end (deterministic). SPLIT > 1 gives small frames
// enough blocks to fill the chip. Per (pixel, feature): two FMAs for the phase, a range reduction to
// [-pi, pi] on the FMA pipe (three ops, see cos_phase) and the cosine on the special-function unit,
// then one FMA per channel.
#include <cuda_runtime.h>

#include "cuda_api.h"

namespace warped_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kPix = 4;     // pixels per lane (independent FMA/MUFU chains)
constexpr int kTile = 256;  // features per shared-memory tile
constexpr float kTwoPi = 6.28318530717958647f;
constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds |v| < 2^22 to an integer

// cos(phase) for a phase in radians. __cosf alone converts to turns with a truncating multiply, which
// at phases of thousands of radians doubles the error of the float32 phase; reducing first keeps the
// error at the phase's own. n = rint(phase / 2 pi) by the round-by-addition trick on the FMA pipe
// (rintf would run on the conversion pipe, as slow as the cosine); 2 pi's rounding in the last FMA
// only rescales the phase by 1 + 3e-8, the same for every evaluation.
__device__ __forceinline__ float cos_phase(float phase) {
  const float n = __fsub_rn(fmaf(phase, kInvTwoPi, kRound), kRound);
  return __cosf(fmaf(-n, kTwoPi, phase));
}

__device__ __forceinline__ void load_coords(const GpNoiseParams& p, int64_t n, int64_t pix0, int lanes, float* x,
                                            float* y) {
#pragma unroll
  for (int q = 0; q < kPix; ++q) {
    const int64_t pix = pix0 + q * lanes;
    if (pix < p.pixels) {
      const float2 c = reinterpret_cast<const float2*>(p.coords)[n * p.pixels + pix];
      x[q] = c.x;
      y[q] = c.y;
    } else {
      x[q] = y[q] = 0.f;
    }
  }
}

// Sums the SPLIT slices' partial sums acc[kPix * CB] of every lane into slice 0 (fixed order).
template <int SPLIT, int CB>
__device__ __forceinline__ void reduce_slices(float (&acc)[kPix * CB], float* red) {
  if (SPLIT == 1) return;
  constexpr int lanes = kThreads / SPLIT;
  const int lane = threadIdx.x % lanes, slice = threadIdx.x / lanes;
  __syncthreads();  // the feature tiles are no longer read
  if (slice > 0) {
#pragma unroll
    for (int i = 0; i < kPix * CB; ++i) red[((slice - 1) * kPix * CB + i) * lanes + lane] = acc[i];
  }
  __syncthreads();
  if (slice == 0) {
    for (int s = 0; s < SPLIT - 1; ++s) {
#pragma unroll
      for (int i = 0; i < kPix * CB; ++i) acc[i] += red[(s * kPix * CB + i) * lanes + lane];
    }
  }
}

// Independent (z, b, w) per channel. grid = (pixel blocks, C, N).
template <int SPLIT>
__global__ void __launch_bounds__(kThreads) gp_independent_kernel(GpNoiseParams p, float scale) {
  constexpr int lanes = kThreads / SPLIT, per_slice = kTile / SPLIT;
  __shared__ float4 feat[kTile];  // (zx, zy, b, w)
  __shared__ float red[SPLIT > 1 ? (SPLIT - 1) * kPix * lanes : 1];
  const int64_t c = blockIdx.y, n = blockIdx.z;
  const int lane = threadIdx.x % lanes, slice = threadIdx.x / lanes;
  const int64_t pix0 = int64_t(blockIdx.x) * lanes * kPix + lane;
  const int64_t J = p.features;
  float x[kPix], y[kPix], acc[kPix];
  load_coords(p, n, pix0, lanes, x, y);
#pragma unroll
  for (int q = 0; q < kPix; ++q) acc[q] = 0.f;
  for (int64_t j0 = 0; j0 < J; j0 += kTile) {
    __syncthreads();
    for (int k = threadIdx.x; k < kTile; k += kThreads) {
      const int64_t j = j0 + k;
      feat[k] = j < J ? make_float4(p.z[(c * J + j) * 2], p.z[(c * J + j) * 2 + 1], p.b[c * J + j], p.w[c * J + j])
                      : make_float4(0.f, 0.f, 0.f, 0.f);  // w = 0: padding adds nothing
    }
    __syncthreads();
    const int k0 = slice * per_slice, k1 = min(k0 + per_slice, static_cast<int>(J - j0 < kTile ? J - j0 : kTile));
#pragma unroll 4
    for (int k = k0; k < k1; ++k) {
      const float4 f = feat[k];
#pragma unroll
      for (int q = 0; q < kPix; ++q) acc[q] = fmaf(f.w, cos_phase(fmaf(f.x, x[q], fmaf(f.y, y[q], f.z))), acc[q]);
    }
  }
  reduce_slices<SPLIT, 1>(acc, red);
  if (slice != 0) return;
#pragma unroll
  for (int q = 0; q < kPix; ++q) {
    const int64_t pix = pix0 + q * lanes;
    if (pix < p.pixels) p.out[(n * p.channels + c) * p.pixels + pix] = scale * acc[q];
  }
}

// Shared (z, b), per-channel w: one cosine per (pixel, feature) feeds CB channels.
// grid = (pixel blocks, ceil(C / CB), N).
template <int SPLIT, int CB>
__global__ void __launch_bounds__(kThreads) gp_shared_kernel(GpNoiseParams p, float scale) {
  constexpr int lanes = kThreads / SPLIT, per_slice = kTile / SPLIT;
  __shared__ float4 zb[kTile];
  __shared__ float4 ws[kTile][CB / 4];
  __shared__ float red[SPLIT > 1 ? (SPLIT - 1) * kPix * CB * lanes : 1];
  const int64_t c0 = int64_t(blockIdx.y) * CB, n = blockIdx.z;
  const int lane = threadIdx.x % lanes, slice = threadIdx.x / lanes;
  const int64_t pix0 = int64_t(blockIdx.x) * lanes * kPix + lane;
  const int64_t J = p.features, C = p.channels;
  float x[kPix], y[kPix], acc[kPix * CB];
  load_coords(p, n, pix0, lanes, x, y);
#pragma unroll
  for (int i = 0; i < kPix * CB; ++i) acc[i] = 0.f;
  for (int64_t j0 = 0; j0 < J; j0 += kTile) {
    __syncthreads();
    for (int k = threadIdx.x; k < kTile; k += kThreads) {
      const int64_t j = j0 + k;
      zb[k] = j < J ? make_float4(p.z[j * 2], p.z[j * 2 + 1], p.b[j], 0.f) : make_float4(0.f, 0.f, 0.f, 0.f);
      float* wk = reinterpret_cast<float*>(ws[k]);
#pragma unroll
      for (int c = 0; c < CB; ++c) wk[c] = (j < J && c0 + c < C) ? p.w[(c0 + c) * J + j] : 0.f;
    }
    __syncthreads();
    const int k0 = slice * per_slice, k1 = min(k0 + per_slice, static_cast<int>(J - j0 < kTile ? J - j0 : kTile));
#pragma unroll 2
    for (int k = k0; k < k1; ++k) {
      const float4 f = zb[k];
      float wk[CB];
#pragma unroll
      for (int v = 0; v < CB / 4; ++v) {
        const float4 w4 = ws[k][v];
        wk[4 * v] = w4.x, wk[4 * v + 1] = w4.y, wk[4 * v + 2] = w4.z, wk[4 * v + 3] = w4.w;
      }
#pragma unroll
      for (int q = 0; q < kPix; ++q) {
        const float cs = cos_phase(fmaf(f.x, x[q], fmaf(f.y, y[q], f.z)));
#pragma unroll
        for (int c = 0; c < CB; ++c) acc[q * CB + c] = fmaf(wk[c], cs, acc[q * CB + c]);
      }
    }
  }
  reduce_slices<SPLIT, CB>(acc, red);
  if (slice != 0) return;
#pragma unroll
  for (int q = 0; q < kPix; ++q) {
    const int64_t pix = pix0 + q * lanes;
    if (pix >= p.pixels) continue;
#pragma unroll
    for (int c = 0; c < CB; ++c)
      if (c0 + c < C) p.out[(n * C + c0 + c) * p.pixels + pix] = scale * acc[q * CB + c];
  }
}

// Multiprocessors of the first device the op runs on (read once; the split only tunes occupancy).
int sm_count() {
  static int sms = 0;
  if (sms == 0) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      cudaGetLastError();
      sms = 132;
    }
  }
  return sms;
}

// The smallest split that gives at least 4 blocks per SM (8 at most).
int choose_split(int64_t pixels, int64_t other_blocks) {
  const int64_t want = 4 * static_cast<int64_t>(sm_count());
  for (int s = 1; s < 8; s *= 2) {
    const int64_t per_block = (kThreads / s) * kPix;
    if ((pixels + per_block - 1) / per_block * other_blocks >= want) return s;
  }
  return 8;
}

template <int SPLIT>
void launch(const GpNoiseParams& p, float scale, int64_t pix_blocks, cudaStream_t stream) {
  if (p.zb_channels == 1 && p.channels > 1) {
    const int cb = p.channels <= 4 ? 4 : 8;
    const dim3 grid(static_cast<unsigned>(pix_blocks), static_cast<unsigned>((p.channels + cb - 1) / cb),
                    static_cast<unsigned>(p.batch));
    if (cb == 4)
      gp_shared_kernel<SPLIT, 4><<<grid, kThreads, 0, stream>>>(p, scale);
    else
      gp_shared_kernel<SPLIT, 8><<<grid, kThreads, 0, stream>>>(p, scale);
  } else {
    const dim3 grid(static_cast<unsigned>(pix_blocks), static_cast<unsigned>(p.channels), static_cast<unsigned>(p.batch));
    gp_independent_kernel<SPLIT><<<grid, kThreads, 0, stream>>>(p, scale);
  }
}

}  // namespace

const char* gp_noise_cuda(const GpNoiseParams& p, uintptr_t stream_handle) {
  if (p.batch == 0 || p.pixels == 0 || p.channels == 0) return nullptr;
  if (p.batch > 65535) return "batch larger than 65535 frames per call";
  if (p.channels > 65535) return "more than 65535 channels";
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const float scale = sqrtf(2.0f / static_cast<float>(p.features));
  const bool shared = p.zb_channels == 1 && p.channels > 1;
  const int64_t other = p.batch * (shared ? (p.channels + 7) / 8 : p.channels);
  const int split = choose_split(p.pixels, other);
  const int64_t per_block = (kThreads / split) * kPix;
  const int64_t pix_blocks = (p.pixels + per_block - 1) / per_block;
  if (pix_blocks > 0x7fffffff) return "frame too large";
  switch (split) {
    case 1: launch<1>(p, scale, pix_blocks, stream); break;
    case 2: launch<2>(p, scale, pix_blocks, stream); break;
    case 4: launch<4>(p, scale, pix_blocks, stream); break;
    default: launch<8>(p, scale, pix_blocks, stream); break;
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
