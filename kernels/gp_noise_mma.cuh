// Shared-feature gp_noise with the phases and the channel sums on tensor cores (sm_80+).
//
// The FMA kernel issues ~8.75 instructions per cosine with 4 channels (2 phase FMAs, FMUL.RZ + MUFU,
// 4 channel FMAs and shared loads), more than the 8 clocks of a warp-wide cosine on the SFU. Here a
// warp holds 16-pixel x 8-feature blocks in mma.m16n8k8 fragments and issues, per cosine, the cosine
// (FMUL.RZ + MUFU), its split into two tf32 halves (LOP, FADD) and a share of three mma: 6.0 in all.
//
// Phases: D1 = A1 B1 + C1, one mma per 128 phases, float32-accurate by splitting each operand into
// tf32 halves and packing the four cross products of x and y into K = 8:
//   A1[pixel]   = (dx_hi, dx_hi, dx_lo, dx_lo, dy_hi, dy_hi, dy_lo, dy_lo)   (offsets from the anchor)
//   B1[feature] = (zx_hi, zx_lo, zx_hi, zx_lo, zy_hi, zy_lo, zy_hi, zy_lo)
//   C1          = c, the feature's phase at the anchor (float32 accumulator input).
// Channel sums: acc += cos_hi W + cos_lo W with W[feature] = (w_hi[0..3], w_lo[0..3]) in the 8 columns,
// so acc[:, ch] + acc[:, ch + 4] = sum_j cos_j w_j[ch] to ~2^-21 relative per term. The accumulator
// fragment D1 (columns 2t, 2t + 1 of lane t) is reused as the A operand (columns t, t + 4) by storing
// features 2t and 2t + 1 as W's rows t and t + 4. Each feature tile's sum is added to a float32 total
// with a rounding add, so the tensor cores' truncating accumulation spans 256 features at most.
// A tile whose phases could exceed kMmaFastBound takes the phases on the FMA pipe, reduced to
// [-pi, pi] (cos_phase), like the FMA kernel. The tf32 halves of z and W, the same for every block, are
// packed once per call (gp_pack_kernel); blocks copy them tile by tile with cp.async.
//
// Variant WARPED_FAST_GP_MMA_FMA_PHASES=1 (a tuning knob, for bench/ab_gp_noise.sh): the phases on the
// FMA pipe from float32 offsets and raw z, as the FMA kernel takes them (2 FFMA per cosine), and only
// the channel sums on the tensor cores: no mma in a phase's dependency chain, 7.0 to 7.4 SASS
// instructions per cosine in the k-step loop against the FMA kernel's 8.75.
#pragma once
#include "gp_noise_tiles.cuh"

namespace warped_fast {
namespace {

constexpr int kMmaTiles = WARPED_FAST_GP_MMA_TILES;  // 16-pixel m-tiles per warp
constexpr int kWfStride = 34;                        // float2 per k-step of a staged W tile (32 + 2 of padding)
// Largest unreduced |phase|: split-tf32 phases err by ~2^-22 |<z, dx>| + 1 ulp (2e-5 rad at 64); FMA
// phases as in the FMA kernel.
constexpr float kMmaFastBound = WARPED_FAST_GP_MMA_FMA_PHASES ? kFastBound : 64.0f;

static_assert(kMmaTiles >= 1, "WARPED_FAST_GP_MMA_TILES: at least one m-tile per warp");

// Rows of the block's tile: (warps per slice) x kMmaTiles x 16 pixels, 32 per row.
__host__ __device__ constexpr int mma_tile_rows(int split) { return kThreads / 32 / split * kMmaTiles * 16 / kCols; }

// Whether a slice's m-tiles fill whole 32-column rows (two 16-pixel m-tiles each) at this split.
__host__ __device__ constexpr bool mma_split_fits(int split) { return (kThreads / 32 / split * kMmaTiles) % 2 == 0; }

// x rounded to the nearest tf32, ties away from zero (as cvt.rna.tf32.f32) for finite x: the low 13
// bits of the result are zero. Two integer instructions; cvt.rna adds an infinity test.
__device__ __forceinline__ float to_tf32(float x) {
  return __uint_as_float((__float_as_uint(x) + 0x1000u) & 0xffffe000u);
}

// x truncated to tf32: one LOP (x - tf32_trunc(x) is exact in float32).
__device__ __forceinline__ float tf32_trunc(float x) { return __uint_as_float(__float_as_uint(x) & 0xffffe000u); }

// d = a b + c on one m16n8k8 tf32 tensor-core tile (fragments as in the PTX ISA, float32 accumulate).
// (Compiled for sm_80 and newer only; the launcher never runs this kernel on older devices.)
__device__ __forceinline__ void mma_tf32(float (&d)[4], const float (&a)[4], float b0, float b1, const float (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])), "r"(__float_as_uint(a[3])),
        "r"(__float_as_uint(b0)), "r"(__float_as_uint(b1)), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

// The operands of one 256-feature tile in the layouts the fragments read, the same for every block:
// packed once per call by gp_pack_kernel and copied to shared memory by each block (NT groups of 4
// channels):
//   zs[f]   = (zx_hi, zy_hi, zx_lo, zy_lo): B1 rows (t, t + 4) of lane t are .xy (t even) or .zw
//   zr[f]   = (zx, zy) instead with FMA phases: lane t of k-step s reads float4 4 s + t (features
//             8 s + 2 t and 8 s + 2 t + 1)
//   wf[nt][s][4 n + t] = W of features 8 s + 2 t and 8 s + 2 t + 1, column n: the B2 pair of lane
//                        4 n + t in k-step s (loads of a k-step are 32 consecutive float2; the 2 float2
//                        of padding per k-step keep the packing stores' bank conflicts 2-way)
template <int NT>
struct MmaOperands {
#if WARPED_FAST_GP_MMA_FMA_PHASES
  float2 zr[kTile];
#else
  float4 zs[kTile];
#endif
  float2 wf[NT][kTile / 8][kWfStride];
};

// A block's staged tile: the operands and, per block, the features' phases at the block's anchor:
//   cp[4 s + t] = (c, c', c, c') of features 8 s + 2 t, + 1: the C1 fragment of lane t in k-step s
template <int NT>
struct MmaTile {
  MmaOperands<NT> op;
  float4 cp[kTile / 2];
};

// Packs feature f of a tile (raw values in `r`) into tf32 halves.
template <int NT>
__device__ __forceinline__ void pack_feature(MmaOperands<NT>& op, int f, const RawFeature<4 * NT>& r) {
#if WARPED_FAST_GP_MMA_FMA_PHASES
  op.zr[f] = make_float2(r.zx, r.zy);
#else
  const float zxh = to_tf32(r.zx), zyh = to_tf32(r.zy);
  op.zs[f] = make_float4(zxh, zyh, to_tf32(r.zx - zxh), to_tf32(r.zy - zyh));
#endif
  const int s = f / 8, t = (f % 8) / 2, h = f % 2;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int ch = 0; ch < 4; ++ch) {
      const float w = r.w[4 * nt + ch], hi = to_tf32(w);
      reinterpret_cast<float*>(&op.wf[nt][s][4 * ch + t])[h] = hi;
      reinterpret_cast<float*>(&op.wf[nt][s][4 * (ch + 4) + t])[h] = to_tf32(w - hi);
    }
  }
}

// ops[cb * gridDim.x + tile] = the packed operands of channel block cb. grid = (tiles of J, blocks of C).
template <int NT>
__global__ void __launch_bounds__(kThreads) gp_pack_kernel(GpNoiseParams p, MmaOperands<NT>* ops) {
  const int64_t c0 = int64_t(blockIdx.y) * 4 * NT, j = int64_t(blockIdx.x) * kTile + threadIdx.x;
  pack_feature<NT>(ops[int64_t(blockIdx.y) * gridDim.x + blockIdx.x], threadIdx.x, fetch_shared<4 * NT>(p, c0, j));
}

// 16 bytes global -> shared without registers (sm_80+); the copies land by cp_async_wait_all().
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(gmem) : "memory");
#endif
}

__device__ __forceinline__ void cp_async_wait_all() {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

// Starts the copy of a tile's packed operands into shared memory (every thread its share).
template <int NT>
__device__ __forceinline__ void copy_operands_async(MmaOperands<NT>& dst, const MmaOperands<NT>& src) {
  static_assert(sizeof(MmaOperands<NT>) % 16 == 0, "16-byte chunks");
  constexpr int chunks = static_cast<int>(sizeof(MmaOperands<NT>) / 16);
  float4* d = reinterpret_cast<float4*>(&dst);
  const float4* g = reinterpret_cast<const float4*>(&src);
#pragma unroll
  for (int i = 0; i < (chunks + kThreads - 1) / kThreads; ++i) {
    const int k = i * kThreads + threadIdx.x;
    if (k < chunks) cp_async16(d + k, g + k);
  }
}

// In-frame index of the lane's pixel in row g + 8 r of m-tile m (-1 outside the frame).
template <int SPLIT>
__device__ __forceinline__ int64_t mma_pixel(const GpNoiseParams& p, int m, int r) {
  constexpr int warps = kThreads / 32 / SPLIT;
  const int mt = threadIdx.x / 32 % warps * kMmaTiles + m, g = threadIdx.x % 32 / 4;
  const int64_t tiles_x = (p.width + kCols - 1) / kCols;
  const int64_t row = (blockIdx.x / tiles_x) * mma_tile_rows(SPLIT) + mt / 2;
  const int64_t col = (blockIdx.x % tiles_x) * kCols + (mt % 2) * 16 + g + 8 * r;
  return (col < p.width && row < p.pixels / p.width) ? row * p.width + col : -1;
}

// The lane's coordinates in rows g, g + 8 of each m-tile, less (x0, y0) (0 outside the frame); widens
// the box (lo_x, hi_x, lo_y, hi_y) by the in-frame ones.
template <int SPLIT>
__device__ __forceinline__ void mma_coords(const GpNoiseParams& p, int64_t n, float x0, float y0,
                                           float (&dx)[kMmaTiles][2], float (&dy)[kMmaTiles][2], float4& box) {
#pragma unroll
  for (int m = 0; m < kMmaTiles; ++m) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t pix = mma_pixel<SPLIT>(p, m, r);
      dx[m][r] = dy[m][r] = 0.f;
      if (pix < 0) continue;
      const float2 c = reinterpret_cast<const float2*>(p.coords)[n * p.pixels + pix];
      dx[m][r] = c.x - x0, dy[m][r] = c.y - y0;
      box.x = fminf(box.x, c.x), box.y = fmaxf(box.y, c.x), box.z = fminf(box.z, c.y), box.w = fmaxf(box.w, c.y);
    }
  }
}

// acc[m] += cos(phases of the lane's fragment) x W over the k-steps [s0, s1) of a staged tile.
// FAST: phases by mma from the split offsets a1; else on the FMA pipe, reduced to [-pi, pi], from the
// coordinates and z (j0: the tile's first feature) reloaded from global memory: such tiles are rare.
// With FMA phases, a1 holds the float32 offsets (dx rows g, g + 8, then dy) and every tile takes its
// phases on the FMA pipe from the staged z; FAST only says whether they are reduced first.
template <bool FAST, int SPLIT, int NT>
__device__ __forceinline__ void accumulate_mma(const MmaTile<NT>& tile, int s0, int s1, const float (&a1)[kMmaTiles][4],
                                               const GpNoiseParams& p, int64_t n, int64_t j0, const Anchor& a,
                                               float (&acc)[kMmaTiles][NT][4]) {
  const int t = threadIdx.x % 4;
#if WARPED_FAST_GP_MMA_FMA_PHASES
  const float4* zr = reinterpret_cast<const float4*>(tile.op.zr) + t;  // + 4 per k-step
#else
  const int g = threadIdx.x % 32 / 4;
  float dx[kMmaTiles][2], dy[kMmaTiles][2];
  if (!FAST) {
    float4 box;
    mma_coords<SPLIT>(p, n, a.x0, a.y0, dx, dy, box);
  }
  const float2* zs = reinterpret_cast<const float2*>(tile.op.zs) + 2 * g + (t & 1);  // + 16 per k-step
#endif
  const float4* cp = tile.cp + t;                              // + 4
  const float2* wf = &tile.op.wf[0][0][0] + threadIdx.x % 32;  // + kWfStride
#if WARPED_FAST_GP_MMA_SPLIT_ACC
  float acc_lo[kMmaTiles][NT][4] = {};  // the lo halves' own chain of mma, added to acc at the end
#endif
#if WARPED_FAST_GP_MMA_UNROLL > 0
  WF_UNROLL(WARPED_FAST_GP_MMA_UNROLL)
#endif
  for (int s = s0; s < s1; ++s) {
    float2 wb[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) wb[nt] = wf[(nt * kTile / 8 + s) * kWfStride];
    const float4 c4 = cp[4 * s];
    float ph[kMmaTiles][4];
#if WARPED_FAST_GP_MMA_FMA_PHASES
    const float4 z2 = zr[4 * s];  // (zx, zy) of features 8 s + 2 t, 8 s + 2 t + 1
#pragma unroll
    for (int m = 0; m < kMmaTiles; ++m) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        ph[m][2 * r] = fmaf(z2.x, a1[m][r], fmaf(z2.y, a1[m][r + 2], c4.x));
        ph[m][2 * r + 1] = fmaf(z2.z, a1[m][r], fmaf(z2.w, a1[m][r + 2], c4.y));
      }
    }
#else
    if (FAST) {
      const float2 b = zs[16 * s];
      const float c1[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
      for (int m = 0; m < kMmaTiles; ++m) mma_tf32(ph[m], a1[m], b.x, b.y, c1);
    } else {
      const int64_t j = j0 + 8 * s + 2 * t;  // (zx, zy) of features j and j + 1 (0 past J: w = 0 there)
      const float4 z2 =
          make_float4(j < p.features ? p.z[2 * j] : 0.f, j < p.features ? p.z[2 * j + 1] : 0.f,
                      j + 1 < p.features ? p.z[2 * j + 2] : 0.f, j + 1 < p.features ? p.z[2 * j + 3] : 0.f);
#pragma unroll
      for (int m = 0; m < kMmaTiles; ++m) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          ph[m][2 * r] = fmaf(z2.x, dx[m][r], fmaf(z2.y, dy[m][r], c4.x));
          ph[m][2 * r + 1] = fmaf(z2.z, dx[m][r], fmaf(z2.w, dy[m][r], c4.y));
        }
      }
    }
#endif
#pragma unroll
    for (int m = 0; m < kMmaTiles; ++m) {
      // The tensor cores read the top 19 bits of a tf32 operand: cs is its own hi half, cs - hi the lo.
      float hi[4], lo[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        hi[i] = cos_local<FAST>(ph[m][i]);
        lo[i] = hi[i] - tf32_trunc(hi[i]);
      }
      // D1 element i = (row g + 8 (i / 2), feature 2t + i % 2) -> A2 (row, k = t + 4 (i % 2)).
      const float a_hi[4] = {hi[0], hi[2], hi[1], hi[3]}, a_lo[4] = {lo[0], lo[2], lo[1], lo[3]};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        mma_tf32(acc[m][nt], a_hi, wb[nt].x, wb[nt].y, acc[m][nt]);
#if WARPED_FAST_GP_MMA_SPLIT_ACC
        mma_tf32(acc_lo[m][nt], a_lo, wb[nt].x, wb[nt].y, acc_lo[m][nt]);
#else
        mma_tf32(acc[m][nt], a_lo, wb[nt].x, wb[nt].y, acc[m][nt]);
#endif
      }
    }
  }
#if WARPED_FAST_GP_MMA_SPLIT_ACC
#pragma unroll
  for (int m = 0; m < kMmaTiles; ++m)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[m][nt][i] += acc_lo[m][nt][i];
#endif
}

// Shared (z, b), per-channel w, 4 * NT channels per block. grid = (tiles, ceil(C / (4 NT)), N); ops:
// gp_pack_kernel's output. A block is SPLIT feature slices of 8 / SPLIT warps; warp w of a slice
// covers m-tiles w * kMmaTiles + m, each 16 pixels of one row of the block's 32-column tile. The next
// tile's operands are copied (cp.async) while the current one is evaluated.
template <int SPLIT, int NT>
__global__ void __launch_bounds__(kThreads, NT == 1 ? WARPED_FAST_GP_MMA_BLOCKS : 2)
    gp_shared_mma_kernel(GpNoiseParams p, float scale, const MmaOperands<NT>* ops) {
  constexpr int lanes = kThreads / SPLIT, steps = kTile / 8 / SPLIT, R = kMmaTiles * NT * 4;
  constexpr int tile_bytes = 2 * static_cast<int>(sizeof(MmaTile<NT>)), red_bytes = (SPLIT - 1) * R * lanes * 4;
  __shared__ __align__(16) unsigned char smem[tile_bytes > red_bytes ? tile_bytes : red_bytes];
  MmaTile<NT>* tiles = reinterpret_cast<MmaTile<NT>*>(smem);
  const int64_t c0 = int64_t(blockIdx.y) * 4 * NT, n = blockIdx.z, J = p.features, C = p.channels;
  const int slice = threadIdx.x / lanes, t = threadIdx.x % 4;

  // First the loads of tile 0, which overlap the prologue: its packed operands (this channel block's
  // tiles start at src) and the raw z, b of the phases at the anchor.
  const MmaOperands<NT>* src = ops + int64_t(blockIdx.y) * ((J + kTile - 1) / kTile);
  copy_operands_async<NT>(tiles[0].op, src[0]);
  RawFeature<0> next = fetch_shared<0>(p, c0, threadIdx.x);

  // The lane's pixel offsets from the block's anchor, as A1 fragments: element (row g + 8 r, k = t) is
  // dx's hi half for t < 2, its lo half for t >= 2; (row g + 8 r, k = t + 4) the same of dy. With FMA
  // phases: a1[m] = (dx of rows g, g + 8, dy of rows g, g + 8), whole.
  float dx[kMmaTiles][2], dy[kMmaTiles][2];
  float4 box = make_float4(INFINITY, -INFINITY, INFINITY, -INFINITY);
  mma_coords<SPLIT>(p, n, 0.f, 0.f, dx, dy, box);
  const Anchor a = block_anchor(box.x, box.y, box.z, box.w);
  float a1[kMmaTiles][4];
#pragma unroll
  for (int m = 0; m < kMmaTiles; ++m) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const bool in = mma_pixel<SPLIT>(p, m, r) >= 0;
      const float ox = in ? dx[m][r] - a.x0 : 0.f, oy = in ? dy[m][r] - a.y0 : 0.f;
#if WARPED_FAST_GP_MMA_FMA_PHASES
      a1[m][r] = ox, a1[m][r + 2] = oy;
#else
      const float hx = to_tf32(ox), hy = to_tf32(oy);
      a1[m][r] = t < 2 ? hx : to_tf32(ox - hx);
      a1[m][r + 2] = t < 2 ? hy : to_tf32(oy - hy);
#endif
    }
  }
  float acc[kMmaTiles][NT][4], total[R];
#pragma unroll
  for (int i = 0; i < R; ++i) total[i] = 0.f;

  int buf = 0;
  for (int64_t j0 = 0, k = 0; j0 < J; j0 += kTile, ++k, buf ^= 1) {
    const float ph = anchored_phase(next.zx, next.zy, next.b, a);
    float* c4 = reinterpret_cast<float*>(&tiles[buf].cp[threadIdx.x / 2]);
    c4[threadIdx.x % 2] = ph, c4[threadIdx.x % 2 + 2] = ph;
    cp_async_wait_all();  // this thread's copies of tile k; the barrier makes everyone's visible
    const bool reduce = __syncthreads_or(needs_reduction(next.zx, next.zy, ph, a, kMmaFastBound));
    if (j0 + kTile < J) {  // every warp is past tile k - 1, which used the other buffer
      copy_operands_async<NT>(tiles[buf ^ 1].op, src[k + 1]);
      next = fetch_shared<0>(p, c0, j0 + kTile + threadIdx.x);
    }
    const int valid = static_cast<int>((J - j0 < kTile ? J - j0 : kTile) + 7) / 8;
    const int s0 = slice * steps, s1 = min(s0 + steps, valid);
#pragma unroll
    for (int m = 0; m < kMmaTiles; ++m)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[m][nt][i] = 0.f;
    if (reduce)
      accumulate_mma<false, SPLIT, NT>(tiles[buf], s0, s1, a1, p, n, j0, a, acc);
    else
      accumulate_mma<true, SPLIT, NT>(tiles[buf], s0, s1, a1, p, n, j0, a, acc);
    // A rounding float32 add per tile: the tensor cores' truncating sums span 256 features at most.
#pragma unroll
    for (int m = 0; m < kMmaTiles; ++m)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) total[(m * NT + nt) * 4 + i] += acc[m][nt][i];
  }
  reduce_slices<SPLIT, R>(total, reinterpret_cast<float*>(smem));
  if (slice != 0) return;
  // Lane t holds columns 2t, 2t + 1: hi parts of channels 2t, 2t + 1 for t < 2, their lo parts for t >= 2.
#pragma unroll
  for (int i = 0; i < R; ++i) total[i] += __shfl_xor_sync(0xffffffffu, total[i], 2);
  if (t >= 2) return;
#pragma unroll
  for (int m = 0; m < kMmaTiles; ++m) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t px = mma_pixel<SPLIT>(p, m, r);
      if (px < 0) continue;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t ch = c0 + 4 * nt + 2 * t + h;
          if (ch < C) p.out[(n * C + ch) * p.pixels + px] = scale * total[(m * NT + nt) * 4 + 2 * r + h];
        }
      }
    }
  }
}

}  // namespace
}  // namespace warped_fast
