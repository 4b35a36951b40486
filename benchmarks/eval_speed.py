"""COCO evaluation time: robustseg.eval.evaluate vs pycocotools called directly (and faster-coco-eval, for
information) on the same predictions and ground truth, bbox + segm.

Predictions are synthetic and many (default 100 per image on 200 images = 20,000 detections with RLE masks):
jittered copies of every ground-truth mask (true and duplicate positives at various IoUs) plus random false
positives, with random scores and categories, so every part of COCOeval (matching, crowd handling, accumulation
over 101 recall points) does real work.

    python benchmarks/eval_speed.py
    python benchmarks/eval_speed.py --images 200 --per-image 100 --repeats 3
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from robustseg.data.coco import CocoDataset  # noqa: E402
from robustseg.eval.coco_eval import IOU_TYPES, METRICS, evaluate  # noqa: E402


def fake_predictions(ds: CocoDataset, per_image: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    cats = ds.dataset_category_ids
    out = []
    for iid in ds.image_ids:
        info = ds.coco.imgs[iid]
        h, w = int(info["height"]), int(info["width"])
        masks, labels = [], []
        anns = ds.coco.imgToAnns.get(iid, [])
        for ann in anns:  # about a third of the predictions: shifted copies of the true masks
            m = ds.coco.annToMask(ann)
            for _ in range(max(1, per_image // (3 * max(len(anns), 1)))):
                dy, dx = rng.integers(-6, 7, 2)
                masks.append(np.roll(m, (int(dy), int(dx)), (0, 1)))
                labels.append(int(ann["category_id"]) if rng.uniform() < 0.8 else int(rng.choice(cats)))
        yy, xx = np.mgrid[0:h, 0:w]
        while len(masks) < per_image:  # the rest: random ellipses
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(3, h / 4), rng.uniform(3, w / 4)
            m = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
            if m.sum() < 4:
                continue
            masks.append(m)
            labels.append(int(rng.choice(cats)))
        rles = mask_utils.encode(np.asfortranarray(np.stack(masks[:per_image], 2)))
        for rle, label in zip(rles, labels):
            box = [round(float(v), 3) for v in mask_utils.toBbox(rle)]
            out.append({"image_id": iid, "category_id": label, "bbox": box,
                        "score": round(float(rng.uniform(0.05, 1.0)), 5),
                        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()}})
    return out


def direct(gt, results, ids, evaluator=COCOeval) -> dict:
    """The standard recipe, as in detectron2 / torchvision references: loadRes + COCOeval per iou type.
    ``evaluator``: pycocotools' COCOeval, or faster-coco-eval's drop-in COCOeval_faster (with its own ``gt``)."""
    out = {}
    for iou_type in IOU_TYPES:
        res = [dict(r) for r in results] if iou_type == "bbox" else \
            [{k: v for k, v in r.items() if k != "bbox"} for r in results]  # segm areas from the masks
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(res)
            ev = evaluator(gt, dt, iou_type)
            ev.params.imgIds = ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out[iou_type] = dict(zip(METRICS, map(float, ev.stats[:len(METRICS)])))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--per-image", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)
    C.header("evaluation: robustseg.eval.evaluate vs pycocotools (and faster-coco-eval)", args)
    ann, imgs = C.synth(args.images, seed=4242)
    ds = CocoDataset(ann, imgs)
    results = fake_predictions(ds, args.per_image)
    ids = list(ds.image_ids)
    print(f"-- {len(ids)} images, {len(ds.coco.anns)} ground-truth objects, {len(results)} predictions "
          f"(bbox + RLE masks); evaluating bbox and segm")
    got: dict[str, dict] = {}
    fns = {"robustseg": lambda: got.__setitem__("robustseg", evaluate(ds.coco, results, ids)),
           "pycocotools": lambda: got.__setitem__("pycocotools", direct(ds.coco, results, ids))}
    try:
        import copy
        from faster_coco_eval import COCO as FCOCO
        from faster_coco_eval import COCOeval_faster
        with contextlib.redirect_stdout(io.StringIO()):
            gt_f = FCOCO(copy.deepcopy(ds.data))
        fns["faster_coco_eval"] = lambda: got.__setitem__("faster_coco_eval",
                                                          direct(gt_f, results, ids, COCOeval_faster))
    except ImportError:
        print("faster-coco-eval not installed: skipped")
    t = C.keep_quiet(C.interleaved(fns, args.repeats, args.warmup))
    print(f"\n{'':18} {'time':>40} {'bbox AP':>8} {'segm AP':>8}")
    for k in fns:
        print(f"{k:18} {C.spread(t[k]):>40} {got[k]['bbox']['AP']:>8.4f} {got[k]['segm']['AP']:>8.4f}")
    same = all(abs(got["robustseg"][i][m] - got["pycocotools"][i][m]) < 1e-12 for i in IOU_TYPES for m in METRICS)
    print(f"robustseg metrics identical to pycocotools': {same}")
    r = C.med(t["robustseg"]) / C.med(t["pycocotools"])
    print(f"\nratio robustseg / pycocotools = {r:.3f} (robustseg calls pycocotools; >1 is its own overhead: per-class "
          f"AP extraction and copying the results)")
    if "faster_coco_eval" in t:
        print(f"ratio faster-coco-eval / pycocotools = {C.med(t['faster_coco_eval']) / C.med(t['pycocotools']):.3f} "
              f"(information only: not used by robustseg)")
    C.footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
