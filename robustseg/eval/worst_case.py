"""The worst case over an ensemble of attacks, per image: which member's adversarial image to keep so that the
set's COCO AP is lowest ("robust AP", docs/robust.md).

Accuracy is a sum over examples, so AutoAttack keeps, per example, any member that fools it. COCO AP is not: an
image's detections are ranked against every other image's, so "the member that does the most damage on this
image" has no meaning without the rest of the set. The criterion is therefore the set's own AP: start from the
strongest member (the lowest AP over all images) and, image by image, swap in another member's adversarial image
where that lowers the set's AP; repeat until a sweep changes nothing. Every accepted swap lowers AP, so robust AP
is never above any member's AP (by construction; tests/test_robust.py).

Cheap because pycocotools' matching (evaluate) is per image and never depends on the other images: each member
is matched once and each category's detections of every member are ranked once, as pycocotools would rank them;
a selection masks out the members not chosen for each image and runs eval/resample.py's exact accumulate()
arithmetic on what is left. A swap on image i can only change the categories image i has a record for, so only
those are re-accumulated.
"""
from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .coco_eval import _load_results
from .resample import FastAccumulator

MAX_SWEEPS = 4  # a sweep that changes nothing ends it; swaps are rare after the second


@dataclass
class Selection:
    """Per image (sorted ids) the member kept; the set's AP; each member's own AP on the same images."""
    image_ids: list[int]
    winners: list[str]
    ap: float
    member_ap: dict[str, float]
    sweeps: int

    def results(self, member_results: dict[str, list[dict]]) -> list[dict]:
        """The worst-case set's COCO results: each image's detections from its winner."""
        keep = dict(zip(self.image_ids, self.winners))
        return [r for name, rs in member_results.items() for r in rs if keep.get(int(r["image_id"])) == name]


class _Stacked:
    """The members' per-image records side by side (image i of member m at position m * n + i), and per category
    every member's detections in the order pycocotools ranks them: score descending, ties by image, then by each
    image's own order. A selection keeps, per image, one member's detections: the same order, so pycocotools'
    accumulate() arithmetic on them needs no new sort."""

    def __init__(self, gt: COCO, member_results: list[list[dict]], image_ids: list[int], iou_type: str):
        evs = [_matched(gt, rs, image_ids, iou_type) for rs in member_results]
        p = evs[0].params
        n, areas = len(image_ids), len(p.areaRng)
        shim = copy.copy(evs[0])  # FastAccumulator reads only params and evalImgs
        shim.params = copy.copy(p)
        shim.params.imgIds = list(range(len(evs) * n))
        shim.evalImgs = [rec for k in range(len(p.catIds)) for a in range(areas) for ev in evs
                         for rec in ev.evalImgs[(k * areas + a) * n:(k * areas + a + 1) * n]]
        fast = self.fast = FastAccumulator(shim)
        self.n, self.m = n, len(evs)
        # categories an image has a record of (ground truth or a detection), per member: what a swap can change
        self.records = fast.present.reshape(self.m, n, -1).astype(bool)
        self.npig = fast.npig.reshape(self.m, n, -1)[0].sum(0)  # the same ground truth for every member
        self.valid = self.npig > 0
        stacked = np.repeat(np.arange(self.m * n), fast.lengths)
        within = np.arange(len(stacked)) - np.repeat(fast.starts, fast.lengths)
        self.member, self.image = stacked // n, stacked % n
        order = np.lexsort((within, self.image, -fast.score, fast.cat))
        bounds = np.searchsorted(fast.cat[order], np.arange(fast.K + 1))
        self.by_category = [order[bounds[k]:bounds[k + 1]] for k in range(fast.K)]

    def category_ap(self, choice: np.ndarray, categories=None) -> np.ndarray:
        """Per category (all, or ``categories``; -1 elsewhere and where invalid), its AP (the mean over IoU
        thresholds and recalls) on the images of ``choice``."""
        out = np.full(len(self.valid), -1.0)
        for k in range(len(self.valid)) if categories is None else categories:
            if self.valid[k]:
                seg = self.by_category[k]
                seg = seg[self.member[seg] == choice[self.image[seg]]]
                out[k] = self.fast.category_precision(seg, int(self.npig[k])).mean()
        return out

    def ap(self, per_category: np.ndarray) -> float:
        """summarize()'s AP: the mean over valid categories (every entry of a valid category is >= 0)."""
        return float(per_category[self.valid].mean()) if self.valid.any() else -1.0


def _matched(gt: COCO, results: list[dict], image_ids: list[int], iou_type: str) -> COCOeval:
    ev = COCOeval(gt, _load_results(gt, results, iou_type), iou_type)
    ev.params.imgIds = image_ids
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    return ev


def select(gt: COCO, member_results: dict[str, list[dict]], image_ids: Sequence[int], iou_type: str = "bbox",
           max_sweeps: int = MAX_SWEEPS) -> Selection:
    """The per-image choice of member that minimises the set's AP (greedy swaps from the strongest member)."""
    names, ids = list(member_results), sorted(int(i) for i in image_ids)
    stack = _Stacked(gt, [member_results[k] for k in names], ids, iou_type)
    whole = [stack.category_ap(np.full(stack.n, m)) for m in range(stack.m)]
    member_ap = {k: stack.ap(c) for k, c in zip(names, whole)}
    start = int(np.argmin([member_ap[k] for k in names]))  # ties: the first member listed
    choice, per_cat = np.full(stack.n, start), whole[start].copy()
    current, sweeps = stack.ap(per_cat), 0
    while sweeps < max_sweeps:
        sweeps += 1
        changed = False
        for i in range(stack.n):
            best = None
            for m in range(stack.m):
                cats = np.flatnonzero(stack.records[choice[i], i] | stack.records[m, i])
                if m == choice[i] or not cats.size:
                    continue
                trial = choice.copy()
                trial[i] = m
                cand = per_cat.copy()
                cand[cats] = stack.category_ap(trial, cats)[cats]
                value = stack.ap(cand)
                if value < (best[0] if best else current) - 1e-12:
                    best = (value, m, cand)
            if best:
                current, choice[i], per_cat = best
                changed = True
        if not changed:
            break
    return Selection(ids, [names[m] for m in choice], current, member_ap, sweeps)
