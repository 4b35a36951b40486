"""Projected gradient descent (Madry et al. 2018) in Linf or L2, with a random start by default.

Step size defaults to 2.5 * eps / steps (Madry's rule), so the walk can cross the ball whatever the step count.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

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
        # objectives that score each image separately (vanish) keep each image's best iterate, the clean image
        # included: the last iterate of a projected walk is not always the best one
        per_image = getattr(objective, "per_image_objective", None)
        walk = self.iterates(model, images, targets, eps, objective, generator)
        adv = next(walk)  # the start
        if per_image is None:
            for adv in walk:
                pass
            return adv
        best = [x.detach() for x in images]
        best_val = _finite(per_image(model, best))
        for adv in walk:
            val = _finite(per_image(model, adv))
            better = (val > best_val).tolist()
            best = [a if b else o for a, o, b in zip(adv, best, better)]
            best_val = torch.where(val > best_val, val, best_val)
        return best

    def iterates(self, model, images, targets, eps, objective, generator):
        """The walk, lazily: its start, then the images after each step (the masking probe stops it once it has
        its answer). Call inside ``attack_mode``, as ``run`` is."""
        alpha = self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * eps / self.steps
        xs = [x.detach() for x in images]
        adv = [clip_image(x + random_in_ball(x, eps, self.norm, generator)) if self.random_start else x.clone()
               for x in xs]
        yield adv
        for _ in range(self.steps):
            grads, _ = gradients(model, objective, adv, targets)
            adv = [clip_image(x + project(a + ascent_step(g, alpha, self.norm) - x, eps, self.norm))
                   for x, a, g in zip(xs, adv, grads)]
            yield adv


def _finite(v: torch.Tensor) -> torch.Tensor:
    """A non-finite objective value never counts as the best."""
    return torch.nan_to_num(v, nan=-torch.inf, posinf=-torch.inf)
