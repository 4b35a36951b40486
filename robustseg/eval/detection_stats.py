"""What each objective targets, measured per attack point from predictions + ground truth.

Ground-truth objects (non-crowd) and detections with score >= 0.5 are matched greedily by score at box IoU >= 0.5,
class-agnostic (an object found with the wrong class is not 'vanished'; it may be 'mislabelled'):
- vanishing_rate: fraction of ground-truth objects with no matched detection;
- fp_per_image: unmatched detections per image (fabricated objects);
- targeted_success: fraction of objects whose matched detection has the objective's target class (mislabel);
- mask_iou: mean mask IoU of matched pairs (mask damage).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

SCORE = 0.5
IOU = 0.5


def detection_stats(gt: COCO, results: list[dict], image_ids: list[int], target_category: dict | None = None) -> dict:
    """``target_category`` maps a ground-truth category id to the class a mislabel attack aims for."""
    dets = defaultdict(list)
    for r in results:
        if r["score"] >= SCORE:
            dets[r["image_id"]].append(r)
    n_gt = matched = fps = hits = 0
    mask_ious = []
    for iid in image_ids:
        anns = [a for a in gt.imgToAnns.get(iid, []) if not a.get("iscrowd", 0)]
        ds = sorted(dets.get(iid, []), key=lambda r: -r["score"])
        n_gt += len(anns)
        if not ds:
            continue
        if not anns:
            fps += len(ds)
            continue
        box_iou = mask_utils.iou([d["bbox"] for d in ds], [a["bbox"] for a in anns], [0] * len(anns))
        free = np.ones(len(anns), bool)
        for i, d in enumerate(ds):
            cand = np.where(free & (box_iou[i] >= IOU))[0]
            if not len(cand):
                fps += 1
                continue
            j = cand[np.argmax(box_iou[i][cand])]
            free[j] = False
            matched += 1
            a = anns[j]
            if target_category is not None and target_category.get(a["category_id"]) == d["category_id"]:
                hits += 1
            if "segmentation" in d and "segmentation" in a:
                g = gt.annToRLE(a)
                mask_ious.append(float(mask_utils.iou([d["segmentation"]], [g], [0])[0, 0]))
    return {"objects": n_gt,
            "vanishing_rate": (n_gt - matched) / n_gt if n_gt else float("nan"),
            "fp_per_image": fps / len(image_ids) if image_ids else float("nan"),
            "targeted_success": hits / n_gt if (target_category is not None and n_gt) else float("nan"),
            "mask_iou": float(np.mean(mask_ious)) if mask_ious else float("nan")}
