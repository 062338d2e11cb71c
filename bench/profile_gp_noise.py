"""One launch of each gp_noise CUDA kernel, for a profiler (bench/gpu_check.sh runs it under Nsight
Compute): 1x4x1024x1024 J=3000 shared features with the FMA and the tensor-core kernels, and
1x4x128x128 J=3000 independent features (the latency case). Needs CUDA."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import smooth_flow  # noqa: E402

import warped_fast as wf  # noqa: E402


def main():
    if not torch.cuda.is_available():
        print("profile_gp_noise: needs a CUDA device; nothing to do")
        return
    dev = "cuda"
    cases = [(1024, True, "fma"), (1024, True, "tensor_cores"), (128, False, "fma")]
    for s, shared, kernel in cases:
        cfg = wf.RFFConfig(channels=4, num_features=3000, shared_features=shared)
        field = wf.RFFField.sample(cfg, 0, device=dev)
        coords = wf.identity_coords(s, s, 1, device=dev) + smooth_flow(1, s, s, dev).permute(0, 2, 3, 1)
        with wf.use_backend("cuda"), wf.ops.gp_noise_cuda_kernel(kernel):
            field(coords)
        torch.cuda.synchronize()
        print(f"profiled: 1x4x{s}x{s} J=3000 {'shared' if shared else 'independent'}, {kernel}")


if __name__ == "__main__":
    main()
