"""Classical hole fills: push-pull averaging and the harmonic interpolant (against a direct sparse solve)."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from tests.helpers import assert_close
from warped_fast.models.hole_fill import HOLE_FILLS, harmonic_fill, push_pull_fill


def _mask(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, h, w, generator=g) < 0.4).float()


def _harmonic_direct(x: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Reference: assemble the graph Laplacian of the H x W grid and solve for the hole pixels directly.
    ``x`` ``[C, H, W]``, ``hole`` ``[H, W]`` bool."""
    h, w = hole.shape
    idx = np.arange(h * w).reshape(h, w)
    rows, cols = [], []
    for a, b in ((idx[:-1, :], idx[1:, :]), (idx[:, :-1], idx[:, 1:])):
        rows += [a.ravel(), b.ravel()]
        cols += [b.ravel(), a.ravel()]
    r, c = np.concatenate(rows), np.concatenate(cols)
    adj = sp.csr_matrix((np.ones(r.size), (r, c)), shape=(h * w, h * w))
    lap = sp.diags(np.asarray(adj.sum(1)).ravel()) - adj
    u, k = hole.ravel(), ~hole.ravel()
    out = x.reshape(x.shape[0], -1).astype(np.float64).copy()
    a_uu, a_uk = lap[u][:, u].tocsc(), lap[u][:, k]
    for ch in range(out.shape[0]):
        out[ch, u] = spla.spsolve(a_uu, -a_uk @ out[ch, k])
    return out.reshape(x.shape)


@pytest.mark.parametrize("fill", sorted(HOLE_FILLS))
@pytest.mark.parametrize("shape", [(1, 3, 17, 29), (3, 1, 8, 8), (2, 4, 1, 5)])
def test_fill_keeps_known_pixels_and_stays_in_their_range(fill, shape):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=g)
    m = _mask(shape[0], *shape[2:])
    m[:, :, 0, 0] = 0  # at least one known pixel per frame
    y = HOLE_FILLS[fill](x, m)
    assert y.shape == x.shape
    assert torch.equal(y * (1 - m), x * (1 - m))
    # Each filled value is a convex combination of known values (the harmonic one: the maximum principle).
    known = x.masked_fill(m.bool(), float("nan"))
    lo = known.flatten(2).nan_to_num(float("inf")).amin(2)[..., None, None]
    hi = known.flatten(2).nan_to_num(float("-inf")).amax(2)[..., None, None]
    assert bool(((y >= lo - 1e-5) & (y <= hi + 1e-5)).all())


def test_push_pull_reproduces_constants_and_approximates_ramps():
    m = torch.zeros(1, 1, 32, 32)
    m[..., 10:20, 12:22] = 1
    c = torch.full((1, 2, 32, 32), 0.3)
    assert_close(push_pull_fill(c, m), c, atol=1e-6, what="constant")
    ramp = torch.linspace(-1, 1, 32).view(1, 1, 1, 32).expand(1, 1, 32, 32)
    err = (push_pull_fill(ramp, m) - ramp).abs().max()
    assert err < 0.2, f"ramp fill error {err:.3f}"  # vs 1.0 for a zero fill of this hole
    assert torch.equal(push_pull_fill(c, torch.ones(1, 1, 32, 32)), torch.zeros_like(c))


@pytest.mark.parametrize("shape,seed", [((2, 3, 13, 21), 0), ((1, 2, 24, 9), 1), ((1, 1, 1, 11), 2)])
def test_harmonic_fill_matches_a_direct_sparse_solve(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 2 - 1
    m = _mask(shape[0], *shape[2:], seed=seed)
    m[..., : shape[2] // 2 + 1, -3:] = 1  # a hole touching the frame border (reflecting boundary)
    m[:, :, 0, 0] = 0
    y = harmonic_fill(x, m, tol=1e-7)
    for i in range(shape[0]):
        want = _harmonic_direct(x[i].numpy(), m[i, 0].numpy() > 0.5)
        assert_close(y[i].double(), torch.from_numpy(want), atol=1e-5, what=f"item {i}")


def test_harmonic_fill_reproduces_ramps_and_handles_degenerate_masks():
    h, w = 20, 33
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    ramp = (0.03 * xx - 0.05 * yy).expand(2, 3, h, w)
    m = torch.zeros(2, 1, h, w)
    m[..., 4:15, 5:20] = 1
    assert_close(harmonic_fill(ramp, m, tol=1e-6), ramp, atol=1e-5, what="ramp")
    assert (push_pull_fill(ramp, m) - ramp).abs().max() > 0.05  # push-pull does not
    m[1] = 1  # one frame fully masked: zeros, the other unaffected
    y = harmonic_fill(ramp, m, tol=1e-6)
    assert torch.equal(y[1], torch.zeros_like(y[1]))
    assert_close(y[0], ramp[0], atol=1e-5, what="ramp beside a full mask")
    assert torch.equal(harmonic_fill(ramp, torch.zeros(2, 1, h, w)), ramp)  # no hole


def test_harmonic_fill_of_an_item_does_not_depend_on_its_batch():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 24, 24, generator=g)
    m = _mask(4, 24, 24, seed=3)
    m[0, :, 2:20, 2:22] = 1  # a large hole: many more iterations than the others
    full = harmonic_fill(x, m)
    for i in range(4):
        assert torch.equal(harmonic_fill(x[i : i + 1], m[i : i + 1]), full[i : i + 1])


def test_harmonic_fill_zero_boundary_and_half_precision():
    x = torch.zeros(1, 1, 16, 16)
    x[..., 0, :] = 1  # the hole's own boundary is all 0, so its fill is 0 (push-pull's start is not)
    m = torch.zeros(1, 1, 16, 16)
    m[..., 2:14, 2:14] = 1
    assert (push_pull_fill(x, m) * m).abs().max() > 0.01
    assert (harmonic_fill(x, m) * m).abs().max() < 1e-3
    y = torch.rand(2, 3, 20, 20)
    mm = _mask(2, 20, 20)
    half = harmonic_fill(y.half(), mm.half())
    assert half.dtype == torch.float16
    assert_close(half.float(), harmonic_fill(y.half().float(), mm), atol=2e-3, what="fp16")


def test_harmonic_fill_is_not_differentiated_and_converges_from_its_start():
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    m = _mask(1, 16, 16)
    assert not harmonic_fill(x, m).requires_grad
    loose, tight = harmonic_fill(x, m, tol=1e-2), harmonic_fill(x, m, tol=1e-7)
    assert (loose - tight).abs().max() < 0.05
    assert torch.equal(harmonic_fill(x, m, max_iters=0), push_pull_fill(x.detach(), m))


@pytest.mark.parametrize("fill", sorted(HOLE_FILLS))
def test_fill_bad_inputs(fill):
    with pytest.raises(ValueError, match="mask"):
        HOLE_FILLS[fill](torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        HOLE_FILLS[fill](torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 9))


def test_harmonic_fill_bad_options():
    with pytest.raises(ValueError, match="tol"):
        harmonic_fill(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), tol=0)
