"""Square Attack (Andriushchenko et al., ECCV 2020, "Square Attack: a query-efficient black-box adversarial attack
via random search"), Linf, adapted to a detector: a score-based attack that sees only the model's predictions.

It minimises a detection score from eval-mode outputs, no gradient anywhere (``detection_score``): the summed
confidence of the detections that match a target object, each weighted by its IoU with the best-matching target
of its own label (targets: the ground truth, or the clean detections for ``pseudo``; with no targets, as for
``vanish``, every detection counts). So a detection counts less as it moves off its object, changes label or
loses confidence, which is what lowers AP. The same spirit as the ``vanish`` objective, read from predictions.

Random search, as in the paper: start from vertical stripes of +-eps (one random sign per column and channel),
then per query change one random square window of side s to a random +-eps per channel, and keep the change if the
score fell. The square's area is a fraction p(i) of the image, halved on the paper's schedule (p_selection in the
authors' code, with the query index rescaled to their 10,000-query budget). Budget: ``steps`` queries per image,
a query being one prediction (the stripes' included); an image whose score reached zero (nothing left to remove)
stops querying. Where it differs from the paper: no margin loss (a detector has no single logit margin), no
resampling of a window that would not change the image, and Linf only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from .base import Attack, clip_image
from .logit_objectives import eval_forward

# the paper's schedule: after each fraction of the (10,000-query) budget, p is p_init divided by this
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
             (8000, 256), (10000, 512))


def square_fraction(p_init: float, query: int, queries: int) -> float:
    """p(i): the fraction of the image a square covers at query ``query`` of ``queries`` (the paper's schedule)."""
    it = int(query / queries * 10000)
    for end, div in _SCHEDULE:
        if it <= end:
            return p_init / div
    return p_init / 512


def detection_score(output: dict, target: dict) -> float:
    """The score Square minimises on one image: sum of detection confidence x IoU with the best target box of the
    same label (all detections' confidence when there are no targets)."""
    scores = output["scores"]
    if len(target["boxes"]) == 0 or len(scores) == 0:
        return float(scores.sum()) if len(target["boxes"]) == 0 else 0.0
    iou = box_iou(output["boxes"], target["boxes"].to(output["boxes"]))
    same = output["labels"][:, None] == target["labels"][None, :].to(output["labels"])
    return float((scores * (iou * same).max(dim=1).values).sum())


@torch.no_grad()
def scores(model, images: list[torch.Tensor], targets: list[dict]) -> list[float]:
    """One query per image: an eval-mode prediction (no mask branch), scored."""
    with eval_forward(model):
        outputs = model(images)
    return [detection_score(o, t) for o, t in zip(outputs, targets)]


def _signs(shape, generator, like: torch.Tensor) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=generator, device="cpu") * 2 - 1).to(like)


@dataclass(frozen=True)
class Square(Attack):
    steps: int = 100      # queries (predictions) per image
    p_init: float = 0.05  # the square's initial area fraction (the paper's Linf value)

    name = "square"

    def __call__(self, model, images, targets, epsilons, objective=None, generator=None, judge=None):
        # no attack_mode: a black-box attack only ever asks for eval-mode predictions; ``objective`` is unused
        return [self.checked(model, list(images), list(targets), float(e), objective, generator) for e in epsilons]

    @torch.no_grad()
    def run(self, model, images, targets, eps, objective, generator):
        if self.norm != "linf":  # the paper's L2 windows are another algorithm, not written here
            from ..errors import RobustsegError
            raise RobustsegError(f"square runs on norm linf only, not {self.norm!r}")
        xs = [x.detach() for x in images]
        adv = [clip_image(x + eps * _signs((x.shape[0], 1, x.shape[2]), generator, x)) for x in xs]  # stripes
        best = scores(model, adv, targets)
        for query in range(1, self.steps):
            live = [i for i, b in enumerate(best) if b > 0]
            if not live:
                break
            cands = [self.proposal(xs[i], adv[i], eps, query, generator) for i in live]
            for i, cand, s in zip(live, cands, scores(model, cands, [targets[i] for i in live])):
                if s < best[i]:
                    adv[i], best[i] = cand, s
        return adv

    def proposal(self, x: torch.Tensor, adv: torch.Tensor, eps: float, query: int, generator) -> torch.Tensor:
        """``adv`` with one random square window set to a random +-eps per channel around the clean image."""
        _, h, w = x.shape
        side = max(1, min(h, w, round(math.sqrt(square_fraction(self.p_init, query, self.steps) * h * w))))
        top = int(torch.randint(0, h - side + 1, (), generator=generator))
        left = int(torch.randint(0, w - side + 1, (), generator=generator))
        delta = adv - x
        delta[:, top:top + side, left:left + side] = eps * _signs((x.shape[0], 1, 1), generator, x)
        return clip_image(x + delta)
