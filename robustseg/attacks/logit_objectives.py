"""Objectives on the box head's logits, which do not saturate where the softmax scores do (docs/objectives.md).

- ``LogitVanish`` (``vanish-logit``): every candidate detection's margin over background above a floor, minimised;
- ``BoxMargin`` (``margin``, ``mislabel-margin``): Carlini & Wagner's margin on each ground-truth box's logits.

Both read the model in eval mode (no mask branch) and give each image's value from one batched forward, so an
attack that keeps per-image bests (APGD) gets the values with the gradient, at no extra pass.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch


@contextmanager
def eval_forward(model):
    """Eval mode without the mask branch, for objectives that read detections or box logits; every module's own
    flag and the mask RoI pool come back afterwards (attack mode is train mode with frozen normalisation)."""
    modes = [(m, m.training) for m in model.modules()]
    mask_pool = model.roi_heads.mask_roi_pool
    try:
        model.eval()
        model.roi_heads.mask_roi_pool = None  # no mask branch: scores only
        yield model
    finally:
        model.roi_heads.mask_roi_pool = mask_pool
        for m, flag in modes:
            m.training = flag


def proposal_logits(model, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """The box head's class logits (P_i, C) at every RPN proposal of each image: the detections' scores are
    their softmax, before thresholding and NMS. Call under ``eval_forward``."""
    batch, _ = model.transform(images)
    features = _features(model, batch)
    proposals, _ = model.rpn(batch, features)
    return _box_logits(model, features, proposals, batch.image_sizes)


def box_logits(model, images: list[torch.Tensor], targets: list[dict]) -> list[torch.Tensor]:
    """The box head's class logits (K_i, C) at each image's ground-truth boxes, scaled as the image is."""
    batch, scaled = model.transform(images, [{"boxes": t["boxes"]} for t in targets])
    features = _features(model, batch)
    return _box_logits(model, features, [t["boxes"] for t in scaled], batch.image_sizes)


def _features(model, batch) -> dict:
    features = model.backbone(batch.tensors)
    return features if isinstance(features, dict) else {"0": features}


def _box_logits(model, features, boxes, image_sizes) -> list[torch.Tensor]:
    heads = model.roi_heads
    logits, _ = heads.box_predictor(heads.box_head(heads.box_roi_pool(features, boxes, image_sizes)))
    return list(logits.split([len(b) for b in boxes]))


def background_margins(logits: torch.Tensor) -> torch.Tensor:
    """z_c - z_background for every foreground class c (columns 1..C-1): the log-odds of c against background
    alone. It bounds the detection score from above whatever the other classes do, p_c <= sigmoid(z_c - z_0),
    and has slope 1 where the softmax is flat (p_c ~ 1)."""
    return logits[:, 1:] - logits[:, :1]


VANISH_LOGIT_FLOOR = -5.0  # sigmoid(-5) = 0.0067: a term below it is a score under 0.007, no detection any more


@dataclass(frozen=True)
class LogitVanish:
    """sign * the sum, over every proposal and foreground class, of max(z_c - z_0 - floor, 0) ** 2.

    ``vanish`` (the summed scores) saturates: at score ~1 the softmax is flat, and on the shipped model its
    vanishing rate did not move from 8/255 to 16/255. The background margin keeps a unit slope there, and bounds
    the score whatever the other classes do: the log-odds against *all* other classes could also be lowered by
    raising another foreground class, and that attack traded one detection for another (78 clean detections
    became 114). Squared, the hinge pulls hardest on the most confident terms, the detections that survive;
    linear, the gradient spread over hundreds of weak proposals (docs/objectives.md has the figures). Every
    proposal counts, before NMS, so a duplicate box cannot surface when the kept one goes down, and a term that
    rises above the floor joins the sum.
    """
    floor: float = VANISH_LOGIT_FLOOR
    sign: float = -1.0
    name: str = "vanish-logit"

    def image_losses(self, model, images, targets) -> torch.Tensor:
        with eval_forward(model):
            logits = proposal_logits(model, images)
        return torch.stack([self.sign * (background_margins(z) - self.floor).clamp(min=0).pow(2).sum()
                            for z in logits])

    def __call__(self, model, images, targets):
        total = self.image_losses(model, images, targets).sum() / len(images)
        return total, {"logit_excess": self.sign * total.detach()}

    @torch.no_grad()
    def per_image_objective(self, model, images) -> torch.Tensor:
        """PGD keeps each image's best iterate by it, as for ``vanish`` (one batched forward, no backward)."""
        return self.image_losses(model, images, [{} for _ in images])


MARGIN_KAPPA = 5.0  # CW's confidence: an object this far past the decision boundary stops pulling the step


@dataclass(frozen=True)
class BoxMargin:
    """Carlini & Wagner's margin on each ground-truth box's logits, clamped at -kappa, summed per image; the
    objective (maximised) is minus the margins.

    Untargeted: z_y - max_{k real, k != y} z_k, y the object's class; background is not an "other" class (pushing
    objects to background is ``vanish``). Targeted (the relabelled ground truth of ``mislabel``): max_{k != t} z_k -
    z_t, background included, so that the object must be *detected* as t. ``ignore_labels`` are never the best
    other class (torchvision's N/A slots). Logits, not probabilities: a confident object still has a gradient.
    """
    targeted: bool = False
    kappa: float = MARGIN_KAPPA
    ignore_labels: tuple[int, ...] = ()
    name: str = "margin"

    def image_losses(self, model, images, targets) -> torch.Tensor:
        with eval_forward(model):
            logits = box_logits(model, images, targets)
        return torch.stack([-self.margins(z, t["labels"]).clamp(min=-self.kappa).sum()
                            for z, t in zip(logits, targets)])

    def margins(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One margin per box: > 0 while the box is still read as (untargeted) / not yet read as (targeted) its
        label."""
        labels = labels.view(-1, 1).to(logits.device)
        other = torch.zeros_like(logits, dtype=torch.bool)
        other[:, list(self.ignore_labels)] = True
        if not self.targeted:
            other[:, 0] = True
        best_other = logits.masked_fill(other.scatter(1, labels, True), -torch.inf).amax(1)
        own = logits.gather(1, labels).squeeze(1)
        return best_other - own if self.targeted else own - best_other

    def __call__(self, model, images, targets):
        total = self.image_losses(model, images, targets).sum() / len(images)
        return total, {"margin": -total.detach()}
