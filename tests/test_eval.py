"""COCO evaluation: perfect predictions score 1, metrics equal pycocotools run by hand, API and CLI outputs."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from robustseg.api import evaluate_model
from robustseg.cli import main as cli_main
from robustseg.data.coco import CocoDataset
from robustseg.eval import METRICS, evaluate, to_coco_results


@pytest.fixture(scope="module")
def ds(synth_data):
    ann, images = synth_data
    return CocoDataset(ann, images)


def _gt_as_output(target: dict) -> dict:
    n = len(target["boxes"])
    return {"boxes": target["boxes"].clone(), "labels": target["labels"].clone(), "scores": torch.ones(n),
            "masks": target["masks"][:, None].float()}


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode()}


def _noisy_results(coco: COCO, seed: int) -> list[dict]:
    """Imperfect detections: jittered/shifted true objects, some wrong classes, some misses, false positives."""
    rng = np.random.default_rng(seed)
    cats = sorted(coco.getCatIds())
    out = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        h, w = info["height"], info["width"]
        for a in coco.imgToAnns[img_id]:
            if rng.uniform() < 0.15:
                continue  # missed
            m = np.roll(coco.annToMask(a), tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
            x, y, bw, bh = a["bbox"]
            box = [x + rng.uniform(-2, 2), y + rng.uniform(-2, 2),
                   bw * rng.uniform(0.8, 1.2), bh * rng.uniform(0.8, 1.2)]
            cat = a["category_id"] if rng.uniform() < 0.85 else int(rng.choice(cats))
            out.append({"image_id": img_id, "category_id": cat, "bbox": [round(float(v), 2) for v in box],
                        "score": round(float(rng.uniform(0.2, 1.0)), 4), "segmentation": _rle(m)})
        for _ in range(int(rng.integers(1, 3))):  # false positives
            x0, y0 = rng.integers(0, w - 12), rng.integers(0, h - 12)
            bw, bh = rng.integers(4, 12, 2)
            m = np.zeros((h, w), np.uint8)
            m[y0:y0 + bh, x0:x0 + bw] = 1
            out.append({"image_id": img_id, "category_id": int(rng.choice(cats)),
                        "bbox": [float(x0), float(y0), float(bw), float(bh)],
                        "score": round(float(rng.uniform(0.0, 0.9)), 4), "segmentation": _rle(m)})
    return out


def _cocoeval(ann: Path, res: Path, iou_type: str, img_ids=None, cat_ids=None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        dt = gt.loadRes(str(res))
        ev = COCOeval(gt, dt, iou_type)
        if img_ids is not None:
            ev.params.imgIds = img_ids
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_ground_truth_as_predictions_scores_one(ds):
    results = []
    for i in range(len(ds)):
        t = ds.target(i)
        results.extend(to_coco_results(_gt_as_output(t), t["image_id"], ds.category_ids))
    assert len(results) == len(ds.coco.anns)
    m = evaluate(ds.coco, results)
    for iou in ("bbox", "segm"):
        assert m[iou]["AP"] == pytest.approx(1.0) and m[iou]["AP50"] == pytest.approx(1.0)
        assert m[iou]["AP75"] == pytest.approx(1.0)
        present = {a["category_id"] for a in ds.coco.anns.values()}
        assert all(m["per_class"][iou][c] == pytest.approx(1.0) for c in present)


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_pycocotools(ds, synth_data, tmp_path, seed):
    ann, _ = synth_data
    results = _noisy_results(ds.coco, seed)
    m = evaluate(ds.coco, results)
    assert 0.05 < m["bbox"]["AP50"] < 0.999 and 0.05 < m["segm"]["AP50"] < 0.999  # non-trivial scores

    bbox_res, segm_res = tmp_path / "bbox.json", tmp_path / "segm.json"
    bbox_res.write_text(json.dumps(results))
    segm_res.write_text(json.dumps([{k: v for k, v in r.items() if k != "bbox"} for r in results]))
    for iou, res in (("bbox", bbox_res), ("segm", segm_res)):
        stats = _cocoeval(ann, res, iou)
        assert [m[iou][k] for k in METRICS] == pytest.approx(list(stats[:6]), abs=1e-12), iou
        for cat, ap in m["per_class"][iou].items():
            assert ap == pytest.approx(_cocoeval(ann, res, iou, cat_ids=[cat])[0], abs=1e-12), (iou, cat)
    # restricted to some images
    subset = ds.image_ids[:3]
    m_sub = evaluate(ds.coco, results, image_ids=subset, iou_types=("segm",), per_class=False)
    assert set(m_sub) == {"segm", "per_class"}
    assert [m_sub["segm"][k] for k in METRICS] == pytest.approx(list(_cocoeval(ann, segm_res, "segm", subset)[:6]))


def test_segm_ignores_the_bbox_field(ds, synth_data, tmp_path):
    """Segm areas (hence APs/APm/APl) come from the masks even when results carry a (deliberately huge) bbox."""
    ann, _ = synth_data
    results = _noisy_results(ds.coco, 3)
    big = [dict(r, bbox=[0.0, 0.0, 64.0, 64.0]) for r in results]
    assert evaluate(ds.coco, big, iou_types=("segm",))["segm"] == evaluate(ds.coco, results,
                                                                           iou_types=("segm",))["segm"]


def test_empty_results_score_zero(ds):
    m = evaluate(ds.coco, [])
    for iou in ("bbox", "segm"):
        assert m[iou]["AP"] == 0.0 and m[iou]["AP50"] == 0.0
        assert all(v == 0.0 for v in m["per_class"][iou].values())


def test_to_coco_results_maps_labels_and_masks():
    masks = torch.zeros(3, 1, 20, 30)
    masks[0, 0, 2:6, 3:9] = 0.9
    masks[0, 0, 10:12, 10:12] = 0.4  # below the 0.5 threshold
    masks[1, 0, 5:15, 0:30] = 1.0
    masks[2, 0, 0:1, 0:1] = 0.6
    out = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 6.0], [0.0, 5.0, 30.0, 15.0], [0.0, 0.0, 1.0, 1.0]]),
           "labels": torch.tensor([1, 2, 1]), "scores": torch.tensor([0.9, 0.5, 0.123456789]), "masks": masks}
    res = to_coco_results(out, 42, [7, 3])
    assert [r["category_id"] for r in res] == [7, 3, 7]
    assert all(r["image_id"] == 42 for r in res)
    assert res[0]["bbox"] == [3.0, 2.0, 6.0, 4.0] and res[1]["bbox"] == [0.0, 5.0, 30.0, 10.0]
    assert res[2]["score"] == pytest.approx(0.12346, abs=1e-9)
    for r, m in zip(res, masks):
        seg = dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
        assert np.array_equal(mask_utils.decode(seg), (m[0] > 0.5).numpy().astype(np.uint8))
    json.dumps(res)  # serialisable as is
    low = to_coco_results(out, 42, [7, 3], mask_threshold=0.3)
    assert mask_utils.area(dict(low[0]["segmentation"], counts=low[0]["segmentation"]["counts"].encode())) == 28
    assert all("segmentation" not in r for r in to_coco_results(out, 1, [7, 3], with_masks=False))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0),
             "masks": torch.zeros(0, 1, 20, 30)}
    assert to_coco_results(empty, 1, [7, 3]) == []


def test_evaluate_model_writes_predictions_and_metrics(tiny_checkpoint, synth_data, ds, tmp_path):
    ann, images = synth_data
    out = tmp_path / "eval"
    metrics = evaluate_model(tiny_checkpoint, ann, images, out=out, progress=False, batch_size=3)
    preds = json.loads((out / "predictions.json").read_text())
    saved = json.loads((out / "metrics.json").read_text())
    assert preds, "the untrained tiny model returns low-score detections; none came back"
    assert {p["image_id"] for p in preds} <= set(ds.image_ids)
    assert {p["category_id"] for p in preds} <= {1, 2, 3}
    assert all("segmentation" in p and "bbox" in p for p in preds)
    assert saved["bbox"] == metrics["bbox"] and saved["segm"] == metrics["segm"]
    # the written predictions are exactly what was scored
    again = evaluate(ds.coco, preds)
    assert again["bbox"] == metrics["bbox"] and again["segm"] == metrics["segm"]
    for iou in ("bbox", "segm"):
        assert set(metrics[iou]) == set(METRICS) and all(-1.0 <= v <= 1.0 for v in metrics[iou].values())


def test_cli_eval_prints_bbox_and_segm_rows(tiny_checkpoint, synth_data, capsys, tmp_path):
    ann, images = synth_data
    rc = cli_main(["eval", "--model", str(tiny_checkpoint), "--data", str(ann), "--images", str(images),
                   "--limit", "4", "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = {ln.split()[0]: [float(v) for v in ln.split()[1:]] for ln in captured.out.splitlines()
            if ln.split() and ln.split()[0] in ("bbox", "segm")}
    assert set(rows) == {"bbox", "segm"} and all(len(v) == 6 for v in rows.values())
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    for iou in ("bbox", "segm"):
        assert rows[iou] == pytest.approx([saved[iou][k] for k in METRICS], abs=5e-4)
    assert len({p["image_id"] for p in json.loads((tmp_path / "o" / "predictions.json").read_text())}) <= 4
