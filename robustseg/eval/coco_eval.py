"""COCO evaluation: detections -> COCO results JSON -> pycocotools COCOeval. No hand-written AP anywhere.

Results carry both ``bbox`` and ``segmentation`` (RLE of the mask thresholded at 0.5). As detectron2 does, the
``bbox`` field is dropped before loading results for segm evaluation, so segm areas come from the masks.
"""
from __future__ import annotations

import contextlib
import io
from typing import Iterable, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("bbox", "segm")


def to_coco_results(output: dict, image_id: int, category_ids: Sequence[int], mask_threshold: float = 0.5,
                    with_masks: bool = True) -> list[dict]:
    """One image's detections (torchvision eval output) as COCO result dicts with the dataset's category ids."""
    boxes = output["boxes"].detach().float().cpu()
    if len(boxes) == 0:
        return []
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    scores = output["scores"].detach().float().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    rles = None
    if with_masks and "masks" in output:
        binary = (output["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    results = []
    for i, (box, score, label) in enumerate(zip(xywh, scores, labels)):
        r = {"image_id": int(image_id), "category_id": int(category_ids[label - 1]),
             "bbox": [round(v, 3) for v in box], "score": round(float(score), 5)}
        if rles is not None:
            r["segmentation"] = {"size": [int(s) for s in rles[i]["size"]], "counts": rles[i]["counts"].decode()}
        results.append(r)
    return results


def _load_results(gt: COCO, results: list[dict], iou_type: str) -> COCO:
    if iou_type == "segm":
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results if "segmentation" in r]
    else:
        results = [dict(r) for r in results]
    if not results:  # pycocotools cannot load an empty list; an empty result set scores 0 through COCOeval
        dt = COCO()
        dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                      "annotations": []}
        with contextlib.redirect_stdout(io.StringIO()):
            dt.createIndex()
        return dt
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes(results)


def evaluate(gt: COCO, results: list[dict], image_ids: Iterable[int] | None = None,
             iou_types: Sequence[str] = IOU_TYPES, per_class: bool = True, resamples=None) -> dict:
    """COCO metrics for ``results`` against ``gt``, restricted to ``image_ids`` if given.

    Returns ``{"bbox": {"AP": .., "AP50": .., ...}, "segm": {...}, "per_class": {"bbox": {cat_id: AP}, ...}}``
    with AP values in [0,1] (-1 where COCO has nothing to evaluate, as pycocotools reports). With ``resamples``
    (eval/bootstrap.py: rows of positions into the sorted image ids) also ``"boots": {iou_type: {"AP": array,
    "AP50": .., "AP75": ..}}``, one value per resample, from the same matching.
    """
    out: dict = {"per_class": {}}
    if resamples is not None:
        from .bootstrap import boots_of_eval
        out["boots"] = {}
    ids = sorted(int(i) for i in image_ids) if image_ids is not None else sorted(gt.getImgIds())
    for iou_type in iou_types:
        dt = _load_results(gt, results, iou_type)
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = ids
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out[iou_type] = {m: float(ev.stats[i]) for i, m in enumerate(METRICS)}
        if per_class:
            # precision[T, R, K, A, M]: all IoU thresholds, all recalls, class k, area "all", maxDets 100
            prec = ev.eval["precision"]
            per = {}
            for k, cat in enumerate(ev.params.catIds):
                p = prec[:, :, k, 0, -1]
                per[int(cat)] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
            out["per_class"][iou_type] = per
        if resamples is not None:  # last: re-accumulating changes ev
            out["boots"][iou_type] = boots_of_eval(ev, resamples)
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, images: list[torch.Tensor]) -> list[dict]:
    """Eval-mode detections for a batch of [0,1] images already on the model's device."""
    modes = [(m, m.training) for m in model.modules()]  # each module's own flag (models may mix modes)
    model.eval()
    try:
        return model(images)
    finally:
        for m, flag in modes:
            m.training = flag
