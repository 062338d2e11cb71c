// CUDA kernels of the RFF GP noise field (method section 2). Fused: the [pixels, J] matrix never exists.
// Here the FMA kernels (independent and shared features) and the launcher; the tensor-core kernel for
// shared features is in gp_noise_mma.cuh, the helpers all share in gp_noise_tiles.cuh.
//
// A block covers a 2-D tile of 32 columns x tile_rows(SPLIT) rows and is SPLIT slices x (kThreads / SPLIT)
// pixel lanes; every lane evaluates PIX pixels (independent kernel 2, shared 4 by default) against the slice's share of
// each feature tile staged in shared memory, and the slices' partial sums are added in a fixed order at the end
// (deterministic). SPLIT > 1 gives small frames enough blocks to fill the chip.
//
// Phases are taken relative to an integer anchor x0 near the centre of the block's coordinates:
// <z, x> + b = <z, x - x0> + c with c = (<z, x0> + b) mod 2 pi computed once per (block, feature) in
// float64. For the smooth coordinate maps of noise warping, |<z, x - x0> + c| stays within some tens of
// radians, where the cosine unit's own conversion to turns is accurate to ~1e-6 rad: per (pixel,
// feature) two FMAs, the cosine (FMUL.RZ + MUFU.COS) and one FMA per channel. A feature tile whose
// phases could exceed kFastBound (coordinates spread far apart in the block) reduces each phase to
// [-pi, pi] on the FMA pipe first (cos_phase). A block whose coordinates spread beyond kAnchorSpread
// (an occlusion edge beside far-away fresh-noise tiles) takes the anchor 0, i.e. absolute phases, reduced.
// Either way the error stays below the float32 phase rounding of the absolute coordinates.
#include <atomic>

#include "cuda_api.h"
#include "gp_noise_mma.cuh"
#include "gp_noise_tiles.cuh"

namespace warped_fast {
namespace {

// Pixels per lane of the independent kernel (independent FMA/MUFU chains). 2 against 4 on the H200:
// 1x4x128x128 J=3000 62.7 against 63.8 us (split 2 against 4), 1x4x1024x1024 3.38 against 3.41 ms.
constexpr int kPix = WARPED_FAST_GP_INDEP_PIX;
constexpr int kIndepFeat = WARPED_FAST_GP_INDEP_FEATURES;  // features per thread of an independent-kernel tile
// Pixels per lane of the shared-feature kernel with CB channels: more pixels share each feature's
// shared-memory loads and the loop's overhead. For CB = 4 the knob WARPED_FAST_GP_SHARED_PIX: 8 (122
// registers, 2 blocks per SM; 8.41 instead of 8.81 instructions per cosine) ran 1x4x1024x1024 J=3000 in
// 1.073 against 1.088 ms on the H200, but 1x4x128x128 in 44 against 27 us (a quarter of the blocks).
template <int CB>
__host__ __device__ constexpr int shared_pix() {
  return CB <= 4 ? WARPED_FAST_GP_SHARED_PIX : 4;
}
static_assert(kPix == 2 || kPix == 4 || kPix == 8, "WARPED_FAST_GP_INDEP_PIX: 2, 4 or 8");
static_assert(shared_pix<4>() == 2 || shared_pix<4>() == 4 || shared_pix<4>() == 8,
              "WARPED_FAST_GP_SHARED_PIX: 2, 4 or 8");

// Rows of a block's tile: lanes / 32 rows per pixel slot, pix slots.
__host__ __device__ constexpr int tile_rows(int split, int pix) { return pix * (kThreads / split) / kCols; }

// Where a lane's pixels lie: column `col`, rows row0 + q * rows_per_slot (q < PIX).
struct TilePos {
  int64_t col, row0, height;
};

template <int SPLIT, int PIX>
__device__ __forceinline__ TilePos tile_pos(const GpNoiseParams& p) {
  constexpr int lanes = kThreads / SPLIT;
  const int lane = threadIdx.x % lanes;
  const int64_t tiles_x = (p.width + kCols - 1) / kCols;
  return {(blockIdx.x % tiles_x) * kCols + lane % kCols, (blockIdx.x / tiles_x) * tile_rows(SPLIT, PIX) + lane / kCols,
          p.pixels / p.width};
}

// In-frame index of the lane's pixel q, or -1 outside the frame.
template <int SPLIT>
__device__ __forceinline__ int64_t pixel_index(const GpNoiseParams& p, const TilePos& t, int q) {
  const int64_t row = t.row0 + q * (kThreads / SPLIT / kCols);
  return (t.col < p.width && row < t.height) ? row * p.width + t.col : -1;
}

// Loads the lane's PIX coordinates as offsets from the block's anchor (0 outside the frame).
template <int SPLIT, int PIX>
__device__ __forceinline__ Anchor load_tile_coords(const GpNoiseParams& p, int64_t n, const TilePos& t,
                                                   float (&dx)[PIX], float (&dy)[PIX]) {
  float lo_x = INFINITY, hi_x = -INFINITY, lo_y = INFINITY, hi_y = -INFINITY;
#pragma unroll
  for (int q = 0; q < PIX; ++q) {
    const int64_t pix = pixel_index<SPLIT>(p, t, q);
    if (pix >= 0) {
      const float2 c = reinterpret_cast<const float2*>(p.coords)[n * p.pixels + pix];
      dx[q] = c.x, dy[q] = c.y;
      lo_x = fminf(lo_x, c.x), hi_x = fmaxf(hi_x, c.x), lo_y = fminf(lo_y, c.y), hi_y = fmaxf(hi_y, c.y);
    } else {
      dx[q] = dy[q] = 0.f;
    }
  }
  const Anchor a = block_anchor(lo_x, hi_x, lo_y, hi_y);
#pragma unroll
  for (int q = 0; q < PIX; ++q) {
    if (pixel_index<SPLIT>(p, t, q) >= 0) dx[q] -= a.x0, dy[q] -= a.y0;
  }
  return a;
}

constexpr int kPolyCos = WARPED_FAST_GP_POLY_COS;  // of each 16 cosines (4 features x kPix), by polynomial
static_assert(kPolyCos >= 0 && kPolyCos <= 16 && (kPolyCos == 0 || kPix == 4),
              "WARPED_FAST_GP_POLY_COS: 0 to 16 of 16, with 4 pixels per lane");

// acc[q] += w_k cos(<z_k, dx_q> + c_k) over features [k0, k1) of an independent-channel tile. With
// kPolyCos > 0, unreduced tiles take kPolyCos of every 16 cosines (spread over the 4-feature step) on
// the FMA pipe (cos_fma_pipe), the rest on the SFU.
template <bool FAST>
__device__ __forceinline__ void accumulate_independent(const float4* feat, int k0, int k1, const float (&dx)[kPix],
                                                       const float (&dy)[kPix], float (&acc)[kPix]) {
  if (FAST && kPolyCos > 0) {
    for (; k0 + 4 <= k1; k0 += 4) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const float4 f = feat[k0 + kk];
#pragma unroll
        for (int q = 0; q < kPix; ++q) {
          const float ph = fmaf(f.x, dx[q], fmaf(f.y, dy[q], f.z));
          const bool poly = (kk * kPix + q) * kPolyCos % 16 < kPolyCos;  // compile-time after unrolling
          acc[q] = fmaf(f.w, poly ? cos_fma_pipe(ph) : __cosf(ph), acc[q]);
        }
      }
    }
  }
  WF_UNROLL(WARPED_FAST_GP_FMA_UNROLL)
  for (int k = k0; k < k1; ++k) {
    const float4 f = feat[k];
#pragma unroll
    for (int q = 0; q < kPix; ++q) acc[q] = fmaf(f.w, cos_local<FAST>(fmaf(f.x, dx[q], fmaf(f.y, dy[q], f.z))), acc[q]);
  }
}

// Independent (z, b, w) per channel. grid = (tiles, C, N). Double-buffered feature tiles: one barrier per
// tile, and the next tile's loads are in flight during the current one's cosines. A tile is kIndepFeat
// features per thread (kIndepFeat > 1: fewer barriers per cosine, for high splits).
template <int SPLIT>
__global__ void __launch_bounds__(kThreads, 4) gp_independent_kernel(GpNoiseParams p, float scale) {
  constexpr int F = kIndepFeat, tile = F * kTile;
  constexpr int lanes = kThreads / SPLIT, per_slice = tile / SPLIT;
  static_assert(kTile == kThreads, "kIndepFeat features per thread and tile");
  constexpr int feat_bytes = 2 * tile * 16, red_bytes = (SPLIT - 1) * kPix * lanes * 4;
  __shared__ __align__(16) unsigned char smem[feat_bytes > red_bytes ? feat_bytes : red_bytes];
  float4(*feat)[tile] = reinterpret_cast<float4(*)[tile]>(smem);  // (zx, zy, c, w)
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
  // Tile 0 after the coordinates (H200, 1x4x1024x1024 J=3000): 3.44 ms; fetched first, as the shared
  // kernel does (there 1.09 against 1.15 ms), 3.65 ms. Small frames take high splits, whose blocks are
  // short: there fetching first may pay (knob WARPED_FAST_GP_EARLY_FETCH_SPLIT).
  constexpr bool early = SPLIT >= WARPED_FAST_GP_EARLY_FETCH_SPLIT;
  pdl_wait();
  RawFeature<1> next[F];
  const auto fetch_tile = [&](int64_t j0) {  // this thread's features of the tile starting at j0
#pragma unroll
    for (int f = 0; f < F; ++f) next[f] = fetch(j0 + f * kTile + threadIdx.x);
  };
  if (early) fetch_tile(0);
  const TilePos t = tile_pos<SPLIT, kPix>(p);
  float dx[kPix], dy[kPix], acc[kPix];
  const Anchor a = load_tile_coords<SPLIT, kPix>(p, n, t, dx, dy);
#pragma unroll
  for (int q = 0; q < kPix; ++q) acc[q] = 0.f;
  if (!early) fetch_tile(0);
  int buf = 0;
  for (int64_t j0 = 0; j0 < J; j0 += tile, buf ^= 1) {
    bool far = false;
#pragma unroll
    for (int f = 0; f < F; ++f) {
      const float ph = anchored_phase(next[f].zx, next[f].zy, next[f].b, a);
      feat[buf][f * kTile + threadIdx.x] = make_float4(next[f].zx, next[f].zy, ph, next[f].w[0]);
      far = far || needs_reduction(next[f].zx, next[f].zy, ph, a);
    }
    const bool reduce = __syncthreads_or(far);
    if (j0 + tile < J)
      fetch_tile(j0 + tile);
    else
      pdl_trigger();  // the last tile: the next kernel may start launching
    const int k0 = slice * per_slice, k1 = min(k0 + per_slice, static_cast<int>(J - j0 < tile ? J - j0 : tile));
    if (reduce)
      accumulate_independent<false>(feat[buf], k0, k1, dx, dy, acc);
    else
      accumulate_independent<true>(feat[buf], k0, k1, dx, dy, acc);
  }
  reduce_slices<SPLIT, kPix>(acc, reinterpret_cast<float*>(smem));
  if (slice != 0) return;
#pragma unroll
  for (int q = 0; q < kPix; ++q) {
    const int64_t pix = pixel_index<SPLIT>(p, t, q);
    if (pix >= 0) p.out[(n * p.channels + c) * p.pixels + pix] = scale * acc[q];
  }
}

// acc[q, c] += w_k[c] cos(<z_k, dx_q> + c_k) over features [k0, k1) of a shared-feature tile.
template <bool FAST, int CB, int PIX>
__device__ __forceinline__ void accumulate_shared(const float4* zb, const float4 (*ws)[CB / 4], int k0, int k1,
                                                  const float (&dx)[PIX], const float (&dy)[PIX],
                                                  float (&acc)[PIX * CB]) {
  WF_UNROLL(WARPED_FAST_GP_FMA_UNROLL)
  for (int k = k0; k < k1; ++k) {
    const float4 f = zb[k];
    float wk[CB];
#pragma unroll
    for (int v = 0; v < CB / 4; ++v) {
      const float4 w4 = ws[k][v];
      wk[4 * v] = w4.x, wk[4 * v + 1] = w4.y, wk[4 * v + 2] = w4.z, wk[4 * v + 3] = w4.w;
    }
#pragma unroll
    for (int q = 0; q < PIX; ++q) {
      const float cs = cos_local<FAST>(fmaf(f.x, dx[q], fmaf(f.y, dy[q], f.z)));
#pragma unroll
      for (int c = 0; c < CB; ++c) acc[q * CB + c] = fmaf(wk[c], cs, acc[q * CB + c]);
    }
  }
}

// Shared (z, b), per-channel w: one cosine per (pixel, feature) feeds CB channels.
// grid = (tiles, ceil(C / CB), N). Double-buffered like the independent kernel.
// 3 blocks per SM for CB = 4: 4 (64 registers, no spill in the loops) ran the 1x4x1024x1024 J = 3000
// case slower on the H200, 1.20 against 1.09 ms, though it fills 1.94 waves instead of 2.59.
template <int SPLIT, int CB>
__global__ void __launch_bounds__(kThreads, CB <= 4 ? WARPED_FAST_GP_SHARED_BLOCKS : 2)
    gp_shared_kernel(GpNoiseParams p, float scale) {
  constexpr int lanes = kThreads / SPLIT, per_slice = kTile / SPLIT, PIX = shared_pix<CB>();
  static_assert(kTile == kThreads, "one feature per thread and tile");
  constexpr int feat_bytes = 2 * kTile * 16 * (1 + CB / 4), red_bytes = (SPLIT - 1) * PIX * CB * lanes * 4;
  __shared__ __align__(16) unsigned char smem[feat_bytes > red_bytes ? feat_bytes : red_bytes];
  float4(*zb)[kTile] = reinterpret_cast<float4(*)[kTile]>(smem);  // (zx, zy, c, 0)
  float4(*ws)[kTile][CB / 4] = reinterpret_cast<float4(*)[kTile][CB / 4]>(smem + 2 * kTile * 16);
  const int64_t c0 = int64_t(blockIdx.y) * CB, n = blockIdx.z;
  const int slice = threadIdx.x / lanes;
  const int64_t J = p.features, C = p.channels;
  pdl_wait();
  RawFeature<CB> next = fetch_shared<CB>(p, c0, threadIdx.x);  // first: overlaps the prologue
  const TilePos t = tile_pos<SPLIT, PIX>(p);
  float dx[PIX], dy[PIX], acc[PIX * CB];
  const Anchor a = load_tile_coords<SPLIT, PIX>(p, n, t, dx, dy);
#pragma unroll
  for (int i = 0; i < PIX * CB; ++i) acc[i] = 0.f;
  int buf = 0;
  for (int64_t j0 = 0; j0 < J; j0 += kTile, buf ^= 1) {
    const float ph = anchored_phase(next.zx, next.zy, next.b, a);
    zb[buf][threadIdx.x] = make_float4(next.zx, next.zy, ph, 0.f);
#pragma unroll
    for (int v = 0; v < CB / 4; ++v)
      ws[buf][threadIdx.x][v] = make_float4(next.w[4 * v], next.w[4 * v + 1], next.w[4 * v + 2], next.w[4 * v + 3]);
    const bool reduce = __syncthreads_or(needs_reduction(next.zx, next.zy, ph, a));
    if (j0 + kTile < J)
      next = fetch_shared<CB>(p, c0, j0 + kTile + threadIdx.x);
    else
      pdl_trigger();
    const int k0 = slice * per_slice, k1 = min(k0 + per_slice, static_cast<int>(J - j0 < kTile ? J - j0 : kTile));
    if (reduce)
      accumulate_shared<false, CB, PIX>(zb[buf], ws[buf], k0, k1, dx, dy, acc);
    else
      accumulate_shared<true, CB, PIX>(zb[buf], ws[buf], k0, k1, dx, dy, acc);
  }
  reduce_slices<SPLIT, PIX * CB>(acc, reinterpret_cast<float*>(smem));
  if (slice != 0) return;
#pragma unroll
  for (int q = 0; q < PIX; ++q) {
    const int64_t pix = pixel_index<SPLIT>(p, t, q);
    if (pix < 0) continue;
#pragma unroll
    for (int c = 0; c < CB; ++c)
      if (c0 + c < C) p.out[(n * C + c0 + c) * p.pixels + pix] = scale * acc[q * CB + c];
  }
}

// QUERY(device) for the current device, cached per device; `fallback` when the device cannot be read or
// QUERY answers 0 (its "cannot tell", never cached).
template <int (*QUERY)(int)>
int per_device(int fallback) {
  static std::atomic<int> cache[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return fallback;
  }
  int value = dev >= 0 && dev < 64 ? cache[dev].load(std::memory_order_relaxed) : 0;
  if (value == 0) {
    value = QUERY(dev);
    if (value == 0) return fallback;
    if (dev >= 0 && dev < 64) cache[dev].store(value, std::memory_order_relaxed);
  }
  return value;
}

// Device attribute ATTR of `dev` (0 when it cannot be read).
template <cudaDeviceAttr ATTR>
int read_attribute(int dev) {
  int value = 0;
  if (cudaDeviceGetAttribute(&value, ATTR, dev) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return value;
}

// Multiprocessors of the current device (the split only tunes occupancy).
int sm_count() { return per_device<read_attribute<cudaDevAttrMultiProcessorCount>>(132); }

// The current device's compute capability major version (0 when it cannot be read).
int compute_major() { return per_device<read_attribute<cudaDevAttrComputeCapabilityMajor>>(0); }

// Whether the current device has the tf32 tensor cores of the tensor-core kernel (sm_80 or newer).
bool has_tf32_mma() { return compute_major() >= 8; }

// Channels per block of the shared-feature kernel.
int64_t shared_channel_block(int64_t channels) { return channels <= 4 ? 4 : 8; }

bool shared_features(const GpNoiseParams& p) { return p.zb_channels == 1 && p.channels > 1; }

// Whether the call runs the tensor-core kernel: asked for, shared features, and a device that has them.
bool use_mma(const GpNoiseParams& p, int kernel) {
  return shared_features(p) && kernel == kGpKernelTensorCores && has_tf32_mma();
}

// Bytes of the tensor-core kernel's packed operands: every 256-feature tile of every channel block.
int64_t mma_workspace_bytes(const GpNoiseParams& p) {
  const int64_t cb = shared_channel_block(p.channels), tiles_j = (p.features + kTile - 1) / kTile;
  const int64_t per_tile = cb == 4 ? sizeof(MmaOperands<1>) : sizeof(MmaOperands<2>);
  return tiles_j * ((p.channels + cb - 1) / cb) * per_tile;
}

// Blocks (2-D tiles of 32 columns x `rows`) covering one frame.
int64_t tiles(const GpNoiseParams& p, int rows) {
  const int64_t height = p.pixels / p.width;
  return (p.width + kCols - 1) / kCols * ((height + rows - 1) / rows);
}

// Rows of a launch's tiles: the tensor-core kernel's, or the FMA kernel's for its pixels per lane.
int rows_of(int split, bool mma, const GpNoiseParams& p) {
  if (mma) return mma_tile_rows(split);
  const int pix = !shared_features(p)                     ? kPix
                  : shared_channel_block(p.channels) == 4 ? shared_pix<4>()
                                                          : shared_pix<8>();
  return tile_rows(split, pix);
}

// The feature split of a launch. FMA kernels: the split with the least work on the busiest SM,
// ceil(blocks / SMs) x pixels per block, weighted by each split's cost per cosine at full load and by a
// penalty where that SM holds a single block (nothing runs while its slices wait at a barrier). The
// weights are measured with bench/tune_gp_noise.py on the H100 (1x4x1024x1024 J=3000: splits 2, 4 and 8
// 1%, 4% and 11% slower than split 1; 1x4x128x128 independent: split 2, 4 and 8 at 65, 64 and 68 us,
// split 4 being the one this picks). Tensor-core kernel: the smallest split giving at least 4 blocks per
// SM, at most 4 (on the H200 its 1x4x128x128 J=3000 case took 0.035 ms with split 4, 0.042 with split 8).
int choose_split(const GpNoiseParams& p, int64_t other_blocks, bool mma) {
  const int64_t sms = sm_count();
  if (mma) {
    for (int s = 1; s < 4; s *= 2)
      if (tiles(p, rows_of(s, true, p)) * other_blocks >= 4 * sms) return s;
    return 4;
  }
  constexpr double per_cosine[4] = {1.0, 1.02, 1.05, 1.12};  // splits 1, 2, 4, 8
  int best = 1;
  double best_cost = 0.0;
  for (int s = 1, i = 0; s <= 8; s *= 2, ++i) {
    const int rows = rows_of(s, false, p);
    const int64_t per_sm = (tiles(p, rows) * other_blocks + sms - 1) / sms;
    const double cost = static_cast<double>(per_sm) * rows * per_cosine[i] * (per_sm == 1 ? 1.06 : 1.0);
    if (s == 1 || cost < best_cost) best = s, best_cost = cost;
  }
  return best;
}

// The tensor-core kernel: pack the operands into `workspace`, then evaluate.
template <int SPLIT, int NT>
void launch_mma(const GpNoiseParams& p, float scale, const dim3& grid, void* workspace, cudaStream_t stream) {
  auto* ops = static_cast<MmaOperands<NT>*>(workspace);
  const dim3 pack_grid(static_cast<unsigned>((p.features + kTile - 1) / kTile), grid.y);
  gp_pack_kernel<NT><<<pack_grid, kThreads, 0, stream>>>(p, ops);
  gp_shared_mma_kernel<SPLIT, NT><<<grid, kThreads, 0, stream>>>(p, scale, ops);
}

// The PTX version the FMA kernels running on the current device were compiled from (0 when it cannot be
// read). Every FMA kernel is compiled for the same architectures: one of them answers for all.
int fma_ptx_version(int) {
  cudaFuncAttributes a{};
  if (cudaFuncGetAttributes(&a, gp_independent_kernel<1>) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return a.ptxVersion;
}

// Whether the FMA kernels running on the current device wait for the previous kernel (pdl_wait): code
// compiled for sm_90 or newer on an sm_90+ device. A build for older architectures only (JIT-compiled from
// their PTX on a Hopper) has no wait in it, so it is never launched as a dependent launch.
bool fma_kernels_wait() { return compute_major() >= 9 && per_device<fma_ptx_version>(0) >= 90; }

// An FMA kernel's launch: with WARPED_FAST_GP_PDL where the kernels wait for it (fma_kernels_wait), as a
// programmatic dependent launch.
void launch_fma(void (*kernel)(GpNoiseParams, float), const dim3& grid, cudaStream_t stream, const GpNoiseParams& p,
                float scale) {
  if (WARPED_FAST_GP_PDL && fma_kernels_wait()) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = dim3(kThreads), cfg.dynamicSmemBytes = 0, cfg.stream = stream;
    cfg.attrs = attr, cfg.numAttrs = 1;
    cudaLaunchKernelEx(&cfg, kernel, p, scale);  // an error is read by the caller's cudaGetLastError
  } else {
    kernel<<<grid, kThreads, 0, stream>>>(p, scale);
  }
}

template <int SPLIT>
void launch(const GpNoiseParams& p, float scale, bool shared, bool mma, void* workspace, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(tiles(p, rows_of(SPLIT, mma, p))),
                 batch = static_cast<unsigned>(p.batch);
  if (shared) {
    const int64_t cb = shared_channel_block(p.channels);
    const dim3 grid(blocks, static_cast<unsigned>((p.channels + cb - 1) / cb), batch);
    if (mma && cb == 4)
      launch_mma<SPLIT, 1>(p, scale, grid, workspace, stream);
    else if (mma)
      launch_mma<SPLIT, 2>(p, scale, grid, workspace, stream);
    else if (cb == 4)
      launch_fma(gp_shared_kernel<SPLIT, 4>, grid, stream, p, scale);
    else
      launch_fma(gp_shared_kernel<SPLIT, 8>, grid, stream, p, scale);
  } else {
    const dim3 grid(blocks, static_cast<unsigned>(p.channels), batch);
    launch_fma(gp_independent_kernel<SPLIT>, grid, stream, p, scale);
  }
}

}  // namespace

int64_t gp_noise_cuda_workspace(const GpNoiseParams& p, int kernel) {
  if (p.batch == 0 || p.pixels == 0 || p.channels == 0 || !use_mma(p, kernel)) return 0;
  return mma_workspace_bytes(p);
}

const char* gp_noise_cuda(const GpNoiseParams& p, uintptr_t stream_handle, int kernel, int split_override,
                          void* workspace, int64_t workspace_bytes) {
  if (p.batch == 0 || p.pixels == 0 || p.channels == 0) return nullptr;
  if (p.width <= 0 || p.pixels % p.width != 0) return "pixels not a multiple of the frame width";
  if (p.batch > 65535) return "batch larger than 65535 frames per call";
  if (p.channels > 65535) return "more than 65535 channels";
  if (kernel < kGpKernelAuto || kernel > kGpKernelTensorCores) return "unknown kernel choice";
  if (split_override != 0 && split_override != 1 && split_override != 2 && split_override != 4 && split_override != 8)
    return "split must be 0 (automatic), 1, 2, 4 or 8";
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const float scale = sqrtf(2.0f / static_cast<float>(p.features));
  const bool shared = shared_features(p);
  // auto: the FMA kernel (measured best so far); tensor cores only where the device has them
  const bool mma = use_mma(p, kernel);
  if (mma && (workspace == nullptr || workspace_bytes < mma_workspace_bytes(p)))
    return "workspace smaller than gp_noise_cuda_workspace()";
  const int64_t cb = shared ? shared_channel_block(p.channels) : 1;
  const int split = split_override ? split_override : choose_split(p, p.batch * ((p.channels + cb - 1) / cb), mma);
  if (mma && !mma_split_fits(split)) return "split too large for the tensor-core kernel's m-tiles per warp";
  if (tiles(p, rows_of(split, mma, p)) > 0x7fffffff) return "frame too large";
  switch (split) {
    case 1:
      launch<1>(p, scale, shared, mma, workspace, stream);
      break;
    case 2:
      launch<2>(p, scale, shared, mma, workspace, stream);
      break;
    case 4:
      launch<4>(p, scale, shared, mma, workspace, stream);
      break;
    default:
      launch<8>(p, scale, shared, mma, workspace, stream);
      break;
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
