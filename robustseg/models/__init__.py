from .builders import PRESETS, build_model
from .checkpoint import SHIPPED, LoadedModel, load_model, save_checkpoint
from .modes import attack_mode

__all__ = ["PRESETS", "build_model", "SHIPPED", "LoadedModel", "load_model", "save_checkpoint", "attack_mode"]
