"""What happened to each ground-truth object at a point: found, mislabelled, mislocalised or vanished.

Per image, detections with score >= 0.5 are matched to non-crowd ground truth greedily by score at box IoU >=
0.5, first within each class (as COCO matches), then, among what is left, across classes; an object is then
- ``found``: matched by a detection of its own class;
- ``mislabelled``: not found, but matched (IoU >= 0.5) by a detection of another class;
- ``mislocalised``: neither, but a detection left unmatched overlaps it with IoU in [0.1, 0.5);
- ``vanished``: nothing overlaps it by IoU >= 0.1.
By class and by COCO size (small < 32², medium < 96², large, from the annotation's area), with a 95%
percentile-bootstrap interval of each rate over images (the run's own resamples, so clean and attacked rates are
on the same images).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from .bootstrap import interval

SCORE, IOU, NEAR = 0.5, 0.5, 0.1
OUTCOMES = ("found", "mislabelled", "mislocalised", "vanished")
SIZES = (("small", 0, 32 ** 2), ("medium", 32 ** 2, 96 ** 2), ("large", 96 ** 2, float("inf")))
COLUMNS = ["point", "category", "size", "objects", *OUTCOMES] + [
    f"{o}_{k}" for o in OUTCOMES for k in ("rate", "ci_lo", "ci_hi")]


def size_of(ann: dict) -> str:
    """COCO's size of an object from its area (its box's area when the area is missing or not a number >= 0)."""
    area = ann.get("area")
    if not isinstance(area, (int, float)) or not area >= 0:
        w, h = ann["bbox"][2:4]
        area = max(float(w) * float(h), 0.0)
    return next((name for name, lo, hi in SIZES if lo <= area < hi), "large")


def _greedy(iou: np.ndarray, dets: list[int], free: np.ndarray, allowed) -> list[tuple[int, int]]:
    """Detections (in score order) each take the free object of highest IoU >= 0.5 that ``allowed(i, j)``."""
    pairs = []
    for i in dets:
        cand = [j for j in np.where(free & (iou[i] >= IOU))[0] if allowed(i, j)]
        if cand:
            j = max(cand, key=lambda c: iou[i][c])
            free[j] = False
            pairs.append((i, j))
    return pairs


def per_object(gt: COCO, results: list[dict], image_ids: list[int]) -> list[dict]:
    """One row per non-crowd ground-truth object of ``image_ids``: image_id, category_id, size, outcome."""
    dets = defaultdict(list)
    for r in results:
        if r["score"] >= SCORE:
            dets[r["image_id"]].append(r)
    rows = []
    for iid in image_ids:
        anns = [a for a in gt.imgToAnns.get(iid, []) if not a.get("iscrowd", 0)]
        if not anns:
            continue
        ds = sorted(dets.get(iid, []), key=lambda r: -r["score"])
        outcome = ["vanished"] * len(anns)
        if ds:
            iou = mask_utils.iou([d["bbox"] for d in ds], [a["bbox"] for a in anns], [0] * len(anns))
            free, used = np.ones(len(anns), bool), np.zeros(len(ds), bool)
            same = lambda i, j: ds[i]["category_id"] == anns[j]["category_id"]  # noqa: E731
            for label, allowed in (("found", same), ("mislabelled", lambda i, j: True)):
                for i, j in _greedy(iou, [i for i in range(len(ds)) if not used[i]], free, allowed):
                    used[i], outcome[j] = True, label
            for j in np.where(free)[0]:
                if (~used).any() and iou[~used, j].max() >= NEAR:
                    outcome[j] = "mislocalised"
        rows += [{"image_id": iid, "category_id": a["category_id"], "size": size_of(a), "outcome": o}
                 for a, o in zip(anns, outcome)]
    return rows


def outcome_rows(point: str, objects: list[dict], image_ids: list[int], names: dict, resamples) -> list[dict]:
    """The table of one point: per (category or "all", size or "all") the counts, rates and rate intervals."""
    pos = {iid: n for n, iid in enumerate(sorted(image_ids))}  # resample rows index the sorted ids
    groups = {("all", "all"): objects}
    for o in objects:
        cat = names.get(o["category_id"], str(o["category_id"]))
        for key in ((cat, "all"), ("all", o["size"]), (cat, o["size"])):
            groups.setdefault(key, []).append(o)
    out = []
    for (cat, size), objs in groups.items():
        per_image = np.zeros((len(pos), len(OUTCOMES)))
        for o in objs:
            per_image[pos[o["image_id"]], OUTCOMES.index(o["outcome"])] += 1
        counts = per_image.sum(0)
        row = {"point": point, "category": cat, "size": size, "objects": int(counts.sum()),
               **{k: int(v) for k, v in zip(OUTCOMES, counts)}}
        boot = None
        if resamples is not None:
            sums = per_image[resamples].sum(1)                  # (n_boot, outcomes)
            totals = sums.sum(1, keepdims=True)
            boot = np.divide(sums, totals, out=np.full_like(sums, np.nan), where=totals > 0)
        for k, name in enumerate(OUTCOMES):
            row[f"{name}_rate"] = counts[k] / counts.sum()
            lo, hi = interval(boot[:, k]) if boot is not None else (float("nan"), float("nan"))
            row[f"{name}_ci_lo"], row[f"{name}_ci_hi"] = lo, hi
        out.append(row)
    order = {"all": 0, **{s: i + 1 for i, (s, _, _) in enumerate(SIZES)}}
    return sorted(out, key=lambda r: (r["category"] != "all", r["category"], order[r["size"]]))
