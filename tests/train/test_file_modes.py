"""A run's weight files are readable as the files beside them."""

from tests.train.test_train import _cfg
from warped_fast.train import Trainer


def test_checkpoints_and_exports_are_readable_as_the_files_beside_them(tmp_path):
    """safetensors writes private (0600) files; the run's weights get the folder's usual mode."""
    tr = Trainer(_cfg(tmp_path, steps=2))
    model = tr.train()
    probe = tmp_path / "probe"
    probe.write_text("")
    usual = probe.stat().st_mode & 0o777
    weights = [*model.glob("*.safetensors"), tr.ckpt / "state.safetensors"]
    assert len(weights) == 2 and all(f.stat().st_mode & 0o777 == usual for f in weights), [
        oct(f.stat().st_mode & 0o777) for f in weights
    ]
