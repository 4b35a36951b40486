"""Expectation over transformation (Athalye et al. 2018): for a model with randomised preprocessing, the
objective averaged over ``samples`` forward passes, so its gradient is the average of that many gradients
(``robustseg attack --eot N``; docs/defences.md). Any attack uses it through the objective interface.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .objectives import Objective, image_losses


@dataclass(frozen=True)
class EOT:
    objective: Objective
    samples: int

    @property
    def name(self) -> str:
        return self.objective.name

    def __call__(self, model, images, targets):
        """The mean of ``samples`` evaluations, each with the model's own fresh random draws."""
        total, info = None, {}
        for _ in range(self.samples):
            loss, info = self.objective(model, images, targets)
            total = loss if total is None else total + loss
        return total / self.samples, info

    def image_losses(self, model, images, targets) -> torch.Tensor:  # APGD's per-image values, averaged too
        return sum(image_losses(self.objective, model, images, targets) for _ in range(self.samples)) / self.samples

    @property
    def per_image_objective(self):
        inner = getattr(self.objective, "per_image_objective", None)
        if inner is None:
            return None
        return lambda model, images: sum(inner(model, images) for _ in range(self.samples)) / self.samples


def with_eot(objective: Objective, samples: int) -> Objective:
    """``objective`` averaged over ``samples`` passes (1: unchanged)."""
    return objective if samples == 1 else EOT(objective, samples)
