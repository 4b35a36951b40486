"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps (Linf), or one L2-normalised step (FGM)."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Attack, clip_image, gradients
from .steps import ascent_step


@dataclass(frozen=True)
class FGSM(Attack):
    name = "fgsm"

    def run(self, model, images, targets, eps, objective, generator):
        grads, _ = gradients(model, objective, images, targets)
        return [clip_image(x + ascent_step(g, eps, self.norm)) for x, g in zip(images, grads)]
