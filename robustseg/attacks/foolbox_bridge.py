"""Foolbox 3 on the objects a detector sees.

``ObjectClassifier`` turns Mask R-CNN into a classifier of fixed boxes: input k is a copy of the image, output k
is the class logits of the k-th ground-truth box, computed through the model's own transform, backbone, RoIAlign
and box head. Wrapped as a ``foolbox.PyTorchModel`` with bounds (0, 1), any foolbox attack (LinfPGD,
L2CarliniWagnerAttack, FGSM, L2DeepFoolAttack, ...) runs on it; the result is object-level robust accuracy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RobustsegError


class ObjectClassifier(nn.Module):
    """(K,3,H,W) copies of one image -> (K, num_classes) logits of box k for copy k."""

    def __init__(self, detector: nn.Module, boxes: torch.Tensor):
        super().__init__()
        self.detector = detector
        self.register_buffer("boxes", boxes.detach().float().reshape(-1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        det = self.detector
        h, w = x.shape[-2:]
        images, _ = det.transform(list(x))
        feats = det.backbone(images.tensors)
        rois = []
        for k, (sh, sw) in enumerate(images.image_sizes):
            scale = torch.tensor([sw / w, sh / h, sw / w, sh / h], device=x.device)
            rois.append(self.boxes[k:k + 1] * scale)
        pooled = det.roi_heads.box_roi_pool(feats, rois, images.image_sizes)
        logits, _ = det.roi_heads.box_predictor(det.roi_heads.box_head(pooled))
        return logits


@dataclass(frozen=True)
class ClassifierCE:
    """Cross-entropy of an ``ObjectClassifier``: the objective robustseg's own attacks use on the wrapper."""
    name: str = "object-ce"

    def __call__(self, model, images, targets):
        logits = model(torch.stack(images))
        labels = torch.cat([t["labels"].reshape(-1) for t in targets])
        return F.cross_entropy(logits, labels, reduction="sum"), {}


def _attack_class(name):
    import foolbox as fb
    cls = getattr(fb.attacks, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, fb.attacks.base.Attack)):
        raise RobustsegError(f"unknown foolbox attack {name!r} (see foolbox.attacks, e.g. LinfPGD, "
                             f"L2CarliniWagnerAttack, FGSM, L2DeepFoolAttack)")
    return cls


def check_foolbox_attack(name, options: dict) -> str:
    """Validate a foolbox attack name and its options; returns its norm ("linf" or "l2")."""
    cls = _attack_class(name)
    try:
        attack = cls(**options)
    except TypeError as e:
        raise RobustsegError(f"foolbox {name}: bad options {options}: {e}") from None
    p = getattr(getattr(attack, "distance", None), "p", None)
    if p == math.inf:
        return "linf"
    if p == 2:
        return "l2"
    raise RobustsegError(f"foolbox {name}: only Linf and L2 attacks are supported (distance {p})")


def object_robust_accuracy(detector: nn.Module, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                           name: str, options: dict, epsilons: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean correct (K,), robust correct (len(eps), K)) for one image's ground-truth objects under a foolbox
    attack. Correct means argmax of the box's class logits equals its label (background counts as wrong)."""
    import foolbox as fb
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.bool), torch.zeros((len(epsilons), 0), dtype=torch.bool)
    was_training = detector.training
    detector.eval()
    try:
        wrapper = ObjectClassifier(detector, boxes).eval()
        fmodel = fb.PyTorchModel(wrapper, bounds=(0, 1), device=image.device)
        x = image.unsqueeze(0).repeat(len(boxes), 1, 1, 1)
        with torch.no_grad():
            clean = wrapper(x).argmax(1) == labels
        _, _, success = _attack_class(name)(**options)(fmodel, x, labels, epsilons=list(epsilons))
        return clean.cpu(), (~success).cpu() & clean.cpu()
    finally:
        detector.train(was_training)


def object_robust_accuracy_native(detector: nn.Module, image: torch.Tensor, boxes: torch.Tensor,
                                  labels: torch.Tensor, attack, epsilons: list[float]) -> torch.Tensor:
    """The same measurement with one of robustseg's own attacks (e.g. ``PGD``): robust correct (len(eps), K)."""
    was_training = detector.training
    detector.eval()
    try:
        wrapper = ObjectClassifier(detector, boxes).eval()
        xs = [image] * len(boxes)
        targets = [{"labels": lab.reshape(1)} for lab in labels]
        out = []
        for adv in attack(wrapper, xs, targets, epsilons, ClassifierCE()):
            with torch.no_grad():
                out.append(wrapper(torch.stack(adv)).argmax(1) == labels)
        return torch.stack(out).cpu()
    finally:
        detector.train(was_training)
