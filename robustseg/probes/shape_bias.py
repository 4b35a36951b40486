"""Cue-conflict decisions and the shape-bias score (Geirhos et al., ICLR 2019), for a detector.

Every ground-truth object of a cue-conflict set has a shape class and a different texture class. Detections with
score >= ``score`` are matched one-to-one to objects, class-agnostically and greedily by score (the most
confident detection of an object is the model's answer for it), when their IoU (pycocotools) is >= ``iou``.
The matched detection's class decides: ``shape`` (= shape class), ``texture`` (= texture class) or ``neither``.
Unmatched objects count as ``unmatched``. Shape bias = shape / (shape + texture); neither and unmatched are
reported but, as in Geirhos et al., left out of the ratio. A texture answer only counts when it lands on an
object, so ``texture_false_positives`` counts, per image, the texture-class detections that land nowhere.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np
from pycocotools import mask as mask_utils

DECISIONS = ("shape", "texture", "neither", "unmatched")


def match(detections: list[dict], objects: list[dict], iou: float = 0.5, score: float = 0.5,
          iou_type: str = "bbox") -> list[dict | None]:
    """For each object (COCO annotation) of one image, its matched detection (COCO result) or None.

    ``iou_type="segm"`` compares masks: detections need ``segmentation`` and objects an RLE ``rle`` key."""
    dets = sorted((d for d in detections if d["score"] >= score), key=lambda d: -d["score"])
    matched: list[dict | None] = [None] * len(objects)
    if not dets or not objects:
        return matched
    key_d, key_o = ("segmentation", "rle") if iou_type == "segm" else ("bbox", "bbox")
    ious = mask_utils.iou([d[key_d] for d in dets], [o[key_o] for o in objects], [0] * len(objects))
    ious = np.asarray(ious, dtype=float).reshape(len(dets), len(objects))
    for i in range(len(dets)):
        free = [j for j in range(len(objects)) if matched[j] is None]
        if not free:
            break
        j = max(free, key=lambda j: ious[i, j])
        if ious[i, j] >= iou:
            matched[j] = dets[i]
    return matched


def decide(obj: dict, det: dict | None) -> str:
    if det is None:
        return "unmatched"
    if det["category_id"] == obj["shape_category_id"]:
        return "shape"
    if det["category_id"] == obj["texture_category_id"]:
        return "texture"
    return "neither"


def _cue_objects(gt, iou_type: str, image_ids) -> dict[int, list[dict]]:
    """Per image, its cue-conflict objects (shape class differs from texture class, crowd regions skipped); only
    images of ``image_ids`` when given."""
    keep = None if image_ids is None else {int(i) for i in image_ids}
    objs: dict[int, list[dict]] = defaultdict(list)
    for a in gt.dataset["annotations"]:
        if not a.get("iscrowd", 0) and a.get("texture_category_id") is not None \
                and a["shape_category_id"] != a["texture_category_id"] \
                and (keep is None or int(a["image_id"]) in keep):
            objs[int(a["image_id"])].append({**a, "rle": gt.annToRLE(a)} if iou_type == "segm" else a)
    return objs


def _by_image(results: list[dict]) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = defaultdict(list)
    for r in results:
        by_image[int(r["image_id"])].append(r)
    return by_image


def decisions(results: list[dict], gt, iou: float = 0.5, score: float = 0.5, iou_type: str = "bbox",
              image_ids=None) -> list[dict]:
    """One row per cue-conflict object of ``gt`` (a pycocotools COCO; objects whose shape class differs from
    their texture class, crowd regions skipped) with the decision of its matched detection; only objects of
    ``image_ids`` when given (unreadable images are left out, not counted as unmatched)."""
    by_image, rows = _by_image(results), []
    for image_id, anns in sorted(_cue_objects(gt, iou_type, image_ids).items()):
        for a, d in zip(anns, match(by_image.get(image_id, []), anns, iou, score, iou_type)):
            rows.append({"image_id": image_id, "annotation_id": a["id"], "shape_category_id": a["shape_category_id"],
                         "texture_category_id": a["texture_category_id"],
                         "predicted_category_id": None if d is None else d["category_id"],
                         "score": None if d is None else d["score"], "decision": decide(a, d)})
    return rows


def texture_false_positives(results: list[dict], gt, iou: float = 0.5, score: float = 0.5, iou_type: str = "bbox",
                            image_ids=None) -> dict:
    """What the ratio cannot see: the model firing on a texture somewhere other than on an object's outline.
    Per cue-conflict image, its detections scoring >= ``score`` that match no object (the one-to-one matching of
    ``decisions``) and whose class is a texture worn in that image but no object's shape there (so a duplicate
    or badly placed box of a shape answer is not counted). Returns the images, the count and the count per image."""
    by_image, found = _by_image(results), 0
    objs = _cue_objects(gt, iou_type, image_ids)
    for image_id, anns in objs.items():
        dets = by_image.get(image_id, [])
        taken = {id(d) for d in match(dets, anns, iou, score, iou_type) if d is not None}
        textures = {a["texture_category_id"] for a in anns} - {a["shape_category_id"] for a in anns}
        found += sum(1 for d in dets if d["score"] >= score and id(d) not in taken and d["category_id"] in textures)
    n = len(objs)
    return {"images": n, "detections": found, "per_image": found / n if n else None}


def counts(rows: Iterable[dict]) -> dict:
    c = {k: 0 for k in DECISIONS}
    for r in rows:
        c[r["decision"]] += 1
    decided = c["shape"] + c["texture"]
    return {**c, "objects": sum(c.values()), "shape_bias": c["shape"] / decided if decided else None}


def summarise(rows: list[dict], class_names: dict[int, str], texture_names: dict[int, str] | None = None) -> dict:
    """Shape bias overall, per shape class and per texture class, with the counts. ``texture_names`` (e.g. the
    synthetic generator's ``{1: "stripes", ...}``) label texture classes as ``circle (stripes)``."""
    def per(key: str, names: dict[int, str]) -> dict:
        return {names.get(c, str(c)): counts(r for r in rows if r[key] == c) for c in sorted({r[key] for r in rows})}
    tex = {c: f"{n} ({texture_names[c]})" if texture_names and c in texture_names else n
           for c, n in class_names.items()}
    predicted = [r["predicted_category_id"] for r in rows if r["predicted_category_id"] is not None]
    return {"overall": counts(rows), "per_shape_class": per("shape_category_id", class_names),
            "per_texture_class": per("texture_category_id", tex),
            # a model that answers one class whatever it sees scores ~0.5: check this before reading the bias
            "predicted_classes": {class_names.get(c, str(c)): predicted.count(c) for c in sorted(set(predicted))}}


def summary_rows(summary: dict) -> list[dict]:
    """shape_bias.csv: group (overall, shape_class, texture_class), class, counts, shape_bias."""
    rows = [{"group": "overall", "class": "all", **summary["overall"]}]
    for group, key in (("shape_class", "per_shape_class"), ("texture_class", "per_texture_class")):
        rows += [{"group": group, "class": name, **c} for name, c in summary[key].items()]
    return rows
