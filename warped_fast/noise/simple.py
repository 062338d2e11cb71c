"""The two trivial baselines of Warped Diffusion (Daras et al., NeurIPS 2024, section 5 / method.md
section 7): the same noise for every frame ("fixed") and an independent draw per frame ("resample")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import NoiseWarper, register_method
from .rff import RFFConfig
from .sources import Base, NoiseSource, check_base, check_rff


@dataclass(frozen=True)
class SimpleConfig:
    """Options of ``fixed`` and ``resample``.

    Attributes:
        base: ``"white"`` (i.i.d. N(0, 1)) or ``"gp"`` (RFF GP noise, method section 2).
        rff: RFF settings for ``base="gp"`` (channels are taken from the noise shape).
    """

    base: Base = "white"
    rff: RFFConfig | None = None

    def __post_init__(self):
        check_base(self.base)
        check_rff(self.rff, self.base)


@register_method("fixed")
class FixedNoise(NoiseWarper):
    """Fixed noise: frame 0's draw repeated for every frame; the flows are ignored.

    Known limits: the noise sticks to the screen, not to the content ("texture sticking"): a moving
    object slides over a frozen noise pattern.
    """

    def __init__(self, base: Base = "white", rff: RFFConfig | None = None):
        super().__init__()
        self.config = SimpleConfig(base, rff)

    def _reset(self) -> torch.Tensor:
        self._noise = NoiseSource(self.config.base, self.config.rff).start(self)
        return self._noise

    def _step(self, back, fwd) -> torch.Tensor:
        return self._noise.clone()


@register_method("resample")
class ResampleNoise(NoiseWarper):
    """Resampled noise: an independent draw for every frame (white noise, or a newly drawn GP field);
    the flows are ignored.

    Known limits: no temporal correlation at all, so per-frame samples flicker.
    """

    def __init__(self, base: Base = "white", rff: RFFConfig | None = None):
        super().__init__()
        self.config = SimpleConfig(base, rff)

    def _reset(self) -> torch.Tensor:
        self._src = NoiseSource(self.config.base, self.config.rff)
        return self._src.start(self)

    def _step(self, back, fwd) -> torch.Tensor:
        return self._src.new_frame()
