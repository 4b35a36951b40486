"""The input gradient of an attack's first gradient evaluation, recorded as it happens: the sanity checks read
the gradient's health (all zero? finite?) from the attack's own first step instead of paying a forward+backward
of their own (issue 19). For FGSM that step is at the clean image; for PGD and APGD at their random start.

``GradientTap(objective)`` is an objective like any other (attacks call it, ``image_losses`` or
``per_image_objective`` through it). On its first call with inputs that require a gradient it hooks those
inputs; autograd then hands each hook the raw gradient (before an attack zeroes non-finite entries). An input
whose hook never fired got no gradient: no term of the objective depends on it, so its gradient is zero.
"""
from __future__ import annotations

import torch

from .objectives import Objective, image_losses


class GradientTap:
    def __init__(self, objective: Objective, scale: float = 1.0):
        self.objective, self.scale = objective, scale  # scale: the loss scale under --amp fp16, divided out
        self.watched: list[torch.Tensor] | None = None
        self.grads: dict[int, torch.Tensor] = {}

    @property
    def name(self) -> str:
        return self.objective.name

    @property
    def per_image_objective(self):  # vanish's best-iterate selection: no gradient, nothing to record
        return getattr(self.objective, "per_image_objective", None)

    def __call__(self, model, images, targets):
        self.watch(images)
        return self.objective(model, images, targets)

    def image_losses(self, model, images, targets) -> torch.Tensor:
        self.watch(images)
        return image_losses(self.objective, model, images, targets)

    def watch(self, images) -> None:
        if self.watched is not None or not torch.is_grad_enabled() or not all(x.requires_grad for x in images):
            return
        self.watched = list(images)
        for i, x in enumerate(images):
            x.register_hook(self.recorder(i))

    def recorder(self, i: int):
        def record(g: torch.Tensor) -> None:
            if i not in self.grads:  # the first gradient only (an input reused later keeps its first)
                self.grads[i] = g.detach() / self.scale
        return record

    def gradients(self) -> list[torch.Tensor] | None:
        """Each watched input's first gradient (zero where none flowed), or None if no gradient was asked for."""
        if self.watched is None:
            return None
        return [self.grads.get(i, torch.zeros_like(x)) for i, x in enumerate(self.watched)]
