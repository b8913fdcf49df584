"""Training: ``python -m minimipt train ...`` or :func:`minimipt.train.train` from Python."""

from .config import PRESETS, TrainConfig, make_config
from .loop import TrainingFailed, train

__all__ = ["train", "TrainConfig", "make_config", "PRESETS", "TrainingFailed"]
