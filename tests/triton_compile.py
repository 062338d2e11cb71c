"""Compile every Triton kernel for sm_90 with the real compiler, no GPU needed (run as a script with
TRITON_INTERPRET=0 by tests/test_triton_compile.py).

The public Triton functions are called on meta tensors (shapes only, the GPU launch heuristics); each
kernel launch is replaced by ``triton.compile`` of the same specialization (argument types, constexprs,
num_warps) for an sm_90 target. Prints one line per compiled specialization; exits non-zero on the
first failure.
"""

from __future__ import annotations

import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import mangle_type  # the JIT's own argument types

from warped_fast.triton import guidance, gwtf, hiwyn, infres, warp

TARGET = GPUTarget("cuda", 90, 32)


class _CompileInstead:
    """Stands in for a JITFunction: ``kernel[grid](*args, **kw)`` compiles instead of launching."""

    def __init__(self, kernel):
        self.kernel, self.seen = kernel, set()

    def __getitem__(self, grid):
        return self._compile

    def _compile(self, *args, num_warps: int = 4, num_stages: int | None = None, **kwargs):
        sig, constexprs = {}, {}
        for i, param in enumerate(self.kernel.params):
            value = args[i] if i < len(args) else kwargs[param.name]
            if param.is_constexpr or value is None:
                sig[param.name], constexprs[param.name] = "constexpr", value
            else:
                sig[param.name] = mangle_type(value)
        key = (tuple(sig.items()), tuple(constexprs.items()), num_warps)
        if key in self.seen:
            return
        self.seen.add(key)
        src = ASTSource(fn=self.kernel, signature=sig, constexprs=constexprs)
        compiled = triton.compile(src, target=TARGET, options={"num_warps": num_warps})
        assert compiled.asm["cubin"], "empty cubin"
        name = self.kernel.fn.__name__
        print(f"compiled {name} {constexprs} num_warps={num_warps}", flush=True)


def _meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


def main() -> int:
    modules = (guidance, gwtf, hiwyn, infres, warp)
    for mod in modules:
        for attr in dir(mod):
            if isinstance(getattr(mod, attr), triton.JITFunction) and attr.endswith("_kernel"):
                setattr(mod, attr, _CompileInstead(getattr(mod, attr)))
    n, c, h, w = 2, 3, 37, 53
    img, flow, back = _meta(n, c, h, w), _meta(n, 2, h, w), _meta(n, 2, h, w)
    for tile in (0, 8):  # the forward warp's channel loop and channel tile
        warp._CHANNEL_TILE_MAX = tile
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            warp.warp_forward(img.to(dt), flow, back)
            warp.warp_forward(img.to(dt), flow)
    warp._CHANNEL_TILE_MAX, hints = 0, warp._WARP_FWD_HINTS
    for warp._WARP_FWD_HINTS in (("evict_first", "evict_last", ".cs"), ("evict_first", "", ".cs")):
        warp.warp_forward(img, flow, back)  # the cache hints bench/tune_warp.py times
    warp._WARP_FWD_HINTS = hints
    warp.warp_image_grad(img, flow)
    warp.warp_image_grad(img, flow, _meta(n))
    warp.warp_flow_grad(img, img, flow)
    warp.compose_coords(_meta(n, h, w, 2), flow)
    mask = _meta(n, 1, h, w, dtype=torch.bool)
    guidance.guidance_residual(img, img, flow, mask)
    guidance.guidance_residual(img, img, flow)
    guidance.euler_guided_step(img, img, img, _meta(n), _meta(n), 0.5)
    guidance.euler_guided_step(img, img, None, _meta(n), _meta(n), 0.5)
    q, pix = _meta(c, h, w), (h, w)
    hiwyn.hiwyn_transport(q, _meta(2, h + 1, w + 1), _meta(c, *pix, 8, 8), q)
    infres.infres_transport(q, _meta(2, *pix), _meta(c, 4, *pix), q)
    gwtf.gwtf_transport(q, _meta(*pix), _meta(2, *pix), _meta(2, *pix), q, q, q)
    missing = [
        f"{mod.__name__}.{attr}"
        for mod in modules
        for attr in dir(mod)
        if isinstance(getattr(mod, attr), _CompileInstead) and not getattr(mod, attr).seen
    ]
    if missing:
        print("never launched:", ", ".join(missing))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
