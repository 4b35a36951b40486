"""Percentile-bootstrap confidence intervals over images for COCO AP, computed by pycocotools.

COCOeval.evaluate() (the matching, the expensive part) runs once. Its per-image records (``evalImgs``) do not
depend on which other images are evaluated, so a resample of the image ids (with replacement) is scored by
accumulating those records in the resampled order, duplicates included: eval/resample.py does pycocotools'
accumulate() arithmetic on arrays (equal to it exactly, tested against ``precision_reference``, pycocotools' own
accumulate() on the same resample), for the area "all" and maxDets 100 only, the only cells AP, AP50 and AP75
read. AP is then read from the precision exactly as COCOeval.summarize() reads it (mean over entries > -1).

A drop (clean AP - adversarial AP) is bootstrapped *paired*: both result sets on the same resamples, so the
interval is that of the drop, not of two independent APs.
"""
from __future__ import annotations

import contextlib
import copy
import io
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .coco_eval import _load_results
from .resample import FastAccumulator

# summarize()'s first three stats: IoU threshold index into params.iouThrs (None = the mean over all ten)
AP_METRICS = {"AP": None, "AP50": 0, "AP75": 5}


class _Resampler:
    """One result set's COCOeval, evaluated once, re-accumulated on any list of (repeatable) image ids."""

    def __init__(self, coco_gt: COCO, results: list[dict], image_ids: Sequence[int], iou_type: str):
        ev = COCOeval(coco_gt, _load_results(coco_gt, results, iou_type), iou_type)
        ev.params.imgIds = sorted(int(i) for i in image_ids)  # the order coco_eval.evaluate uses (score ties)
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
        self._take(ev)

    @classmethod
    def from_eval(cls, ev: COCOeval) -> "_Resampler":
        """From a COCOeval already evaluated (coco_eval.evaluate's, once it has read its figures): the matching
        is not redone. ``ev`` is re-accumulated in place from then on."""
        self = cls.__new__(cls)
        self._take(ev)
        return self

    def _take(self, ev: COCOeval) -> None:
        p = ev.params
        self.image_ids = list(p.imgIds)  # evalImgs is laid out [category][area][image] in this order
        n = len(self.image_ids)
        all_area = p.areaRngLbl.index("all")
        areas = len(p.areaRng)
        self.per_category = [ev.evalImgs[(k * areas + all_area) * n:(k * areas + all_area + 1) * n]
                             for k in range(len(p.catIds))]
        self.ev, self.fast = ev, FastAccumulator(ev)  # before any re-accumulation replaces ev.evalImgs
        self.params = copy.copy(ev.params)  # what accumulate sees: area "all", maxDets 100, resampled ids
        self.params.areaRng, self.params.areaRngLbl = [p.areaRng[all_area]], ["all"]
        self.params.maxDets = [p.maxDets[-1]]  # the records were matched with the largest maxDets

    def boots(self, resamples: np.ndarray) -> dict[str, np.ndarray]:
        """AP, AP50, AP75 on every row of ``resamples`` (positions into ``image_ids``)."""
        values = [self.metrics(r) for r in resamples]
        return {k: np.array([v[k] for v in values]) for k in AP_METRICS}

    def metrics(self, positions: np.ndarray) -> dict[str, float]:
        """AP, AP50, AP75 on the images at ``positions`` of ``image_ids`` (repeats count repeatedly), from
        eval/resample.py's exact vectorised accumulate()."""
        precision = self.fast.precision(positions)
        return {name: _mean_valid(precision if t is None else precision[t]) for name, t in AP_METRICS.items()}

    def precision_reference(self, positions: np.ndarray) -> np.ndarray:
        """pycocotools' own accumulate() on the same resample: what FastAccumulator must equal (the tests)."""
        ev, params = self.ev, self.params
        params.imgIds = [self.image_ids[i] for i in positions]
        ev.evalImgs = [cat[i] for cat in self.per_category for i in positions]
        ev._paramsEval = params
        with contextlib.redirect_stdout(io.StringIO()):
            ev.accumulate(params)
        return ev.eval["precision"][:, :, :, 0, 0]  # [T, R, K] at area all, maxDets 100


def _mean_valid(p: np.ndarray) -> float:
    """summarize()'s rule: the mean over entries > -1 (absent categories), -1 when there are none."""
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else -1.0


def resamples(n_images: int, n_boot: int, seed: int) -> np.ndarray:
    """The (n_boot, n_images) positions every point of a pass is resampled with (paired across points)."""
    return np.random.default_rng(seed).integers(0, n_images, size=(n_boot, n_images))


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _check(image_ids, n_boot, alpha) -> None:
    from ..errors import RobustsegError
    if not len(image_ids):
        raise RobustsegError("bootstrap needs at least one image")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise RobustsegError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < alpha < 1:
        raise RobustsegError(f"alpha must be in (0, 1), got {alpha!r}")


def bootstrap_metrics(coco_gt: COCO, results: list[dict], image_ids: Sequence[int],
                      iou_types: Sequence[str] = ("bbox", "segm"), n_boot: int = 1000, seed: int = 0,
                      alpha: float = 0.05, baseline: list[dict] | None = None) -> dict:
    """{iou_type: {metric: {"value", "lo", "hi"}}} for AP, AP50 and AP75, every one from the same resamples.

    With ``baseline`` (e.g. the clean results) the figures are paired drops, baseline - results, instead.
    """
    _check(image_ids, n_boot, alpha)
    rows = resamples(len(image_ids), n_boot, seed)
    out: dict = {}
    for iou_type in iou_types:
        sets = [_Resampler(coco_gt, r, image_ids, iou_type) for r in ([baseline] if baseline is not None else [])
                + [results]]
        point = _figures(sets, np.arange(len(image_ids)))
        boots = [_figures(sets, r) for r in rows]
        out[iou_type] = {k: {"value": point[k], **dict(zip(("lo", "hi"), _interval(
            np.array([b[k] for b in boots]), alpha)))} for k in AP_METRICS}
    return out


def _figures(sets: list[_Resampler], positions: np.ndarray) -> dict[str, float]:
    """The metrics of one result set, or (two sets) the first's minus the second's on the same images."""
    m = [s.metrics(positions) for s in sets]
    return m[0] if len(m) == 1 else {k: m[0][k] - m[1][k] for k in AP_METRICS}


def bootstrap_ap(coco_gt: COCO, results: list[dict], image_ids: Sequence[int], iou_type: str = "bbox",
                 n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """COCO AP of ``results`` on ``image_ids`` with its (1 - alpha) percentile-bootstrap interval over images:
    ``{"ap", "lo", "hi", "n_boot"}``. Same seed, same interval."""
    m = bootstrap_metrics(coco_gt, results, image_ids, (iou_type,), n_boot, seed, alpha)[iou_type]["AP"]
    return {"ap": m["value"], "lo": m["lo"], "hi": m["hi"], "n_boot": n_boot}


def bootstrap_drop(coco_gt: COCO, clean_results: list[dict], adv_results: list[dict], image_ids: Sequence[int],
                   iou_type: str = "bbox", n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """AP drop clean - adversarial with a paired percentile-bootstrap interval (both sets on the same resamples):
    ``{"drop", "lo", "hi", "n_boot"}``. Identical result sets give exactly [0, 0]."""
    m = bootstrap_metrics(coco_gt, adv_results, image_ids, (iou_type,), n_boot, seed, alpha,
                          baseline=clean_results)[iou_type]["AP"]
    return {"drop": m["value"], "lo": m["lo"], "hi": m["hi"], "n_boot": n_boot}


def interval(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The (1 - alpha) percentile interval of bootstrap values; NaN when any is NaN (a resample with nothing to
    score: pass AP boots through ``valid`` first)."""
    values = np.asarray(values, dtype=float)
    if not values.size or not np.isfinite(values).all():
        return float("nan"), float("nan")
    return _interval(values, alpha)


def boots_of_eval(ev: COCOeval, rows: np.ndarray) -> dict[str, np.ndarray]:
    """AP, AP50, AP75 per resample from an evaluated COCOeval (see _Resampler.from_eval); COCO's -1 (nothing to
    score in that resample) as NaN, so that no difference or mean is taken of it."""
    return {k: np.where(v < 0, np.nan, v) for k, v in _Resampler.from_eval(ev).boots(rows).items()}
