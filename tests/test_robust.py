"""The worst-case ensemble ("robust AP", docs/robust.md): the per-image selection (eval/worst_case.py) and the
`robust` suite on the run engine."""
from __future__ import annotations

import random

import pytest

from robustseg.api import predict_dataset
from robustseg.data import CocoDataset
from robustseg.data.synth import default_split
from robustseg.eval import evaluate
from robustseg.eval.worst_case import select

from _helpers import load_trained_model


@pytest.fixture(scope="module")
def preds():
    lm = load_trained_model()
    ds = CocoDataset(*default_split(), category_ids=lm.category_ids, limit=16)
    return ds.coco, predict_dataset(lm, ds, progress=False), list(ds.image_ids)


def _without(results, ids):
    """The results with every detection of images ``ids`` removed (an attack that emptied them)."""
    return [r for r in results if r["image_id"] not in set(ids)]


def _ap(gt, results, ids, iou_type):
    return evaluate(gt, results, ids, iou_types=(iou_type,), per_class=False)[iou_type]["AP"]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_complementary_members_combine_below_both(preds, iou_type):
    """Member A empties the even images, B the odd ones: the worst case takes each where it did its damage."""
    gt, results, ids = preds
    members = {"a": _without(results, ids[0::2]), "b": _without(results, ids[1::2])}
    sel = select(gt, members, ids, iou_type)
    assert sel.member_ap == pytest.approx({k: _ap(gt, v, ids, iou_type) for k, v in members.items()}, abs=1e-12)
    assert sel.ap < min(sel.member_ap.values()) - 0.2
    assert sel.ap == pytest.approx(_ap(gt, sel.results(members), ids, iou_type), abs=1e-12)  # pycocotools agrees
    assert sel.ap == pytest.approx(0.0, abs=1e-12)  # every image emptied by one member or the other
    assert [w for i, w in zip(sel.image_ids, sel.winners) if i in ids[0::2]] == ["a"] * len(ids[0::2])


def test_never_above_any_member_on_random_members(preds):
    """Members that each drop, shift and rescore detections at random, with crowd objects and score ties: the
    selected set's AP (by pycocotools on the mixed results) is at most every member's."""
    gt, results, ids = preds
    rng = random.Random(3)
    for trial in range(3):
        members = {}
        for m in range(3):
            rs = [dict(r) for r in results if rng.random() > 0.3]
            for r in rs:
                if rng.random() < 0.3:
                    r["bbox"] = [v + rng.uniform(-6, 6) for v in r["bbox"]]
                r["score"] = round(rng.random(), 1)  # ties across images and members
            members[f"m{m}"] = rs
        for iou_type in ("bbox", "segm"):
            sel = select(gt, members, ids, iou_type)
            robust = _ap(gt, sel.results(members), ids, iou_type)
            assert robust == pytest.approx(sel.ap, abs=1e-12)
            assert all(robust <= ap + 1e-12 for ap in sel.member_ap.values()), (trial, iou_type)


def test_one_member_is_itself(preds):
    gt, results, ids = preds
    sel = select(gt, {"only": results}, ids, "bbox")
    assert sel.winners == ["only"] * len(ids) and sel.ap == pytest.approx(_ap(gt, results, ids, "bbox"))
