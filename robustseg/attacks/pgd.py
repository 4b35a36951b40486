"""Projected gradient descent (Madry et al. 2018) in Linf or L2, with a random start by default.

Step size defaults to 2.5 * eps / steps (Madry's rule), so the walk can cross the ball whatever the step count.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Attack, clip_image, gradients, project
from .steps import ascent_step, random_in_ball


@dataclass(frozen=True)
class PGD(Attack):
    steps: int = 10
    rel_stepsize: float = 2.5          # step = rel_stepsize * eps / steps
    abs_stepsize: float | None = None  # overrides rel_stepsize when given
    random_start: bool = True

    name = "pgd"

    def run(self, model, images, targets, eps, objective, generator):
        alpha = self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * eps / self.steps
        xs = [x.detach() for x in images]
        adv = [clip_image(x + random_in_ball(x, eps, self.norm, generator)) if self.random_start else x.clone()
               for x in xs]
        for _ in range(self.steps):
            grads, _ = gradients(model, objective, adv, targets)
            adv = [clip_image(x + project(a + ascent_step(g, alpha, self.norm) - x, eps, self.norm))
                   for x, a, g in zip(xs, adv, grads)]
        return adv
