"""Resume after a crash: crash-safe checkpoints, GradScaler state, the loss log, moved run folders."""

import csv
import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from warped_fast.train import Trainer
from warped_fast.train.checkpoint import load_checkpoint, save_checkpoint
from warped_fast.train.release import load_trained, training_stages

from .test_train import _cfg


def _same_state(a: Trainer, b: Trainer) -> None:
    assert a.step == b.step
    for (k, v), (_, w) in zip(a.unet.state_dict().items(), b.unet.state_dict().items(), strict=True):
        assert torch.equal(v, w), f"{k} differs"
    for k in a.ema:
        assert torch.equal(a.ema[k], b.ema[k]), f"EMA {k} differs"


def _log_steps(run: Path) -> list[int]:
    with (run / "loss.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_crash_between_checkpoint_renames_resumes_from_the_new_one(tmp_path, monkeypatch):
    """A crash after the old checkpoint is moved aside and before the new one is renamed in."""
    straight = Trainer(_cfg(tmp_path / "a", steps=3))
    straight.train()
    tr = Trainer(_cfg(tmp_path / "b", steps=3))
    tr.train(steps=2)
    tr.train_step()
    real_rename, real_replace = Path.rename, Path.replace

    def crash(real):
        def f(self, target):
            if self.name == "checkpoint.tmp":
                raise OSError("crash")
            return real(self, target)

        return f

    monkeypatch.setattr(Path, "rename", crash(real_rename))
    monkeypatch.setattr(Path, "replace", crash(real_replace))
    with pytest.raises(OSError, match="crash"):
        tr.checkpoint()
    monkeypatch.undo()
    resumed = Trainer(_cfg(tmp_path / "b", steps=3))
    assert resumed.step == 3
    _same_state(straight, resumed)


def test_recovery_from_tmp_or_old_checkpoint_folders(tmp_path):
    run = tmp_path / "run"
    tr = Trainer(_cfg(tmp_path, steps=3, checkpoint_every=1))
    tr.train(steps=2)
    shutil.copytree(run / "checkpoint", tmp_path / "at2")
    tr.train()
    # crash state 1: checkpoint moved to .old, the complete new one still .tmp
    (run / "checkpoint").rename(run / "checkpoint.tmp")
    shutil.copytree(tmp_path / "at2", run / "checkpoint.old")
    assert Trainer(_cfg(tmp_path, steps=3)).step == 3
    assert (run / "checkpoint").exists() and not (run / "checkpoint.tmp").exists()
    # crash state 2: only the old one and a partial new one (no state.json)
    shutil.rmtree(run / "checkpoint")
    shutil.rmtree(run / "checkpoint.old", ignore_errors=True)
    shutil.copytree(tmp_path / "at2", run / "checkpoint.old")
    (run / "checkpoint.tmp").mkdir()
    (run / "checkpoint.tmp" / "state.safetensors").write_bytes(b"partial")
    assert Trainer(_cfg(tmp_path, steps=3)).step == 2


def test_resume_drops_loss_rows_past_the_checkpoint(tmp_path):
    """Rows logged after the last checkpoint (then a crash) are not repeated on resume."""
    straight = Trainer(_cfg(tmp_path / "a", steps=4))
    straight.train()
    tr = Trainer(_cfg(tmp_path / "b", steps=4))  # checkpoint_every=2
    step = tr.train_step

    def crash_at_4(raw=None):
        if tr.step == 3:
            raise RuntimeError("crash")
        return step(raw)

    tr.train_step = crash_at_4
    with pytest.raises(RuntimeError, match="crash"):
        tr.train()
    run = tmp_path / "b" / "run"
    assert _log_steps(run) == [1, 2, 3]
    resumed = Trainer(_cfg(tmp_path / "b", steps=4))
    assert resumed.step == 2
    resumed.train()
    assert _log_steps(run) == [1, 2, 3, 4]
    _same_state(straight, resumed)


def test_grad_scaler_state_is_saved_and_restored(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**7, growth_interval=3)
    for _ in range(2):  # growth tracker 2, scale unchanged
        scaler.scale(model(torch.ones(1, 3)).sum()).backward()
        scaler.step(opt)
        scaler.update()
    scaler.update(2.0**5)
    save_checkpoint(tmp_path / "ck", model, {}, opt, 2, {}, scaler)
    fresh = torch.amp.GradScaler("cpu")
    load_checkpoint(tmp_path / "ck", model, {}, opt, fresh)
    assert fresh.state_dict() == scaler.state_dict() and fresh.get_scale() == 2.0**5


def test_release_loads_the_moved_run_and_refuses_untrained(tmp_path):
    tr = Trainer(_cfg(tmp_path, task="sr", steps=3, ema_decay=0.0, lr=0.05))
    tr.train()
    moved = tmp_path / "moved"
    shutil.move(str(tmp_path / "run"), str(moved))
    loaded = load_trained(moved)
    assert loaded.step == 3 and not (tmp_path / "run").exists()
    out = loaded.export(tmp_path / "dest", dtype=torch.float16)
    # ema_decay 0: no average kept; the export is the trained weights
    state = load_file(str(moved / "checkpoint/state.safetensors"))
    assert not any(k.startswith("ema.") for k in state)
    ema = {k[6:]: v for k, v in state.items() if k.startswith("model.") and v.is_floating_point()}
    got = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    assert set(got) == set(ema)
    assert all(torch.equal(got[k], ema[k].half()) for k in ema)
    stages = training_stages(moved)
    assert stages[-1]["folder"] == str(moved) and stages[-1]["steps"] == 3
    shutil.rmtree(moved / "checkpoint")
    with pytest.raises(FileNotFoundError, match="run_dir: no checkpoint"):
        load_trained(moved)


def test_export_refuses_mismatched_weights(tmp_path):
    tr = Trainer(_cfg(tmp_path, task="sr", batch_size=2))
    tr.train_step()
    tr.unet.extra = torch.nn.Linear(2, 2)  # weights the exported architecture has no place for
    with pytest.raises(ValueError, match=r"export: weights do not fit.*extra\.weight"):
        tr.export(tmp_path / "d1")


def test_loss_log_cut_by_a_kill(tmp_path):
    """A run killed while writing a row leaves half of it: the resume drops it (with the rows past its
    checkpoint) and the loss curve reads the rest."""
    from warped_fast.train.trainer import _truncate_log, plot_loss

    log = tmp_path / "loss.csv"
    log.write_text("step,loss,lr,seconds\n11,0.5,1e-3,4.0\n12,0.45,1e-3,4.5\n13,0.4,1e-3,5.0\n1")
    _truncate_log(log, 12)
    assert log.read_text().splitlines() == ["step,loss,lr,seconds", "11,0.5,1e-3,4.0", "12,0.45,1e-3,4.5"]
    log.write_text(log.read_text() + "13,0.4,1e-3,5.0\n14,0.3")  # cut again, read without a resume
    plot_loss(log, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0
    # cut after a row's last number, before its line end: the next row must not join it
    log.write_text("step,loss,lr,seconds\n11,0.5,1e-3,4.0\n12,0.45,1e-3,4.5")
    _truncate_log(log, 12)
    with log.open("a") as f:
        f.write("13,0.4,1e-3,5.0\n")
    _truncate_log(log, 13)
    assert log.read_text().splitlines()[1:] == ["11,0.5,1e-3,4.0", "12,0.45,1e-3,4.5", "13,0.4,1e-3,5.0"]


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_checkpoints_the_finished_steps(tmp_path, monkeypatch, workers):
    """Ctrl-C during step 3 (checkpoints every 2): step 3 finishes, the run checkpoints there and stops
    as interrupted; resuming gives the uninterrupted run's weights, and no loss row is lost or doubled."""
    straight = Trainer(_cfg(tmp_path / "a", steps=5, checkpoint_every=2, data_workers=workers))
    straight.train()
    tr = Trainer(_cfg(tmp_path / "b", steps=5, checkpoint_every=2, data_workers=workers))
    step = tr.train_step

    def step_with_ctrl_c(raw=None):
        if tr.step == 2:  # as the terminal sends it, during the step: to the data workers too
            for p in [*multiprocessing.active_children(), None]:
                os.kill(p.pid if p else os.getpid(), signal.SIGINT)
        return step(raw)

    monkeypatch.setattr(tr, "train_step", step_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        tr.train()
    assert tr.step == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    resumed = Trainer(_cfg(tmp_path / "b", steps=5, checkpoint_every=2, data_workers=workers))
    assert resumed.step == 3
    resumed.train()
    _same_state(straight, resumed)
    assert _log_steps(tmp_path / "b" / "run") == [1, 2, 3, 4, 5]
