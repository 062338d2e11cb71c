// pybind11 module warped_fast._C: raw pointers (as integers), sizes and stream handles only.
// Torch integration (custom ops, fake kernels, autograd, dispatch) lives in warped_fast/ops/.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "kernels_cpu.h"
#ifdef WARPED_FAST_WITH_CUDA
#include "cuda_api.h"
#endif

namespace py = pybind11;
using warped_fast::GpNoiseParams;

namespace {

template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

// dtype codes shared with warped_fast/_ext.py: 0 = float32, 1 = float64.
template <class F>
void by_dtype(int dtype, const char* op, F&& f) {
  if (dtype == 0)
    f(float{});
  else if (dtype == 1)
    f(double{});
  else
    throw std::invalid_argument(std::string(op) + ": unsupported dtype code " + std::to_string(dtype));
}

GpNoiseParams gp_params(uintptr_t coords, uintptr_t z, uintptr_t b, uintptr_t w, uintptr_t out, int64_t n, int64_t h,
                        int64_t width, int64_t c, int64_t cz, int64_t j) {
  return GpNoiseParams{ptr<const float>(coords),
                       ptr<const float>(z),
                       ptr<const float>(b),
                       ptr<const float>(w),
                       ptr<float>(out),
                       n,
                       h * width,
                       width,
                       c,
                       cz,
                       j};
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "warped_fast compiled kernels (CPU, and CUDA when built with it)";
  auto nogil = py::call_guard<py::gil_scoped_release>();

  m.def(
      "gp_noise_cpu",
      [](uintptr_t coords, uintptr_t z, uintptr_t b, uintptr_t w, uintptr_t out, int64_t n, int64_t h, int64_t width,
         int64_t c, int64_t cz, int64_t j,
         int threads) { warped_fast::gp_noise_cpu(gp_params(coords, z, b, w, out, n, h, width, c, cz, j), threads); },
      nogil);

  m.def(
      "warp_forward_cpu",
      [](int dt, uintptr_t image, uintptr_t flow, uintptr_t back_flow, uintptr_t out, uintptr_t valid, int64_t n,
         int64_t c, int64_t h, int64_t w, int threads) {
        by_dtype(dt, "warp", [&](auto t) {
          using T = decltype(t);
          warped_fast::warp_forward_cpu<T>(ptr<const T>(image), ptr<const T>(flow), ptr<const T>(back_flow),
                                           ptr<T>(out), ptr<uint8_t>(valid), n, c, h, w, threads);
        });
      },
      nogil);

  m.def(
      "warp_backward_cpu",
      [](int dt, uintptr_t grad_out, uintptr_t image, uintptr_t flow, uintptr_t scale, uintptr_t grad_image,
         uintptr_t grad_flow, int64_t n, int64_t c, int64_t h, int64_t w, int threads) {
        by_dtype(dt, "warp_backward", [&](auto t) {
          using T = decltype(t);
          warped_fast::warp_backward_cpu<T>(ptr<const T>(grad_out), ptr<const T>(image), ptr<const T>(flow),
                                            ptr<const T>(scale), ptr<T>(grad_image), ptr<T>(grad_flow), n, c, h, w,
                                            threads);
        });
      },
      nogil);

  m.def(
      "compose_coords_cpu",
      [](int dt, uintptr_t coords, uintptr_t flow, uintptr_t out, int64_t n, int64_t h, int64_t w, int threads) {
        by_dtype(dt, "compose_coords", [&](auto t) {
          using T = decltype(t);
          warped_fast::compose_coords_cpu<T>(ptr<const T>(coords), ptr<const T>(flow), ptr<T>(out), n, h, w, threads);
        });
      },
      nogil);

  m.def(
      "guidance_residual_cpu",
      [](int dt, uintptr_t pred, uintptr_t prev, uintptr_t flow, uintptr_t mask, uintptr_t r, uintptr_t row_sumsq,
         int64_t n, int64_t c, int64_t h, int64_t w, int threads) {
        by_dtype(dt, "guidance_residual", [&](auto t) {
          using T = decltype(t);
          warped_fast::guidance_residual_cpu<T>(ptr<const T>(pred), ptr<const T>(prev), ptr<const T>(flow),
                                                ptr<const uint8_t>(mask), ptr<T>(r), ptr<double>(row_sumsq), n, c, h, w,
                                                threads);
        });
      },
      nogil);

  m.def(
      "euler_guided_step_cpu",
      [](int dt, uintptr_t u, uintptr_t pred, uintptr_t grad, uintptr_t sigma, uintptr_t sigma_next, double lam,
         uintptr_t out, int64_t n, int64_t per_item, int threads) {
        by_dtype(dt, "euler_guided_step", [&](auto t) {
          using T = decltype(t);
          warped_fast::euler_guided_step_cpu<T>(ptr<const T>(u), ptr<const T>(pred), ptr<const T>(grad),
                                                ptr<const T>(sigma), ptr<const T>(sigma_next), lam, ptr<T>(out), n,
                                                per_item, threads);
        });
      },
      nogil);

  m.def(
      "hiwyn_transport_cpu",
      [](uintptr_t prev, uintptr_t cx, uintptr_t cy, uintptr_t z, uintptr_t zmean, uintptr_t fresh, uintptr_t out,
         int64_t c, int64_t h, int64_t w, int k, int max_extent, int threads) {
        if (k < 1 || k > 32) throw std::invalid_argument("hiwyn_transport: k must be in [1, 32]");
        if (max_extent < 1) throw std::invalid_argument("hiwyn_transport: max_extent must be >= 1");
        warped_fast::hiwyn_transport_cpu(
            warped_fast::HiwynParams{ptr<const float>(prev), ptr<const float>(cx), ptr<const float>(cy),
                                     ptr<const float>(z), ptr<const float>(zmean), ptr<const float>(fresh),
                                     ptr<float>(out), c, h, w, k, max_extent},
            threads);
      },
      nogil);

  m.def(
      "infres_transport_cpu",
      [](uintptr_t prev, uintptr_t fwd, uintptr_t z, uintptr_t fresh, uintptr_t out, uintptr_t area, int64_t c,
         int64_t h, int64_t w, bool fill, float min_area, int threads) {
        warped_fast::infres_transport_cpu(
            warped_fast::InfresParams{ptr<const float>(prev), ptr<const float>(fwd), ptr<const float>(z),
                                      ptr<const float>(fresh), ptr<float>(out), ptr<float>(area), c, h, w, fill,
                                      min_area},
            threads);
      },
      nogil);

  m.def(
      "gwtf_transport_cpu",
      [](uintptr_t q, uintptr_t weight, uintptr_t fwd, uintptr_t back, uintptr_t zc, uintptr_t ze, uintptr_t fresh,
         uintptr_t out, uintptr_t weight_out, int64_t c, int64_t h, int64_t w, int threads) {
        warped_fast::gwtf_transport_cpu(
            warped_fast::GwtfParams{ptr<const float>(q), ptr<const float>(weight), ptr<const float>(fwd),
                                    ptr<const float>(back), ptr<const float>(zc), ptr<const float>(ze),
                                    ptr<const float>(fresh), ptr<float>(out), ptr<float>(weight_out), c, h, w},
            threads);
      },
      nogil);

#ifdef WARPED_FAST_WITH_CUDA
  m.attr("with_cuda") = true;
  m.def("cuda_device_count", []() {
    const char* err = nullptr;
    const int n = warped_fast::cuda_device_count(&err);
    if (n < 0) return 0;  // no driver / no device: CUDA kernels are unavailable here
    return n;
  });
  m.def(
      "gp_noise_cuda",
      [](uintptr_t coords, uintptr_t z, uintptr_t b, uintptr_t w, uintptr_t out, int64_t n, int64_t h, int64_t width,
         int64_t c, int64_t cz, int64_t j, uintptr_t stream, int kernel, int split, uintptr_t workspace,
         int64_t workspace_bytes) {
        const char* err = warped_fast::gp_noise_cuda(gp_params(coords, z, b, w, out, n, h, width, c, cz, j), stream,
                                                     kernel, split, ptr<void>(workspace), workspace_bytes);
        if (err != nullptr) throw std::runtime_error(std::string("gp_noise (CUDA): ") + err);
      },
      nogil);
  m.def("gp_noise_cuda_workspace",
        [](int64_t n, int64_t h, int64_t width, int64_t c, int64_t cz, int64_t j, int kernel) {
          return warped_fast::gp_noise_cuda_workspace(gp_params(0, 0, 0, 0, 0, n, h, width, c, cz, j), kernel);
        });
#else
  m.attr("with_cuda") = false;
#endif
}
