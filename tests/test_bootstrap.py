"""Percentile-bootstrap intervals of COCO AP over images (robustseg/eval/bootstrap.py): pycocotools' own AP on
every resample, the shipped model's predictions on the default split."""
from __future__ import annotations

import pytest

from robustseg.api import predict_dataset
from robustseg.data import CocoDataset
from robustseg.data.synth import default_split
from robustseg.errors import RobustsegError
from robustseg.eval import evaluate
from robustseg.eval.bootstrap import bootstrap_ap, bootstrap_drop, bootstrap_metrics

from _helpers import load_trained_model

N_BOOT = 200  # enough for stable 95% percentiles at these sizes; 1000 is the default


@pytest.fixture(scope="module")
def preds():
    lm = load_trained_model()
    ds = CocoDataset(*default_split(), category_ids=lm.category_ids, limit=32)
    return ds.coco, predict_dataset(lm, ds, progress=False), list(ds.image_ids)


def test_point_is_pycocotools_ap_and_inside_the_interval(preds):
    gt, results, ids = preds
    full = evaluate(gt, results, ids, per_class=False)
    for iou_type in ("bbox", "segm"):
        b = bootstrap_ap(gt, results, ids, iou_type, n_boot=N_BOOT)
        assert b["ap"] == pytest.approx(full[iou_type]["AP"], abs=1e-12)
        assert b["lo"] <= b["ap"] <= b["hi"] and b["lo"] < b["hi"]
        assert b["n_boot"] == N_BOOT


def test_interval_narrows_with_more_images(preds):
    gt, results, ids = preds
    small = bootstrap_ap(gt, [r for r in results if r["image_id"] in ids[:8]], ids[:8], n_boot=N_BOOT)
    large = bootstrap_ap(gt, results, ids, n_boot=N_BOOT)
    assert large["hi"] - large["lo"] < 0.8 * (small["hi"] - small["lo"]), (small, large)


def test_same_seed_same_interval(preds):
    gt, results, ids = preds
    a = bootstrap_ap(gt, results, ids, n_boot=50, seed=3)
    assert a == bootstrap_ap(gt, results, ids, n_boot=50, seed=3)
    assert a != bootstrap_ap(gt, results, ids, n_boot=50, seed=4)


def test_paired_drop(preds):
    """Identical result sets drop by exactly 0 on every resample; a damaged set's drop is the APs' difference
    and its interval holds it."""
    gt, results, ids = preds
    assert bootstrap_drop(gt, results, results, ids, n_boot=N_BOOT) == \
        {"drop": 0.0, "lo": 0.0, "hi": 0.0, "n_boot": N_BOOT}
    damaged = [r for r in results if r["image_id"] not in ids[::4]]  # every 4th image loses its detections
    d = bootstrap_drop(gt, results, damaged, ids, n_boot=N_BOOT)
    full = evaluate(gt, results, ids, per_class=False)["bbox"]["AP"]
    worse = evaluate(gt, damaged, ids, per_class=False)["bbox"]["AP"]
    assert d["drop"] == pytest.approx(full - worse, abs=1e-12)
    assert 0 < d["lo"] <= d["drop"] <= d["hi"]


def test_all_metrics_in_one_go(preds):
    gt, results, ids = preds
    m = bootstrap_metrics(gt, results, ids, n_boot=50)
    full = evaluate(gt, results, ids, per_class=False)
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75"):
            cell = m[iou_type][name]
            assert cell["value"] == pytest.approx(full[iou_type][name], abs=1e-12)
            assert cell["lo"] <= cell["value"] <= cell["hi"]


def test_bad_arguments_fail_clearly(preds):
    gt, results, ids = preds
    with pytest.raises(RobustsegError, match="n_boot"):
        bootstrap_ap(gt, results, ids, n_boot=0)
    with pytest.raises(RobustsegError, match="alpha"):
        bootstrap_ap(gt, results, ids, alpha=1.5)
    with pytest.raises(RobustsegError, match="image"):
        bootstrap_ap(gt, results, [])


def _hostile_set(preds):
    """The same images with what pycocotools treats specially: a crowd object, a category with no ground truth
    but detections, one with ground truth but no detections, scores rounded so that ties abound across images."""
    import copy

    from pycocotools.coco import COCO
    gt, results, ids = preds
    d = copy.deepcopy(gt.dataset)
    d["categories"] = d["categories"] + [{"id": 90, "name": "never-annotated"}, {"id": 91, "name": "never-found"}]
    first = d["annotations"][0]
    d["annotations"].append({**first, "id": 10_000, "iscrowd": 1})
    d["annotations"].append({**first, "id": 10_001, "category_id": 91})
    coco = COCO()
    coco.dataset = d
    coco.createIndex()
    hostile = [{**r, "score": round(r["score"], 1)} for r in results]
    hostile += [{**r, "category_id": 90, "score": 0.5} for r in results[:5]]
    return coco, hostile, ids


def test_vectorised_accumulate_equals_pycocotools_exactly(preds):
    import numpy as np

    from robustseg.eval.bootstrap import _Resampler, resamples
    gt, results, ids = _hostile_set(preds)
    no_gt = [n for n, i in enumerate(ids) if not gt.getAnnIds(imgIds=[i])]
    rows = list(resamples(len(ids), 60, 7)) + [np.zeros(len(ids), dtype=int), np.array([len(ids) - 1] * 3),
                                               np.arange(len(ids))[::-1]] + ([np.array(no_gt[:1] * 4)] if no_gt else [])
    for iou_type in ("bbox", "segm"):
        r = _Resampler(gt, results, ids, iou_type)
        for positions in rows:
            fast, ref = r.fast.precision(positions), r.precision_reference(positions)
            assert fast.shape == ref.shape and np.array_equal(fast, ref), (iou_type, positions[:5])
        assert (r.fast.precision(np.arange(len(ids)))[:, :, -2] == -1).all()  # no ground truth: absent, as COCO
