"""How an attack tells which of its iterates did the most damage to an image: that image's own COCO bbox AP.

AutoAttack's APGD returns, per example, an iterate that fools the classifier (its ``x_best_adv``), found on the
model's own predictions, not the iterate with the highest loss (``x_best``, which only steers the step size). A
detector's analogue: per image, the iterate whose eval-mode detections score the lowest AP against the image's
ground truth. The training losses are a loose proxy for AP at small eps: at 2/255 on the shipped model the
highest-loss iterate per image of APGD-10 gave a set AP (0.822) above every one of its last six iterates taken
whole (0.816-0.820; docs/objectives.md).

AP here is pycocotools' (``eval.coco_eval.evaluate``) on the dataset's own ground truth restricted to the one
image, boxes only (crowd regions ignored as COCO ignores them), from an eval-mode forward without the mask branch
(the boxes are the same; the masks would cost as much again on the cheap objectives' walks). An image alone is
not the set: COCO AP ranks detections across images, so this is a per-image criterion, not the reported figure.
"""
from __future__ import annotations

from typing import Sequence

import torch
from pycocotools.coco import COCO

from ..eval.coco_eval import evaluate, to_coco_results
from .logit_objectives import eval_forward


class Damage:
    """Per image, 1 - its bbox AP (higher = more damage); NaN where the image has no ground-truth object, where AP
    is undefined (the attack then falls back to its objective's value there)."""

    def __init__(self, gt: COCO, image_ids: Sequence[int], category_ids: Sequence[int]):
        self.gt, self.image_ids, self.category_ids = gt, [int(i) for i in image_ids], list(category_ids)
        self.has_objects = [bool(gt.getAnnIds(imgIds=[i], iscrowd=False)) for i in self.image_ids]

    def __call__(self, model, images: list[torch.Tensor]) -> torch.Tensor:
        if len(images) != len(self.image_ids):
            raise ValueError(f"judge has {len(self.image_ids)} images, got {len(images)}")
        with torch.no_grad(), eval_forward(model):  # boxes only: the mask branch would change nothing here
            outputs = model([x.detach() for x in images])
        out = []
        for output, iid, has in zip(outputs, self.image_ids, self.has_objects):
            if not has:
                out.append(float("nan"))
                continue
            results = to_coco_results(output, iid, self.category_ids, with_masks=False)
            ap = evaluate(self.gt, results, [iid], iou_types=("bbox",), per_class=False)["bbox"]["AP"]
            out.append(1.0 - ap if ap >= 0 else float("nan"))
        return torch.tensor(out, dtype=torch.float64)


def damage_judge(ds, image_ids: Sequence[int], category_ids: Sequence[int]) -> Damage | None:
    """The judge of a dataset's images, or None where it has no ground truth to judge by."""
    return Damage(ds.coco, image_ids, category_ids) if ds.has_annotations else None
