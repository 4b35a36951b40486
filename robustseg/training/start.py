"""What a training run starts from: a fresh model, the weights of ``--init``, or the checkpoint being resumed.

A resumed run rebuilds the checkpoint's own model (a fine-tune's may differ from --arch/--arch-opt) and restores
the optimizer, scheduler, grad-scaler and this rank's RNG state, so it continues exactly where it stopped.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.coco import CocoDataset
from ..errors import RobustsegError
from ..models import build_model
from ..models.checkpoint import _torch_load, load_model
from .config import LEGACY_DEFAULTS, RESUME_MUST_MATCH, TrainConfig
from .distributed import Dist


@dataclass
class Start:
    """The model to train, its label space and the dataset read in that label space."""
    model: nn.Module
    arch: str
    arch_cfg: dict
    category_ids: list[int]
    class_names: list[str]
    dataset: CocoDataset


def resume_state(out: Path, resume: bool) -> dict | None:
    """The checkpoint a --resume continues (None for a fresh run); refuses to overwrite a run silently."""
    if not resume:
        if out.exists():
            raise RobustsegError(f"{out} exists; use --resume to continue it or --force to start over")
        return None
    if not out.is_file():
        raise RobustsegError(f"--resume: no checkpoint at {out} to resume from")
    state = _torch_load(out)
    if "train_state" not in state:
        raise RobustsegError(f"--resume: {out} has no training state (already finished or not a run)")
    return state


def build_start(cfg: TrainConfig, state: dict | None) -> Start:
    """The model (random init draws from the global RNG: seed it first) and the dataset in its label space."""
    if state:  # weights are loaded later, with the rest of the training state
        arch, arch_cfg = state["arch"], dict(state.get("arch_cfg") or {})
        category_ids, class_names = list(state["category_ids"]), list(state["class_names"])
        ds = CocoDataset(cfg.data, cfg.images, category_ids=category_ids)
        model = build_model(arch, len(category_ids) + 1, **arch_cfg)
    elif cfg.init:
        loaded = load_model(cfg.init)
        model, arch, arch_cfg = loaded.model, loaded.arch, loaded.arch_cfg
        category_ids, class_names = loaded.category_ids, loaded.class_names
        ds = CocoDataset(cfg.data, cfg.images, category_ids=category_ids)
    else:
        ds = CocoDataset(cfg.data, cfg.images)
        category_ids, class_names = ds.category_ids, ds.class_names
        arch, arch_cfg = cfg.arch, dict(cfg.arch_cfg)
        model = build_model(arch, len(category_ids) + 1, **arch_cfg)
    if len(ds) == 0:
        raise RobustsegError(f"{cfg.data}: no images to train on")
    return Start(model, arch, arch_cfg, category_ids, class_names, ds)


def restore(state: dict, model: nn.Module, opt, sched, scaler, d: Dist) -> int:
    """Load a resumed run's weights and training state; returns the iteration it continues from."""
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["state_dict"].items()})
    ts = state["train_state"]
    opt.load_state_dict(ts["optimizer"])
    sched.load_state_dict(ts["scheduler"])
    if "scaler" in ts:
        scaler.load_state_dict(ts["scaler"])
    per_rank = ts.get("torch_rng_per_rank") or []
    torch.set_rng_state(per_rank[d.rank] if len(per_rank) == d.world else ts["torch_rng"])
    return int(ts["iteration"])


def run_meta(cfg: TrainConfig, d: Dist, adversary: Any, data_hash: str) -> dict:
    """What the checkpoint records about how it was trained."""
    return {"trained_on": {"annotations": str(cfg.data), "sha256": data_hash, "images": str(cfg.images)},
            "train_config": asdict(cfg), "command": cfg.command or " ".join(sys.argv),
            "torch": str(torch.__version__), "world_size": d.world,
            "adversarial": adversary.describe() if hasattr(adversary, "describe") else None}


def resumed_meta(meta: dict, state: dict, cfg: TrainConfig, data_hash: str, start: int) -> dict:
    """``meta`` of a resumed run, after checking it continues the same run; keeps the command that started it
    (resuming is exact, so that command still reproduces the weights)."""
    old = state.get("meta", {})
    if old.get("trained_on", {}).get("sha256") != data_hash:
        raise RobustsegError(f"--resume: {cfg.data} is not the dataset this run was started on")
    # a setting the old checkpoint does not record had the value it had before the setting existed, which need not
    # be today's default (LEGACY_DEFAULTS: --bn was batch statistics before it became an option)
    old_cfg, defaults = old.get("train_config", {}), {**asdict(TrainConfig("", "")), **LEGACY_DEFAULTS}
    differs = [k for k in RESUME_MUST_MATCH if old_cfg.get(k, defaults[k]) != getattr(cfg, k)]
    if differs:
        raise RobustsegError(f"--resume: this run was started with different {', '.join(differs)} "
                             f"({', '.join(f'{k}={old_cfg.get(k, defaults[k])!r}' for k in differs)})")
    return {**meta, "command": old.get("command", meta["command"]),
            "resumed_at": list(old.get("resumed_at", [])) + [start]}
