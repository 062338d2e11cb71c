"""Per-item memo of conditioning-only work: value-matched, batch-order free, bounded, grad-aware."""

import pytest
import torch

from warped_fast.models.cond_cache import ConditioningCache


def _counting():
    calls = []

    def fn(c):
        calls.append(c.shape[0])
        return c * 2, c.sum((1, 2, 3))

    return fn, calls


def test_items_are_matched_by_value_across_rebatching():
    fn, calls = _counting()
    cache = ConditioningCache(fn, capacity=8)
    x = torch.randn(5, 2, 3, 3)
    a = cache(x[:3])
    assert calls == [3] and torch.equal(a[0], x[:3] * 2)
    b_in = torch.cat([x[1:2], x[3:5], x[0:1]]).clone()  # new memory, two known items, two new
    b = cache(b_in)
    assert calls == [3, 2]
    assert torch.equal(b[0], b_in * 2) and torch.equal(b[1], b_in.sum((1, 2, 3)))
    cache(x.clone())
    assert calls == [3, 2]  # all five known now
    y = x.clone()
    y[2, 0, 0, 0] += 1  # a changed item is a new item
    assert torch.equal(cache(y)[0], y * 2) and calls == [3, 2, 1]


def test_capacity_evicts_the_least_recently_used():
    fn, calls = _counting()
    cache = ConditioningCache(fn, capacity=2)
    x = torch.randn(3, 1, 2, 2)
    cache(x[:1]), cache(x[1:2]), cache(x[:1]), cache(x[2:3])  # x[1] is the least recently used
    assert calls == [1, 1, 1]
    cache(x[:1])
    assert calls == [1, 1, 1]
    cache(x[1:2])
    assert calls == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="capacity"):
        ConditioningCache(fn, capacity=0)


def test_conditioning_that_requires_grad_is_computed_every_time():
    fn, calls = _counting()
    cache = ConditioningCache(fn)
    x = torch.randn(2, 1, 2, 2, requires_grad=True)
    out = cache(x)
    out[0].sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))
    cache(x)
    assert calls == [2, 2]


def test_other_settings_clear_the_cache_and_results_are_copies():
    fn, calls = _counting()
    cache = ConditioningCache(fn)
    x = torch.randn(2, 2, 3, 3)
    cache(x, settings=("harmonic", 1.0))
    cache(x, settings=("harmonic", 1.0))
    assert calls == [2]
    cache(x, settings=("push_pull", 1.0))  # what fn reads besides cond changed: recomputed
    assert calls == [2, 2]
    out = cache(torch.cat([x, x[:1] + 1]), settings=("push_pull", 1.0))
    out[0].zero_()  # changing a returned tensor in place leaves the kept items alone
    assert torch.equal(cache(x, settings=("push_pull", 1.0))[0], x * 2)


def test_denoiser_residual_settings_are_part_of_the_cache():
    from warped_fast.models import DiffusersDenoiser
    from warped_fast.models.default import default_model_dir, load_model

    den = load_model(default_model_dir("inpaint"))
    assert den.residual
    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, 3, 16, 16, generator=g)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    cond = torch.cat([mask, torch.rand(1, 3, 16, 16, generator=g) * 2 - 1], 1)
    sigma = torch.tensor([2.0])
    with torch.no_grad():
        den(u, sigma, cond)
        den.residual_fill = "push_pull" if den.residual_fill != "push_pull" else "harmonic"
        changed = den(u, sigma, cond)
        fresh = load_model(default_model_dir("inpaint"), residual_fill=den.residual_fill)(u, sigma, cond)
    assert isinstance(den, DiffusersDenoiser) and torch.allclose(changed, fresh, atol=1e-5)
