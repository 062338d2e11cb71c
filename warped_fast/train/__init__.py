"""Fine-tuning / training with GP noise (method section 6)."""

from .config import TrainConfig
from .trainer import Trainer, build_unet, training_noise

__all__ = ["TrainConfig", "Trainer", "build_unet", "training_noise"]
