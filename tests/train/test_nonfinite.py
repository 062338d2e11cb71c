"""A training step whose loss or gradient is not finite is skipped; many in a row stop the run."""

import logging

import pytest
import torch

from tests.train.test_train import _cfg
from warped_fast.train import Trainer
from warped_fast.train.trainer import MAX_NONFINITE_STEPS


def _state(tr):
    return {k: v.clone() for k, v in tr.unet.state_dict().items()}, {k: v.clone() for k, v in tr.ema.items()}


def _poisoned(tr, step):
    x, cond, draw, t = tr.data[step]
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")  # one NaN pixel: a NaN loss
    return x, cond, draw, t


def test_a_nan_loss_leaves_the_weights_and_the_average_as_they_were(tmp_path, caplog):
    tr = Trainer(_cfg(tmp_path))
    tr.train_step()
    weights, ema = _state(tr)
    opt_steps = tr.opt.state[tr.params[0]]["step"].clone()
    with caplog.at_level(logging.WARNING, "warped_fast"):
        loss = tr.train_step(_poisoned(tr, 1))
    assert loss != loss and tr.step == 2 and tr.nonfinite == 1
    assert "step 2: non-finite loss" in caplog.text
    after, ema_after = _state(tr)
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert all(torch.equal(ema[k], ema_after[k]) for k in ema)
    assert torch.equal(tr.opt.state[tr.params[0]]["step"], opt_steps)
    tr.train_step()  # a finite step trains again and resets the count
    assert tr.nonfinite == 0 and not torch.equal(
        after[next(iter(after))], tr.unet.state_dict()[next(iter(after))]
    )


def test_a_nan_gradient_is_skipped_too(tmp_path, monkeypatch, caplog):
    tr = Trainer(_cfg(tmp_path))
    weights, _ = _state(tr)
    real = tr.loss
    # a finite loss whose gradient is NaN: sqrt at 0 of a clamped-to-zero copy
    monkeypatch.setattr(tr, "loss", lambda *a: real(*a) + (real(*a) * 0).sqrt())
    with caplog.at_level(logging.WARNING, "warped_fast"):
        loss = tr.train_step()
    assert loss == loss and "non-finite gradient" in caplog.text
    assert all(torch.equal(weights[k], v) for k, v in tr.unet.state_dict().items())


def test_a_run_that_keeps_diverging_stops_and_names_it(tmp_path):
    tr = Trainer(_cfg(tmp_path, steps=MAX_NONFINITE_STEPS + 5))
    tr.loss = lambda *a: torch.tensor(float("inf"), requires_grad=True)
    with pytest.raises(
        FloatingPointError, match=f"{MAX_NONFINITE_STEPS} steps in a row.*holds its last checkpoint.*lower lr"
    ):
        tr.train()
    assert tr.step == MAX_NONFINITE_STEPS
    assert (tmp_path / "run" / "loss.csv").read_text().splitlines() == ["step,loss,lr,seconds"]  # no NaN rows
    fresh = Trainer(_cfg(tmp_path / "b", steps=20, checkpoint_every=50))
    fresh.loss = tr.loss
    with pytest.raises(FloatingPointError, match="no checkpoint was written"):
        fresh.train()
