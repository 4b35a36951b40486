"""The random baseline every sweep runs: noise of the same norm and size as the attack's budget.

Linf: uniform random signs times eps (every pixel moved by exactly eps). L2: a uniform random direction of norm
eps. An attack that does no better than this is not finding the model's weaknesses.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Attack, clip_image
from .steps import random_on_sphere


@dataclass(frozen=True)
class RandomNoise(Attack):
    name = "random"

    def __call__(self, model, images, targets, epsilons, objective=None, generator=None, judge=None):
        return [self.checked(model, list(images), list(targets), float(e), objective, generator) for e in epsilons]

    def run(self, model, images, targets, eps, objective, generator):
        return [clip_image(x + random_on_sphere(x, eps, self.norm, generator)) for x in images]
