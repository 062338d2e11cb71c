// Device helpers shared by the gp_noise CUDA kernels (kernels/gp_noise.cu): block geometry constants,
// the block's integer anchor, phases relative to it, cosines of any phase, and the fixed-order sum of
// the feature slices' partial results. Included by gp_noise.cu only (internal linkage).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "params.h"

// Tuning knobs; the defaults are the code measured on the H100/H200 (docs/benchmarks_h100.md). A build can
// override them (CMake: -DWARPED_FAST_CUDA_DEFINES="NAME=VALUE;..."); bench/ab_gp_noise.sh builds and
// times such variants side by side on the GPU machine.
#ifndef WARPED_FAST_GP_FMA_UNROLL
#define WARPED_FAST_GP_FMA_UNROLL 4  // features per unrolled step of the FMA kernels' inner loops
#endif
#ifndef WARPED_FAST_GP_INDEP_FEATURES
#define WARPED_FAST_GP_INDEP_FEATURES 1  // FMA independent kernel: features per thread of a staged tile
#endif
#ifndef WARPED_FAST_GP_MMA_TILES
#define WARPED_FAST_GP_MMA_TILES 2  // tensor-core kernel: 16-pixel m-tiles per warp
#endif
#ifndef WARPED_FAST_GP_MMA_BLOCKS
#define WARPED_FAST_GP_MMA_BLOCKS 3  // tensor-core kernel, 4 channels: blocks per SM (launch bound)
#endif
#ifndef WARPED_FAST_GP_MMA_UNROLL
#define WARPED_FAST_GP_MMA_UNROLL 0  // tensor-core kernel: k-steps per unrolled step (0: the compiler's)
#endif
#ifndef WARPED_FAST_GP_MMA_SPLIT_ACC
#define WARPED_FAST_GP_MMA_SPLIT_ACC 0  // tensor-core kernel: 1 = the cosines' lo halves in their own accumulators
#endif
#ifndef WARPED_FAST_GP_MMA_FMA_PHASES
#define WARPED_FAST_GP_MMA_FMA_PHASES 0  // tensor-core kernel: 1 = phases on the FMA pipe, only the channel sums by mma
#endif
#ifndef WARPED_FAST_GP_EARLY_FETCH_SPLIT
#define WARPED_FAST_GP_EARLY_FETCH_SPLIT 16  // FMA independent kernel: tile 0 fetched first from this split on
#endif
#ifndef WARPED_FAST_GP_INDEP_PIX
#define WARPED_FAST_GP_INDEP_PIX 2  // FMA independent kernel: pixels per lane (2, 4 or 8)
#endif
#ifndef WARPED_FAST_GP_SHARED_PIX
#define WARPED_FAST_GP_SHARED_PIX 4  // FMA shared kernel, 4 channels: pixels per lane (2, 4 or 8)
#endif
#ifndef WARPED_FAST_GP_SHARED_BLOCKS
#define WARPED_FAST_GP_SHARED_BLOCKS 3  // FMA shared kernel, 4 channels: blocks per SM (launch bound)
#endif
#ifndef WARPED_FAST_GP_POLY_COS
#define WARPED_FAST_GP_POLY_COS 0  // FMA independent kernel at 4 pixels per lane: of 16 cosines, so many by polynomial
#endif
#ifndef WARPED_FAST_GP_PDL
#define WARPED_FAST_GP_PDL 1  // FMA kernels: programmatic dependent launch (sm_90 and newer; 0: plain launches)
#endif
#define WF_PRAGMA(x) _Pragma(#x)
#define WF_UNROLL(n) WF_PRAGMA(unroll n)

namespace warped_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 256;  // features per shared-memory tile: one per thread
constexpr int kCols = 32;   // tile width: one warp reads 32 consecutive pixels
constexpr float kTwoPi = 6.28318530717958647f;
constexpr float kRound = 12582912.0f;   // 1.5 * 2^23: adding it rounds |v| < 2^22 to an integer
constexpr float kFastBound = 128.0f;    // largest |phase| (radians) given to the cosine unit unreduced
constexpr float kAnchorSpread = 256.f;  // largest half-extent (pixels) of a block's coordinates around its anchor
constexpr double kTwoPiD = 6.283185307179586476925;

// cos(phase) for a phase in radians of any size. __cosf alone converts to turns with a truncating
// multiply, which at phases of thousands of radians doubles the error of the float32 phase; reducing
// first keeps the error at the phase's own. n = rint(phase / 2 pi) by the round-by-addition trick on the
// FMA pipe (rintf would run on the conversion pipe, as slow as the cosine); 2 pi's rounding in the last
// FMA only rescales the phase by 1 + 3e-8, the same for every evaluation.
__device__ __forceinline__ float cos_phase(float phase) {
  const float n = __fsub_rn(fmaf(phase, kInvTwoPi, kRound), kRound);
  return __cosf(fmaf(-n, kTwoPi, phase));
}

template <bool FAST>
__device__ __forceinline__ float cos_local(float phase) {
  return FAST ? __cosf(phase) : cos_phase(phase);
}

// cos(phase) on the FMA pipe, for |phase| <= kFastBound: the CPU kernels' polynomial in turns
// (params.h, max error 2e-7), after a rounded conversion to turns: like MUFU.COS's own (truncating)
// FMUL.RZ, its error grows with |phase|, to ~1e-5 rad at kFastBound.
// ~11 instructions, none on the SFU: a kernel bound by the SFU (16 cosines per SM per clock against
// 128 FMA-pipe instructions) can move a share of its cosines here to spare issue slots.
__device__ __forceinline__ float cos_fma_pipe(float phase) {
  const float t = phase * kInvTwoPi;
  float c;
  WF_COS_TURNS_BODY(t, c);
  return c;
}

// Programmatic dependent launch (WARPED_FAST_GP_PDL, sm_90 and newer; no-ops elsewhere). A kernel launched
// with it may start while the previous kernel of the stream runs: pdl_wait() blocks until that kernel has
// finished and its writes are visible, so it comes before the first global access. pdl_trigger() lets the
// next such kernel start launching (its blocks then wait in their own pdl_wait()).
// On the H200 (graph replay of consecutive calls): 1x4x128x128 J=3000 independent 62.5 against 63.1 us,
// shared 26.0 against 26.9 us; 1x4x1024x1024 unchanged.
__device__ __forceinline__ void pdl_wait() {
#if WARPED_FAST_GP_PDL && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if WARPED_FAST_GP_PDL && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// The block's anchor (x0, y0) and the half-extent (rx, ry) of its tile's coordinates around it.
struct Anchor {
  float x0, y0, rx, ry;
};

// The anchor of the block from every thread's bounding box of its own coordinates (lo > hi for a
// thread with none). Contains a __syncthreads: every thread of the block calls it.
__device__ __forceinline__ Anchor block_anchor(float lo_x, float hi_x, float lo_y, float hi_y) {
  __shared__ float4 box[kThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    lo_x = fminf(lo_x, __shfl_xor_sync(0xffffffffu, lo_x, o));
    hi_x = fmaxf(hi_x, __shfl_xor_sync(0xffffffffu, hi_x, o));
    lo_y = fminf(lo_y, __shfl_xor_sync(0xffffffffu, lo_y, o));
    hi_y = fmaxf(hi_y, __shfl_xor_sync(0xffffffffu, hi_y, o));
  }
  if (threadIdx.x % 32 == 0) box[threadIdx.x / 32] = make_float4(lo_x, hi_x, lo_y, hi_y);
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) {
    const float4 b = box[i];
    lo_x = fminf(lo_x, b.x), hi_x = fmaxf(hi_x, b.y), lo_y = fminf(lo_y, b.z), hi_y = fmaxf(hi_y, b.w);
  }
  // An integer anchor within kAnchorSpread of every coordinate keeps x - x0 exact (|x| < 2^24), and
  // <z, x0> is exact in float64. A block whose coordinates lie further apart (an occlusion edge next to
  // far-away fresh-noise tiles, an outlier, inf) takes the anchor 0: absolute float32 phases, reduced,
  // as accurate as the float32 reference, where a central anchor would round every offset.
  Anchor a;
  a.x0 = rintf(0.5f * lo_x + 0.5f * hi_x);
  a.y0 = rintf(0.5f * lo_y + 0.5f * hi_y);
  a.rx = fmaxf(hi_x - a.x0, a.x0 - lo_x);
  a.ry = fmaxf(hi_y - a.y0, a.y0 - lo_y);
  if (!(a.rx <= kAnchorSpread && a.ry <= kAnchorSpread)) {  // NaN-safe
    a.x0 = a.y0 = 0.f;
    a.rx = fmaxf(fabsf(lo_x), fabsf(hi_x));
    a.ry = fmaxf(fabsf(lo_y), fabsf(hi_y));
  }
  return a;
}

// Feature j's phase at the anchor, (<z, x0> + b) mod 2 pi, in float64, rounded to float32 (|c| <= pi).
__device__ __forceinline__ float anchored_phase(float zx, float zy, float b, const Anchor& a) {
  double c = fma(static_cast<double>(zx), static_cast<double>(a.x0),
                 fma(static_cast<double>(zy), static_cast<double>(a.y0), static_cast<double>(b)));
  c = fma(-kTwoPiD, rint(c * (1.0 / kTwoPiD)), c);
  return static_cast<float>(c);
}

// True when a feature's phase over the block may exceed `bound` (its tile then reduces each phase).
__device__ __forceinline__ bool needs_reduction(float zx, float zy, float c, const Anchor& a,
                                                float bound = kFastBound) {
  return !(fabsf(zx) * a.rx + fabsf(zy) * a.ry + fabsf(c) <= bound);  // NaN-safe: NaN reduces
}

// Adds the SPLIT slices' partial sums acc[R] of every lane into slice 0, in a fixed order. A slice is
// the kThreads / SPLIT consecutive threads that share pixels; red holds (SPLIT - 1) * R * lanes floats.
template <int SPLIT, int R>
__device__ __forceinline__ void reduce_slices(float (&acc)[R], float* red) {
  if (SPLIT == 1) return;
  constexpr int lanes = kThreads / SPLIT;
  const int lane = threadIdx.x % lanes, slice = threadIdx.x / lanes;
  __syncthreads();  // red aliases the feature tiles: every slice is done reading them
  if (slice > 0) {
#pragma unroll
    for (int i = 0; i < R; ++i) red[((slice - 1) * R + i) * lanes + lane] = acc[i];
  }
  __syncthreads();
  if (slice == 0) {
    for (int s = 0; s < SPLIT - 1; ++s) {
#pragma unroll
      for (int i = 0; i < R; ++i) acc[i] += red[(s * R + i) * lanes + lane];
    }
  }
}

// One feature of the next tile, prefetched into registers while the current tile is evaluated.
// Features past J are zero (w = 0 adds nothing). CB = 0: z and b only.
template <int CB>
struct RawFeature {
  float zx = 0.f, zy = 0.f, b = 0.f, w[CB > 0 ? CB : 1] = {};
};

// Feature j of the shared (z, b) and channels [c0, c0 + CB) of w (zero past J or C).
template <int CB>
__device__ __forceinline__ RawFeature<CB> fetch_shared(const GpNoiseParams& p, int64_t c0, int64_t j) {
  RawFeature<CB> f;
  if (j < p.features) {
    f.zx = p.z[2 * j], f.zy = p.z[2 * j + 1], f.b = p.b[j];
#pragma unroll
    for (int c = 0; c < CB; ++c)
      if (c0 + c < p.channels) f.w[c] = p.w[(c0 + c) * p.features + j];
  }
  return f;
}

}  // namespace
}  // namespace warped_fast
