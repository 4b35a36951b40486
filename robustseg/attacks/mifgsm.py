"""MI-FGSM (Dong et al. 2018): momentum on L1-normalised gradients, step eps/steps, no random start."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Attack, clip_image, gradients, project
from .steps import ascent_step


@dataclass(frozen=True)
class MIFGSM(Attack):
    steps: int = 10
    decay: float = 1.0

    name = "mifgsm"

    def run(self, model, images, targets, eps, objective, generator):
        alpha = eps / self.steps
        xs = [x.detach() for x in images]
        adv = [x.clone() for x in xs]
        momentum = [torch.zeros_like(x) for x in xs]
        for _ in range(self.steps):
            grads, _ = gradients(model, objective, adv, targets)
            momentum = [self.decay * m + g / (g.abs().mean() + 1e-12) for m, g in zip(momentum, grads)]
            adv = [clip_image(x + project(a + ascent_step(m, alpha, self.norm) - x, eps, self.norm))
                   for x, a, m in zip(xs, adv, momentum)]
        return adv
