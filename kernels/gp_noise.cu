// CUDA kernels of the RFF GP noise field (method section 2). Fused: the [pixels, J] matrix never exists.
//
// A block covers a 2-D tile of 32 columns x tile_rows(SPLIT) rows and is SPLIT slices x (kThreads / SPLIT)
// pixel lanes; every lane evaluates kPix pixels against the slice's share of each feature tile staged in
// shared memory, and the slices' partial sums are added in a fixed order at the end (deterministic).
// SPLIT > 1 gives small frames enough blocks to fill the chip.
//
// Phases are taken relative to an integer anchor x0 near the centre of the block's coordinates:
// <z, x> + b = <z, x - x0> + c with c = (<z, x0> + b) mod 2 pi computed once per (block, feature) in
// float64. For the smooth coordinate maps of noise warping, |<z, x - x0> + c| stays within some tens of
// radians, where the cosine unit's own conversion to turns is accurate to ~1e-6 rad: per (pixel,
// feature) two FMAs, the cosine (FMUL.RZ + MUFU.COS) and one FMA per channel. A feature tile whose
// phases could exceed kFastBound (coordinates spread far apart in the block) reduces each phase to
// [-pi, pi] on the FMA pipe first (cos_phase). Either way the error stays below the float32 phase
// rounding of the absolute coordinates.
#include <cuda_runtime.h>

#include "cuda_api.h"

namespace warped_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kPix = 4;     // pixels per lane (independent FMA/MUFU chains)
constexpr int kTile = 256;  // features per shared-memory tile
constexpr int kCols = 32;   // tile width: one warp reads 32 consecutive pixels
constexpr float kTwoPi = 6.28318530717958647f;
constexpr float kRound = 12582912.0f;    // 1.5 * 2^23: adding it rounds |v| < 2^22 to an integer
constexpr float kFastBound = 128.0f;     // largest |phase| (radians) given to the cosine unit unreduced
constexpr double kTwoPiD = 6.283185307179586476925;

// Rows of a block's tile: lanes / 32 rows per pixel slot, kPix slots.
__host__ __device__ constexpr int tile_rows(int split) { return kPix * (kThreads / split) / kCols; }

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

// Where a lane's pixels lie: column `col`, rows row0 + q * rows_per_slot (q < kPix).
struct TilePos {
  int64_t col, row0, height;
};

template <int SPLIT>
__device__ __forceinline__ TilePos tile_pos(const GpNoiseParams& p) {
  constexpr int lanes = kThreads / SPLIT;
  const int lane = threadIdx.x % lanes;
  const int64_t tiles_x = (p.width + kCols - 1) / kCols;
  return {(blockIdx.x % tiles_x) * kCols + lane % kCols, (blockIdx.x / tiles_x) * tile_rows(SPLIT) + lane / kCols,
          p.pixels / p.width};
}

// In-frame index of the lane's pixel q, or -1 outside the frame.
template <int SPLIT>
__device__ __forceinline__ int64_t pixel_index(const GpNoiseParams& p, const TilePos& t, int q) {
  const int64_t row = t.row0 + q * (kThreads / SPLIT / kCols);
  return (t.col < p.width && row < t.height) ? row * p.width + t.col : -1;
}

// The block's anchor (x0, y0) and the half-extent (rx, ry) of its tile's coordinates around it.
struct Anchor {
  float x0, y0, rx, ry;
};

// Loads the lane's kPix coordinates as offsets from the block's anchor (0 outside the frame).
template <int SPLIT>
__device__ __forceinline__ Anchor load_tile_coords(const GpNoiseParams& p, int64_t n, const TilePos& t,
                                                   float (&dx)[kPix], float (&dy)[kPix]) {
  __shared__ float4 box[kThreads / 32];
  float lo_x = INFINITY, hi_x = -INFINITY, lo_y = INFINITY, hi_y = -INFINITY;
#pragma unroll
  for (int q = 0; q < kPix; ++q) {
    const int64_t pix = pixel_index<SPLIT>(p, t, q);
    if (pix >= 0) {
      const float2 c = reinterpret_cast<const float2*>(p.coords)[n * p.pixels + pix];
      dx[q] = c.x, dy[q] = c.y;
      lo_x = fminf(lo_x, c.x), hi_x = fmaxf(hi_x, c.x), lo_y = fminf(lo_y, c.y), hi_y = fmaxf(hi_y, c.y);
    } else {
      dx[q] = dy[q] = 0.f;
    }
  }
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
  // Integer anchors keep x - x0 exact wherever |x - x0| <= |x|, and <z, x0> exact in float64.
  Anchor a;
  a.x0 = rintf(0.5f * lo_x + 0.5f * hi_x);
  a.y0 = rintf(0.5f * lo_y + 0.5f * hi_y);
  a.rx = fmaxf(hi_x - a.x0, a.x0 - lo_x);
  a.ry = fmaxf(hi_y - a.y0, a.y0 - lo_y);
#pragma unroll
  for (int q = 0; q < kPix; ++q) {
    if (pixel_index<SPLIT>(p, t, q) >= 0) dx[q] -= a.x0, dy[q] -= a.y0;
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

// True when a feature's phase over the block may exceed kFastBound (its tile then reduces each phase).
__device__ __forceinline__ bool needs_reduction(float zx, float zy, float c, const Anchor& a) {
  return !(fabsf(zx) * a.rx + fabsf(zy) * a.ry + fabsf(c) <= kFastBound);  // NaN-safe: NaN reduces
}

// Sums the SPLIT slices' partial sums acc[kPix * CB] of every lane into slice 0 (fixed order).
template <int SPLIT, int CB>
__device__ __forceinline__ void reduce_slices(float (&acc)[kPix * CB], float* red) {
  if (SPLIT == 1) return;
  constexpr int lanes = kThreads / SPLIT;
  const int lane = threadIdx.x % lanes, slice = threadIdx.x / lanes;
  __syncthreads();  // red aliases the feature tiles: every slice is done reading them
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

// acc[q] += w_k cos(<z_k, dx_q> + c_k) over features [k0, k1) of an independent-channel tile.
template <bool FAST>
__device__ __forceinline__ void accumulate_independent(const float4* feat, int k0, int k1, const float (&dx)[kPix],
                                                       const float (&dy)[kPix], float (&acc)[kPix]) {
#pragma unroll 4
  for (int k = k0; k < k1; ++k) {
    const float4 f = feat[k];
#pragma unroll
    for (int q = 0; q < kPix; ++q) acc[q] = fmaf(f.w, cos_local<FAST>(fmaf(f.x, dx[q], fmaf(f.y, dy[q], f.z))), acc[q]);
  }
}

// One feature of the next tile, prefetched into registers while the current tile is evaluated.
// Features past J are zero (w = 0 adds nothing).
template <int CB>
struct RawFeature {
  float zx = 0.f, zy = 0.f, b = 0.f, w[CB] = {};
};

// Independent (z, b, w) per channel. grid = (tiles, C, N). Double-buffered feature tiles: one barrier per
// tile, and the next tile's loads are in flight during the current one's cosines.
template <int SPLIT>
__global__ void __launch_bounds__(kThreads, 4) gp_independent_kernel(GpNoiseParams p, float scale) {
  constexpr int lanes = kThreads / SPLIT, per_slice = kTile / SPLIT;
  static_assert(kTile == kThreads, "one feature per thread and tile");
  constexpr int feat_bytes = 2 * kTile * 16, red_bytes = (SPLIT - 1) * kPix * lanes * 4;
  __shared__ __align__(16) unsigned char smem[feat_bytes > red_bytes ? feat_bytes : red_bytes];
  float4(*feat)[kTile] = reinterpret_cast<float4(*)[kTile]>(smem);  // (zx, zy, c, w)
  const int64_t c = blockIdx.y, n = blockIdx.z;
  const int slice = threadIdx.x / lanes;
  const int64_t J = p.features;
  const float* z = p.z + c * J * 2;
  const float *b = p.b + c * J, *w = p.w + c * J;
  const auto fetch = [&](int64_t j) {
    RawFeature<1> f;
    if (j < J) f.zx = z[2 * j], f.zy = z[2 * j + 1], f.b = b[j], f.w[0] = w[j];
    return f;
  };
  const TilePos t = tile_pos<SPLIT>(p);
  float dx[kPix], dy[kPix], acc[kPix];
  const Anchor a = load_tile_coords<SPLIT>(p, n, t, dx, dy);
#pragma unroll
  for (int q = 0; q < kPix; ++q) acc[q] = 0.f;
  RawFeature<1> next = fetch(threadIdx.x);
  int buf = 0;
  for (int64_t j0 = 0; j0 < J; j0 += kTile, buf ^= 1) {
    const float ph = anchored_phase(next.zx, next.zy, next.b, a);
    feat[buf][threadIdx.x] = make_float4(next.zx, next.zy, ph, next.w[0]);
    const bool reduce = __syncthreads_or(needs_reduction(next.zx, next.zy, ph, a));
    if (j0 + kTile < J) next = fetch(j0 + kTile + threadIdx.x);
    const int k0 = slice * per_slice, k1 = min(k0 + per_slice, static_cast<int>(J - j0 < kTile ? J - j0 : kTile));
    if (reduce)
      accumulate_independent<false>(feat[buf], k0, k1, dx, dy, acc);
    else
      accumulate_independent<true>(feat[buf], k0, k1, dx, dy, acc);
  }
  reduce_slices<SPLIT, 1>(acc, reinterpret_cast<float*>(smem));
  if (slice != 0) return;
#pragma unroll
  for (int q = 0; q < kPix; ++q) {
    const int64_t pix = pixel_index<SPLIT>(p, t, q);
    if (pix >= 0) p.out[(n * p.channels + c) * p.pixels + pix] = scale * acc[q];
  }
}

// acc[q, c] += w_k[c] cos(<z_k, dx_q> + c_k) over features [k0, k1) of a shared-feature tile.
template <bool FAST, int CB>
__device__ __forceinline__ void accumulate_shared(const float4* zb, const float4 (*ws)[CB / 4], int k0, int k1,
                                                  const float (&dx)[kPix], const float (&dy)[kPix],
                                                  float (&acc)[kPix * CB]) {
#pragma unroll 4
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
      const float cs = cos_local<FAST>(fmaf(f.x, dx[q], fmaf(f.y, dy[q], f.z)));
#pragma unroll
      for (int c = 0; c < CB; ++c) acc[q * CB + c] = fmaf(wk[c], cs, acc[q * CB + c]);
    }
  }
}

// Shared (z, b), per-channel w: one cosine per (pixel, feature) feeds CB channels.
// grid = (tiles, ceil(C / CB), N). Double-buffered like the independent kernel.
template <int SPLIT, int CB>
__global__ void __launch_bounds__(kThreads, CB <= 4 ? 3 : 2) gp_shared_kernel(GpNoiseParams p, float scale) {
  constexpr int lanes = kThreads / SPLIT, per_slice = kTile / SPLIT;
  static_assert(kTile == kThreads, "one feature per thread and tile");
  constexpr int feat_bytes = 2 * kTile * 16 * (1 + CB / 4), red_bytes = (SPLIT - 1) * kPix * CB * lanes * 4;
  __shared__ __align__(16) unsigned char smem[feat_bytes > red_bytes ? feat_bytes : red_bytes];
  float4(*zb)[kTile] = reinterpret_cast<float4(*)[kTile]>(smem);  // (zx, zy, c, 0)
  float4(*ws)[kTile][CB / 4] = reinterpret_cast<float4(*)[kTile][CB / 4]>(smem + 2 * kTile * 16);
  const int64_t c0 = int64_t(blockIdx.y) * CB, n = blockIdx.z;
  const int slice = threadIdx.x / lanes;
  const int64_t J = p.features, C = p.channels;
  const auto fetch = [&](int64_t j) {
    RawFeature<CB> f;
    if (j < J) {
      f.zx = p.z[2 * j], f.zy = p.z[2 * j + 1], f.b = p.b[j];
#pragma unroll
      for (int c = 0; c < CB; ++c)
        if (c0 + c < C) f.w[c] = p.w[(c0 + c) * J + j];
    }
    return f;
  };
  const TilePos t = tile_pos<SPLIT>(p);
  float dx[kPix], dy[kPix], acc[kPix * CB];
  const Anchor a = load_tile_coords<SPLIT>(p, n, t, dx, dy);
#pragma unroll
  for (int i = 0; i < kPix * CB; ++i) acc[i] = 0.f;
  RawFeature<CB> next = fetch(threadIdx.x);
  int buf = 0;
  for (int64_t j0 = 0; j0 < J; j0 += kTile, buf ^= 1) {
    const float ph = anchored_phase(next.zx, next.zy, next.b, a);
    zb[buf][threadIdx.x] = make_float4(next.zx, next.zy, ph, 0.f);
#pragma unroll
    for (int v = 0; v < CB / 4; ++v)
      ws[buf][threadIdx.x][v] = make_float4(next.w[4 * v], next.w[4 * v + 1], next.w[4 * v + 2], next.w[4 * v + 3]);
    const bool reduce = __syncthreads_or(needs_reduction(next.zx, next.zy, ph, a));
    if (j0 + kTile < J) next = fetch(j0 + kTile + threadIdx.x);
    const int k0 = slice * per_slice, k1 = min(k0 + per_slice, static_cast<int>(J - j0 < kTile ? J - j0 : kTile));
    if (reduce)
      accumulate_shared<false, CB>(zb[buf], ws[buf], k0, k1, dx, dy, acc);
    else
      accumulate_shared<true, CB>(zb[buf], ws[buf], k0, k1, dx, dy, acc);
  }
  reduce_slices<SPLIT, CB>(acc, reinterpret_cast<float*>(smem));
  if (slice != 0) return;
#pragma unroll
  for (int q = 0; q < kPix; ++q) {
    const int64_t pix = pixel_index<SPLIT>(p, t, q);
    if (pix < 0) continue;
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

// Channels per block of the shared-feature kernel.
int64_t shared_channel_block(int64_t channels) { return channels <= 4 ? 4 : 8; }

// Blocks (2-D tiles) covering one frame with the given split.
int64_t tiles(const GpNoiseParams& p, int split) {
  const int64_t rows = tile_rows(split), height = p.pixels / p.width;
  return (p.width + kCols - 1) / kCols * ((height + rows - 1) / rows);
}

// The smallest split that gives at least 4 blocks per SM (8 at most). Larger splits cost more than they
// gain: measured on the H100, balancing the last wave of blocks with split 8 (32 features per slice and
// tile) ran the 1024 x 1024 shared case 10% slower than split 1.
int choose_split(const GpNoiseParams& p, int64_t other_blocks) {
  const int64_t want = 4 * static_cast<int64_t>(sm_count());
  for (int s = 1; s < 8; s *= 2)
    if (tiles(p, s) * other_blocks >= want) return s;
  return 8;
}

template <int SPLIT>
void launch(const GpNoiseParams& p, float scale, bool shared, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(tiles(p, SPLIT)), batch = static_cast<unsigned>(p.batch);
  if (shared) {
    const int64_t cb = shared_channel_block(p.channels);
    const dim3 grid(blocks, static_cast<unsigned>((p.channels + cb - 1) / cb), batch);
    if (cb == 4)
      gp_shared_kernel<SPLIT, 4><<<grid, kThreads, 0, stream>>>(p, scale);
    else
      gp_shared_kernel<SPLIT, 8><<<grid, kThreads, 0, stream>>>(p, scale);
  } else {
    const dim3 grid(blocks, static_cast<unsigned>(p.channels), batch);
    gp_independent_kernel<SPLIT><<<grid, kThreads, 0, stream>>>(p, scale);
  }
}

}  // namespace

const char* gp_noise_cuda(const GpNoiseParams& p, uintptr_t stream_handle) {
  if (p.batch == 0 || p.pixels == 0 || p.channels == 0) return nullptr;
  if (p.width <= 0 || p.pixels % p.width != 0) return "pixels not a multiple of the frame width";
  if (p.batch > 65535) return "batch larger than 65535 frames per call";
  if (p.channels > 65535) return "more than 65535 channels";
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const float scale = sqrtf(2.0f / static_cast<float>(p.features));
  const bool shared = p.zb_channels == 1 && p.channels > 1;
  const int64_t cb = shared ? shared_channel_block(p.channels) : 1;
  const int split = choose_split(p, p.batch * ((p.channels + cb - 1) / cb));
  if (tiles(p, split) > 0x7fffffff) return "frame too large";
  switch (split) {
    case 1: launch<1>(p, scale, shared, stream); break;
    case 2: launch<2>(p, scale, shared, stream); break;
    case 4: launch<4>(p, scale, shared, stream); break;
    default: launch<8>(p, scale, shared, stream); break;
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
