// Row-parallel loops for the CPU kernels (OpenMP when available, serial otherwise).
#pragma once
#include <cstdint>

namespace warped_fast {

template <class F>
inline void parallel_for(int64_t n, int threads, F&& body) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) body(i);
#else
  (void)threads;
  for (int64_t i = 0; i < n; ++i) body(i);
#endif
}

// Same, but with dynamic scheduling for loops whose iterations vary in cost.
template <class F>
inline void parallel_for_dynamic(int64_t n, int threads, F&& body) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) body(i);
#else
  (void)threads;
  for (int64_t i = 0; i < n; ++i) body(i);
#endif
}

}  // namespace warped_fast
