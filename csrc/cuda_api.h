// CUDA launchers (kernels/*.cu). Each returns nullptr on success or a static error string.
#pragma once
#include <cstdint>

#include "params.h"

namespace warped_fast {

// Which gp_noise kernel runs shared-feature fields: auto, the FMA kernel, or the tensor-core kernel
// (independent channels always use the FMA kernel). split: feature slices per block (0: the launcher's
// choice; 1, 2, 4 or 8 to tune). workspace: device memory of gp_noise_cuda_workspace(p, kernel) bytes
// (the tensor-core kernel's packed operands; none for the others).
constexpr int kGpKernelAuto = 0, kGpKernelFma = 1, kGpKernelTensorCores = 2;
int64_t gp_noise_cuda_workspace(const GpNoiseParams& p, int kernel);
const char* gp_noise_cuda(const GpNoiseParams& p, uintptr_t stream, int kernel, int split, void* workspace,
                          int64_t workspace_bytes);
// Number of visible CUDA devices, or -1 with the error string in *err.
int cuda_device_count(const char** err);

}  // namespace warped_fast
