from .adversarial import ADV_KINDS, Adversary
from .loop import TrainConfig, train

__all__ = ["ADV_KINDS", "Adversary", "TrainConfig", "train"]
