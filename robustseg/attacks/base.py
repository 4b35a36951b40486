"""The one attack interface, after Foolbox 3: ``attack(model, images, targets, epsilons=[...])`` returns the
adversarial images for every epsilon at once. Attacks hold only their hyper-parameters, never state.

Images are lists of float (3,H,W) tensors in [0,1] (sizes may differ); every image gets its own perturbation.
eps is in [0,1] pixel units; Linf budgets bound every pixel, L2 budgets the whole image's perturbation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..models.modes import attack_mode
from .objectives import DetectorLoss, Objective

NORMS = ("linf", "l2")


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project one image's perturbation onto the eps-ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = delta.flatten().norm(p=2)
    return delta * torch.clamp(eps / (n + 1e-12), max=1.0)


def clip_image(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0)


def gradients(model, objective: Objective, images: list[torch.Tensor], targets: list[dict], sanitize: bool = True
              ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """d objective / d image for each image of the batch, in one forward+backward.

    ``sanitize`` zeroes non-finite entries so one bad pixel cannot turn an image into NaNs (the run's sanity
    checks count such gradients separately, with ``sanitize=False``).
    """
    xs = [x.detach().requires_grad_(True) for x in images]
    loss, _ = objective(model, xs, targets)
    if not loss.requires_grad:  # e.g. no loss term depends on the input: the gradient is zero
        return [torch.zeros_like(x) for x in xs], loss.detach()
    grads = torch.autograd.grad(loss, xs, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, xs)]
    if sanitize:
        grads = [torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0) for g in grads]
    return grads, loss.detach()


@dataclass(frozen=True)
class Attack:
    """Base class. Subclasses implement ``run`` for one eps; ``__call__`` sweeps epsilons."""
    norm: str = "linf"

    name = "attack"
    judged = False  # whether ``run`` takes a ``judge`` (attacks/judge.py) to choose, per image, what it returns

    def __call__(self, model, images: Sequence[torch.Tensor], targets: Sequence[dict], epsilons: Sequence[float],
                 objective: Objective | None = None, generator: torch.Generator | None = None, judge=None
                 ) -> list[list[torch.Tensor]]:
        objective = objective or DetectorLoss()
        with attack_mode(model):
            return [self.checked(model, list(images), list(targets), float(eps), objective, generator, judge)
                    for eps in epsilons]

    def checked(self, model, images, targets, eps, objective, generator, judge=None) -> list[torch.Tensor]:
        if eps == 0:
            return [x.detach().clone() for x in images]
        extra = {"judge": judge} if self.judged and judge is not None else {}
        adv = self.run(model, images, targets, eps, objective, generator, **extra)
        # the budget and the valid range are guaranteed, whatever the attack did in between
        return [clip_image(x + project((a - x).detach(), eps, self.norm)).detach() for x, a in zip(images, adv)]

    def run(self, model, images, targets, eps, objective, generator) -> list[torch.Tensor]:
        raise NotImplementedError
