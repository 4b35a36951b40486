"""What an attack maximises. An objective maps (model, images, targets) to a scalar loss and its components.

``gt`` (the default): a weighted sum of the detector's own training losses against the ground truth. The model
must be in ``attack_mode`` (train-mode loss branches, frozen normalisation) when an objective is called.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch

LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
_SHORT = {n.removeprefix("loss_"): n for n in LOSS_NAMES}


def resolve_losses(names: Sequence[str] | str | None) -> tuple[str, ...]:
    """Accept ``all``, full names (loss_mask) or short ones (mask, classifier, rpn_box_reg)."""
    from ..errors import RobustsegError
    if names is None or names == "all" or list(names) == ["all"]:
        return LOSS_NAMES
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for n in names:
        full = n if n in LOSS_NAMES else _SHORT.get(n)
        if full is None:
            raise RobustsegError(f"unknown loss {n!r}; choose from {', '.join(_SHORT)} or all")
        out.append(full)
    if not out:
        raise RobustsegError("no losses selected")
    return tuple(dict.fromkeys(out))


class Objective(Protocol):
    name: str

    def __call__(self, model: torch.nn.Module, images: list[torch.Tensor], targets: list[dict]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


@dataclass(frozen=True)
class DetectorLoss:
    """Weighted sum of Mask R-CNN's training losses against the given targets (ground truth)."""
    losses: tuple[str, ...] = LOSS_NAMES
    weights: dict = field(default_factory=dict)
    name: str = "gt"

    def __call__(self, model, images, targets):
        parts = model(images, targets)
        total = sum(self.weights.get(k, 1.0) * parts[k] for k in self.losses)
        return total, parts
