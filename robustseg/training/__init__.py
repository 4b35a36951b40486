from .adversarial import ADV_KINDS, Adversary
from .config import TrainConfig
from .loop import train

__all__ = ["ADV_KINDS", "Adversary", "TrainConfig", "train"]
