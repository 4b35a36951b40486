"""What a training run is asked to do: ``TrainConfig``, and the checks that need nothing but the config."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..amp import AMP_DTYPES
from ..errors import RobustsegError

# settings a resumed run must share with the run it continues (anything else may change, e.g. --eval-every)
RESUME_MUST_MATCH = ("batch_size", "seed", "adv", "eps", "steps", "adv_ratio", "amp", "bn")
BN_POLICIES = ("batch", "frozen")
# what a checkpoint written before a setting existed was trained with (for --resume; see start.resumed_meta)
LEGACY_DEFAULTS = {"bn": "batch"}


@dataclass
class TrainConfig:
    data: str
    images: str
    out: str = "runs/train/model.pt"
    arch: str = "tiny"
    arch_cfg: dict = field(default_factory=dict)
    init: str | None = None            # start from these weights (fine-tuning) instead of random init
    iters: int = 3000
    batch_size: int = 4                # global: split over the processes under torchrun
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    decay_at: float = 0.8              # LR x0.1 for the last (1 - decay_at) of the run
    clip: float = 10.0
    seed: int = 0
    ckpt_every: int = 500
    hflip: bool = True
    half: bool = False                 # store the final checkpoint in fp16 (half the size)
    device: str = "cpu"
    workers: int = 0
    command: str = ""
    adv: str | None = None             # pgd | fgsm-rs: adversarial fine-tuning (adversarial.py)
    eps: float = 4 / 255               # Linf budget of the training (and periodic-eval) attack
    steps: int = 3                     # PGD steps when making training examples
    adv_ratio: float = 0.5             # fraction of each batch replaced by adversarial versions
    # BatchNorm while training: "batch" (each sub-batch, clean and adversarial, normalised by its own statistics,
    # both updating the running ones) or "frozen" (running statistics throughout, as the examples are crafted:
    # the model trained is the function attacked; affine weights still learn). None: default_bn()
    bn: str | None = None
    amp: str | None = None             # bf16 | fp16 autocast (CUDA only)
    eval_every: int = 0                # clean + PGD AP every N iterations on eval_data (0: never)
    eval_data: str | None = None
    eval_images: str | None = None
    eval_limit: int = 16
    eval_steps: int = 10


def default_bn(cfg: TrainConfig) -> str:
    """The BatchNorm policy when none is given: frozen when fine-tuning (``init``), batch statistics from scratch.

    Frozen was measured against batch for adversarial fine-tuning of the shipped model (docs/adversarial-training.md:
    FGSM-RS 4/255, robust box AP at 8/255 0.440 vs 0.367, paired difference +0.073 [+0.010, +0.144], clean AP
    alike). From a random init there are no running statistics worth freezing (they are 0 and 1), so training from
    scratch keeps batch statistics."""
    if cfg.bn is not None:
        return cfg.bn
    return "frozen" if cfg.init else "batch"


def check_options(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse option combinations that cannot work, before anything is loaded or written."""
    if cfg.amp is not None:
        if cfg.amp not in AMP_DTYPES:
            raise RobustsegError(f"--amp must be bf16 or fp16, not {cfg.amp!r}")
        if device.type != "cuda":
            raise RobustsegError(f"--amp {cfg.amp} needs a CUDA device (this run is on {device}); drop --amp on CPU")
    if cfg.bn not in BN_POLICIES:
        raise RobustsegError(f"--bn must be one of {', '.join(BN_POLICIES)}, not {cfg.bn!r}")
    if cfg.eval_every and not (cfg.eval_data and cfg.eval_images):
        raise RobustsegError("--eval-every needs --eval-data ANN.json and --eval-images DIR")


def lr_factor(it: int, cfg: TrainConfig) -> float:
    """Linear warm-up from 0.1% of --lr, then x0.1 from ``decay_at`` of the run on."""
    if it < cfg.warmup:
        return 0.001 + (1 - 0.001) * it / max(cfg.warmup, 1)
    return 0.1 if it >= cfg.decay_at * cfg.iters else 1.0
