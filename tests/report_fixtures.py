"""Hand-made results directories for the report tests: small, fast, every optional file present, and hostile
strings (HTML in category, suite and file names) wherever data reaches the report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from robustseg.fileio import write_json
from robustseg.report.examples import save_examples
from robustseg.results import write_csv, write_metrics

XSS_CAT = "<img src=x onerror=alert(1)>"
XSS_CAT2 = "<script>alert('cat')</script>"
XSS_SUITE = "quick<script>alert(2)</script>"
XSS_FILE = "img<b onmouseover=alert(3)>2.png"
SIZE = 48
# (attack, norm, eps, steps); clean first, as the runner writes it
POINTS = [("clean", "none", 0.0, 0), ("random", "linf", 2 / 255, 0), ("random", "linf", 8 / 255, 0),
          ("fgsm", "linf", 2 / 255, 1), ("fgsm", "linf", 8 / 255, 1), ("pgd", "linf", 8 / 255, 5),
          ("pgd", "linf", 8 / 255, 10), ("probe-silhouette", "none", 0.0, 0), ("patch-universal", "none", 0.0, 0),
          ("pgd", "linf", 4 / 255, 10, "vanish"), ("pgd", "linf", 8 / 255, 10, "vanish")]
VANISH = "pgd-linf-eps0.031373-s10-vanish"  # another objective: its own family, not a point of plain PGD


def key(attack, norm, eps, steps, variant="") -> str:
    if attack == "clean":
        return "clean"
    if attack.startswith(("probe-", "patch-")):
        return attack
    return f"{attack}-{norm}-eps{eps:.6f}-s{steps}" + (f"-{variant}" if variant else "")


def ap_of(attack: str, eps: float, steps: int, iou_type: str, scale: float) -> float:
    """A made-up but plausible AP: lower for stronger attacks; scale shifts a whole run."""
    base = 0.6 if iou_type == "bbox" else 0.55
    hit = {"clean": 0, "random": 0.2 * eps, "fgsm": 12 * eps, "pgd": 14 * eps + 0.002 * steps,
           "probe-silhouette": 0.2, "patch-universal": 0.3}[attack]
    return round(max(base - hit * scale, 0.0), 6)


def _square(x0, y0, side) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[y0:y0 + side, x0:x0 + side] = 1
    return m


def _rle(m: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(m))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode()}


def make_dataset(root: Path) -> tuple[Path, Path]:
    """Three 48x48 images, two squares each (categories 1 and 2)."""
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs, anns = [], []
    for iid, name in ((1, "img1.png"), (2, XSS_FILE), (3, "img3.png")):
        arr = (rng.random((SIZE, SIZE, 3)) * 80 + 60).astype(np.uint8)
        for cat, (x, y) in ((1, (4 + iid, 6)), (2, (26, 20 + iid))):
            m = _square(x, y, 16)
            arr[m.astype(bool)] = (200, 60, 60) if cat == 1 else (60, 60, 200)
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cat, "iscrowd": 0,
                         "segmentation": _rle(m), "area": int(m.sum()), "bbox": [x, y, 16, 16]})
        Image.fromarray(arr).save(images / name)
        imgs.append({"id": iid, "file_name": name, "height": SIZE, "width": SIZE})
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": [
        {"id": 1, "name": XSS_CAT}, {"id": 2, "name": XSS_CAT2}]}))
    return ann, images


def make_run(out: Path, data: tuple[Path, Path], scale: float = 1.0, extras: bool = True) -> Path:
    """A complete results directory in ``out`` for the dataset ``data`` (from make_dataset)."""
    ann_path, images = data
    coco = json.loads(ann_path.read_text())
    out.mkdir(parents=True)
    points = POINTS if extras else POINTS[:7]
    rows, class_rows, image_rows, stats = [], [], [], []
    (out / "predictions").mkdir()
    for attack, norm, eps, steps, *variant in points:
        k = key(attack, norm, eps, steps, *variant)
        kind = "clean" if attack == "clean" else attack.split("-")[0] if attack.startswith(("probe-", "patch-")) \
            else "attack"
        base = {"kind": kind, "attack": attack, "norm": norm, "eps": eps, "steps": steps, "point": k,
                "eps_label": "0" if attack == "clean" or eps == 0 else f"{round(eps * 255)}/255"}
        for t in ("bbox", "segm"):
            ap = ap_of(attack, eps, steps, t, scale) * (0.5 if variant else 1)
            rows += [{**base, "iou_type": t, "metric": m, "value": round(ap * f, 6)}
                     for m, f in (("AP", 1), ("AP50", 1.3), ("AP75", 0.9), ("APs", -1), ("APm", 1), ("APl", -1))]
            class_rows += [{**base, "iou_type": t, "category_id": c["id"], "category": c["name"],
                            "AP": round(ap * (1.1 if c["id"] == 1 else 0.9), 6)} for c in coco["categories"]]
        if attack == "probe-silhouette":
            rows.append({**base, "iou_type": "bbox", "metric": "shape_bias", "value": 0.7})
        # predictions: the GT squares shifted by a strength-dependent offset; strong attacks lose category 2
        shift = int(round(eps * 255 / 2)) if attack not in ("clean", "random") else 0
        preds = []
        for a in coco["annotations"]:
            if shift >= 4 and a["category_id"] == 2:
                continue
            m = np.roll(mask_utils.decode(a["segmentation"]), shift, axis=1)
            x, y, w, h = a["bbox"]
            preds.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
                          "bbox": [x + shift, y, w, h], "segmentation": _rle(m)})
        write_json(out / "predictions" / f"{k}.json", preds)
        if attack != "clean":
            stats.append({"point": k, "attack": attack, "objects": 6, "vanishing_rate": shift / 8,
                          "fp_per_image": 0.0})
            for im in coco["images"]:
                iid = im["id"]
                image_rows.append({"image_id": iid, "point": k, "attack": attack, "norm": norm, "eps": eps,
                                   "steps": steps, "loss_clean": 1.0, "loss_adv": 1.0 + shift + 0.1 * iid,
                                   "detections_clean": 2, "detections_adv": 2 - (shift >= 4) * (iid % 2),
                                   "linf": eps, "l2": eps * SIZE})
    write_metrics(out, rows)
    write_csv(out / "per_class.csv", class_rows)
    write_csv(out / "per_image.csv", image_rows)
    write_json(out / "run.json", {
        "status": "complete", "started": "2026-01-01T00:00:00+0000", "finished": "2026-01-01T00:01:00+0000",
        "command": "robustseg attack --suite quick", "seed": 0, "batch_size": 4, "device": "cpu", "limit": None,
        "kinds": ["attack"], "attack": {"suite": {"name": XSS_SUITE, "description": "hand-made <i>test</i> run"}},
        "versions": {"robustseg": "0.1.0", "torch": "2.x"},
        "model": {"path": "/models/tiny<script>.pt", "sha256": "ab" * 32, "format": "robustseg-checkpoint",
                  "arch": "tiny", "class_names": [XSS_CAT, XSS_CAT2], "category_ids": [1, 2], "meta": {}},
        "dataset": {"annotations": str(ann_path), "images": str(images), "sha256": "cd" * 32, "num_images": 3},
        "score_threshold_for_counts": 0.5})
    if extras:
        write_json(out / "sanity.json", {"verdict": "warn", "checks": [  # robustseg/sanity.py's shape
            {"check": "beats_random", "verdict": "pass", "detail": "at every eps", "ap": 0.1},
            {"check": "monotone_eps", "verdict": "warn", "detail": "<b>not</b> monotone at 2/255"}]})
        write_csv(out / "detection_stats.csv", stats)
        write_csv(out / "probes.csv", [{"point": "probe-silhouette", "images": 3, "objects": 6, "bbox_AP": 0.4}])
        write_csv(out / "object_accuracy.csv", [{"point": "fb-LinfPGD", "objects": 6, "clean_accuracy": 1.0,
                                                 "robust_accuracy": 0.5}])
        (out / "examples").mkdir()
        Image.fromarray(np.full((8, 24, 3), 90, np.uint8)).save(out / "examples" / "overview.png")
        write_csv(out / "gradnorms.csv", [  # robustseg/gradnorm.py's layout
            {"image_id": i, "checkpoint": "tiny.pt", "component": c, "condition": cond,
             "l1": 10.0 * i * (j + 1) * f, "l2": 1.0 * i * (j + 1) * f, "linf": 0.01 * i}
            for i in (1, 2, 3) for j, c in enumerate(("loss_classifier", "loss_mask"))
            for cond, f in (("clean", 1), ("adv", 2))])
        (out / "patches").mkdir()
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(out / "patches" / "universal.png")
        # adversarial example images of the strongest point of each family, as the runner saves them
        names = {im["id"]: im["file_name"] for im in coco["images"]}
        for k in (key("fgsm", "linf", 8 / 255, 1), key("pgd", "linf", 8 / 255, 10), VANISH):
            clean = [np.asarray(Image.open(images / names[i]), np.float32).transpose(2, 0, 1) / 255
                     for i in (1, 2, 3)]
            adv = [np.clip(c + 8 / 255 * np.sign(np.sin(np.arange(SIZE))), 0, 1) for c in clean]
            save_examples(out, k, [1, 2, 3], adv, clean)
    return out


_SHARED: dict = {}


def shared_report(tmp_path_factory) -> Path:
    """One full hand-made run with its report, built once per test session and shared by the report tests
    (each report build draws a dozen figures). Tests may regenerate it but must not change its inputs."""
    if "report" not in _SHARED:
        from robustseg.report.html import write_report
        root = tmp_path_factory.mktemp("shared-report")
        _SHARED["data"] = make_dataset(root / "data")
        _SHARED["report"] = write_report(make_run(root / "baseline", _SHARED["data"]))
    return _SHARED["report"]
