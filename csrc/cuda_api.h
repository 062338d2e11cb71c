// CUDA launchers (kernels/*.cu). Each returns nullptr on success or a static error string.
#pragma once
#include <cstdint>

#include "params.h"

namespace warped_fast {

const char* gp_noise_cuda(const GpNoiseParams& p, uintptr_t stream);
// Number of visible CUDA devices, or -1 with the error string in *err.
int cuda_device_count(const char** err);

}  // namespace warped_fast
