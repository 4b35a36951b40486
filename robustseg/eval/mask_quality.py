"""Mask quality beyond AP: mask IoU, Dice, soft Dice and Boundary IoU of matched ground-truth objects.

Matching (per image and category, as COCO does): detections with score >= threshold, taken in descending
score order, each claims the unmatched ground-truth object of the same category with the highest mask IoU,
if that IoU is >= 0.5. Crowd annotations are never matched.

Boundary IoU follows Cheng et al. 2021 ("Boundary IoU: Improving Object-Centric Image Segmentation
Evaluation") and their reference code: a mask's boundary region is the set of its pixels within distance d of
its contour (mask minus its erosion by a 3x3 element applied d times; outside the image counts as background),
with d = 2% of the image diagonal (at least 1 pixel).

Soft Dice needs mask probabilities. Predictions JSON files hold only masks binarised at 0.5, so the
file-based table (``mask_quality_table``) leaves ``soft_dice`` empty; callers holding the model's soft masks
(torchvision's ``output["masks"]``) pass them to ``match_image(..., pred_probs=...)`` to fill it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

MATCH_IOU = 0.5
BOUNDARY_DILATION_RATIO = 0.02
COLUMNS = ["point", "n_gt", "n_matched", "recall", "mask_iou", "dice", "soft_dice", "boundary_iou",
           "n_paired", "paired_mask_iou_clean", "paired_mask_iou", "paired_boundary_iou_clean",
           "paired_boundary_iou"]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / total) if total else 1.0


def soft_dice(prob: np.ndarray, gt: np.ndarray) -> float:
    """2 * sum(p * g) / (sum(p) + sum(g)) with p in [0,1] the predicted probabilities; equals Dice for 0/1 p."""
    p, g = np.asarray(prob, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    total = p.sum() + g.sum()
    return float(2 * (p * g).sum() / total) if total else 1.0


def boundary_dilation(height: int, width: int, ratio: float = BOUNDARY_DILATION_RATIO) -> int:
    return max(1, int(round(ratio * np.hypot(height, width))))


def boundary_region(mask: np.ndarray, d: int) -> np.ndarray:
    """Pixels of ``mask`` within (chessboard) distance ``d`` of its contour; the image edge is a contour."""
    mask = mask.astype(bool)
    inner = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), iterations=d, border_value=0)
    return mask & ~inner


def boundary_iou(gt: np.ndarray, pred: np.ndarray, d: int | None = None) -> float:
    """Boundary IoU of two binary masks of the same shape; ``d`` defaults to 2% of the image diagonal."""
    h, w = gt.shape
    d = boundary_dilation(h, w) if d is None else d
    # Crop to both masks' bounding box plus one pixel: the pixels cut away are background, so the erosion
    # (with background outside) gives the same result as on the full image, much faster on large images.
    ys, xs = np.nonzero(np.logical_or(gt, pred))
    if len(ys) == 0:
        return 1.0
    y0, y1, x0, x1 = max(ys.min() - 1, 0), min(ys.max() + 2, h), max(xs.min() - 1, 0), min(xs.max() + 2, w)
    g = boundary_region(gt[y0:y1, x0:x1], d)
    p = boundary_region(pred[y0:y1, x0:x1], d)
    return mask_iou(g, p)


def greedy_match(ious: np.ndarray, gt_cats, pred_cats, pred_scores,
                 iou_threshold: float = MATCH_IOU) -> list[tuple[int, int]]:
    """(gt, pred) pairs: predictions by descending score each take the best free same-category GT >= threshold.

    ``ious`` is (n_pred, n_gt) mask IoU.
    """
    pairs, taken = [], set()
    for j in np.argsort(-np.asarray(pred_scores, dtype=float), kind="stable"):
        best, best_iou = None, iou_threshold
        for i, c in enumerate(gt_cats):
            if i not in taken and c == pred_cats[j] and ious[j, i] >= best_iou:
                best, best_iou = i, ious[j, i]
        if best is not None:
            taken.add(best)
            pairs.append((best, int(j)))
    return pairs


def pair_scores(gt: np.ndarray, pred: np.ndarray, prob: np.ndarray | None = None, d: int | None = None) -> dict:
    return {"mask_iou": mask_iou(gt, pred), "dice": dice(gt, pred),
            "soft_dice": soft_dice(prob, gt) if prob is not None else np.nan,
            "boundary_iou": boundary_iou(gt, pred, d)}


def match_image(gt_masks: list[np.ndarray], gt_cats: list[int], pred_masks: list[np.ndarray],
                pred_cats: list[int], pred_scores: list[float], pred_probs: list[np.ndarray] | None = None,
                iou_threshold: float = MATCH_IOU) -> dict[int, dict]:
    """Match one image's detections to its GT; {gt index: {mask_iou, dice, soft_dice, boundary_iou}}."""
    ious = np.array([[mask_iou(g, p) for g in gt_masks] for p in pred_masks]).reshape(len(pred_masks),
                                                                                      len(gt_masks))
    return {i: pair_scores(gt_masks[i], pred_masks[j], None if pred_probs is None else pred_probs[j])
            for i, j in greedy_match(ious, gt_cats, pred_cats, pred_scores, iou_threshold)}


def _mean(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def mask_quality_table(run_dir: str | Path, score_threshold: float | None = None):
    """Per attack point of a results directory: matched-object mask quality (a DataFrame, COLUMNS).

    Reads predictions/*.json and the ground truth named in run.json; raises FileNotFoundError when the
    annotations are gone (the report then keeps an existing mask_quality.csv or leaves the section out).
    """
    import pandas as pd

    from ..data.coco import coco_from_dict
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    ann_path = Path(info["dataset"]["annotations"])
    coco = coco_from_dict(json.loads(ann_path.read_text()))
    if score_threshold is None:
        score_threshold = float(info.get("score_threshold_for_counts", 0.5))
    # the cue-conflict probe predicts on its own image set (run.json "cue_conflict"): not this ground truth
    other_gt = {"probe-cue-conflict"} if info.get("cue_conflict") else set()
    keys = ["clean"] + sorted(p.stem for p in (run_dir / "predictions").glob("*.json")
                              if p.stem != "clean" and p.stem not in other_gt)
    preds: dict[str, dict[int, list]] = {}
    for k in keys:
        by_image: dict[int, list] = {}
        for r in json.loads((run_dir / "predictions" / f"{k}.json").read_text()):
            if r.get("score", 0) >= score_threshold and "segmentation" in r:
                by_image.setdefault(int(r["image_id"]), []).append(r)
        preds[k] = by_image
    image_ids = _evaluated_image_ids(run_dir, info, coco)
    per_obj: dict[str, list[dict | None]] = {k: [] for k in keys}  # one entry per GT object, None = missed
    for iid in image_ids:
        img = coco.imgs[iid]
        h, w = int(img["height"]), int(img["width"])
        anns = [a for a in coco.imgToAnns.get(iid, []) if not a.get("iscrowd", 0) and "segmentation" in a]
        gt_rles = [coco.annToRLE(a) for a in anns]
        cats = [int(a["category_id"]) for a in anns]
        gts: dict[int, np.ndarray] = {}  # decoded lazily: only matched objects need pixels
        for k in keys:
            rs = preds[k].get(iid, [])
            m = {}
            if rs and anns:  # IoUs on RLEs (fast); pixels only for the matched pairs
                ious = mask_utils.iou([r["segmentation"] for r in rs], gt_rles, [0] * len(anns))
                for i, j in greedy_match(ious, cats, [int(r["category_id"]) for r in rs], [r["score"] for r in rs]):
                    g = gts.setdefault(i, mask_utils.decode(gt_rles[i]).astype(bool))
                    m[i] = pair_scores(g, mask_utils.decode(rs[j]["segmentation"]).astype(bool)[:h, :w],
                                       d=boundary_dilation(h, w))
            per_obj[k] += [m.get(i) for i in range(len(anns))]
    rows = []
    for k in keys:
        objs, clean = per_obj[k], per_obj["clean"]
        hit = [o for o in objs if o is not None]
        pairs = [(c, o) for c, o in zip(clean, objs) if c is not None and o is not None]
        rows.append({
            "point": k, "n_gt": len(objs), "n_matched": len(hit), "recall": len(hit) / len(objs) if objs else np.nan,
            **{m: _mean(o[m] for o in hit) for m in ("mask_iou", "dice", "soft_dice", "boundary_iou")},
            "n_paired": len(pairs),
            "paired_mask_iou_clean": _mean(c["mask_iou"] for c, _ in pairs),
            "paired_mask_iou": _mean(o["mask_iou"] for _, o in pairs),
            "paired_boundary_iou_clean": _mean(c["boundary_iou"] for c, _ in pairs),
            "paired_boundary_iou": _mean(o["boundary_iou"] for _, o in pairs)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _evaluated_image_ids(run_dir: Path, info: dict, coco) -> list[int]:
    """The images the run attacked: per_image.csv's ids, else the first ``limit`` ids as the runner takes them."""
    import pandas as pd
    per_image = run_dir / "per_image.csv"
    if per_image.is_file():
        ids = pd.read_csv(per_image, usecols=["image_id"]).image_id.unique()
        if len(ids):
            return sorted(int(i) for i in ids)
    ids = sorted(coco.getImgIds())
    return ids[:info["limit"]] if info.get("limit") else ids
