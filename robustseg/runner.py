"""Run a suite: one clean pass, then every attack point on every batch, then COCO evaluation of each point.

image -> perturbation -> loss -> gradient -> step (attacks/) -> predictions -> COCO eval -> tidy rows -> report.
Predictions stream to ``work/*.jsonl`` while the run goes, so memory stays flat; each point is evaluated once
at the end with the same code as ``robustseg eval``.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .api import batches
from .attacks import ATTACKS, DetectorLoss
from .data.coco import CocoDataset
from .eval.coco_eval import IOU_TYPES, METRICS, evaluate, predict, to_coco_results
from .fileio import sha256_file, write_json
from .models.checkpoint import LoadedModel, load_model
from .models.modes import attack_mode
from .results import append_jsonl, prepare_out_dir, read_jsonl, versions, write_csv, write_metrics, write_run_json
from .suites import AttackPoint, Suite, load_suite

SCORE_THRESHOLD = 0.5  # detections counted in per_image.csv
CLEAN = AttackPoint("clean")
PER_IMAGE_COLUMNS = ["image_id", "point", "attack", "norm", "eps", "steps", "loss_clean", "loss_adv",
                     "detections_clean", "detections_adv", "linf", "l2"]


@dataclass
class RunResult:
    out: Path
    metrics: "object"  # pandas DataFrame of metrics.csv

    def summary(self) -> str:
        return summary_table(self.metrics)


def derived_seed(seed: int, *parts) -> int:
    """A seed for one (point, batch): results do not depend on the order points or batches run in."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()[:7], "big")


def build_attack(point: AttackPoint):
    cls = ATTACKS[point.attack]
    kwargs = {"norm": point.norm, **dict(point.params)}
    if point.attack in ("pgd", "mifgsm"):
        kwargs["steps"] = point.steps
    return cls(**kwargs)


@torch.no_grad()
def per_image_losses(model, images, targets, objective, seed: int) -> list[float]:
    out = []
    with attack_mode(model):
        for i, (x, t) in enumerate(zip(images, targets)):
            torch.manual_seed(derived_seed(seed, "loss", i))
            out.append(float(objective(model, [x], [t])[0]))
    return out


def _count(outputs) -> list[int]:
    return [int((o["scores"] >= SCORE_THRESHOLD).sum()) for o in outputs]


def run_suite(model: str | Path | LoadedModel | None = None, suite: str | Path | Suite | None = None,
              data: str | Path | None = None, images: str | Path | None = None, *, out: str | Path | None = None,
              limit: int | None = None, batch_size: int = 4, device: str = "cpu", seed: int = 0,
              force: bool = False, progress: bool = True, command: str | None = None) -> RunResult:
    """Attack ``model`` with every point of ``suite`` on a dataset and write the results directory."""
    t_start = time.time()
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    lm.model.to(device)
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    if data is None:
        from .data.synth import default_split
        data, images = default_split()
    ds = CocoDataset(data, images, category_ids=lm.category_ids, limit=limit)
    if len(ds) == 0:
        from .errors import RobustsegError
        raise RobustsegError(f"{data}: no images to attack")
    if out is None:
        out = Path("reports") / f"{Path(lm.path or 'model').stem}-{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = prepare_out_dir(out, force=force)
    for stale in ("work", "predictions"):
        shutil.rmtree(out / stale, ignore_errors=True)
    work = out / "work"
    work.mkdir()
    (out / "predictions").mkdir()
    points = suite.points
    run_info = {
        "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or " ".join(["robustseg"] + sys.argv[1:]), "seed": seed, "batch_size": batch_size,
        "device": str(device), "limit": limit, "suite": suite.as_dict(), "versions": versions(),
        "model": {k: v for k, v in lm.describe().items() if k != "meta"} | {"meta": lm.meta},
        "dataset": {"annotations": str(Path(data).resolve()), "images": str(Path(images).resolve()),
                    "sha256": sha256_file(data), "num_images": len(ds), "skipped_annotations": ds.skipped},
        "score_threshold_for_counts": SCORE_THRESHOLD,
    }
    write_run_json(out, run_info)

    model_ = lm.model
    per_image_rows: list[dict] = []
    bar = tqdm(total=len(ds) * (1 + len(points)), desc="attack", unit="img", disable=not progress,
               dynamic_ncols=True)
    for idx in batches(len(ds), batch_size):
        imgs = [ds.load_image(i).to(device) for i in idx]
        tgts = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in ds.target(i).items()} for i in idx]
        ids = [ds.image_ids[i] for i in idx]
        clean_out = predict(model_, imgs)
        append_jsonl(work / "clean.jsonl", (r for o, iid in zip(clean_out, ids)
                                            for r in to_coco_results(o, iid, lm.category_ids)))
        clean_counts = _count(clean_out)
        bar.update(len(idx))
        losses_clean: dict[tuple, list[float]] = {}
        for point in points:
            objective = DetectorLoss(point.losses)
            lkey = point.losses
            if lkey not in losses_clean:
                losses_clean[lkey] = per_image_losses(model_, imgs, tgts, objective, derived_seed(seed, ids[0]))
            s = derived_seed(seed, point.key, ids[0])
            torch.manual_seed(s)
            gen = torch.Generator().manual_seed(s)
            adv = build_attack(point)(model_, imgs, tgts, [point.eps], objective, gen)[0]
            adv_out = predict(model_, adv)
            append_jsonl(work / f"{point.key}.jsonl", (r for o, iid in zip(adv_out, ids)
                                                       for r in to_coco_results(o, iid, lm.category_ids)))
            loss_adv = per_image_losses(model_, adv, tgts, objective, derived_seed(seed, ids[0]))
            for j, iid in enumerate(ids):
                d = (adv[j] - imgs[j]).flatten()
                per_image_rows.append({
                    "image_id": iid, "point": point.key, "attack": point.attack, "norm": point.norm,
                    "eps": point.eps, "steps": point.steps, "loss_clean": losses_clean[lkey][j],
                    "loss_adv": loss_adv[j], "detections_clean": clean_counts[j],
                    "detections_adv": _count(adv_out[j:j + 1])[0], "linf": float(d.abs().max()),
                    "l2": float(d.norm(p=2))})
            bar.update(len(idx))
    bar.close()

    rows, class_rows = [], []
    for point in [CLEAN] + points:
        key = "clean" if point is CLEAN else point.key
        results = read_jsonl(work / f"{key}.jsonl")
        write_json(out / "predictions" / f"{key}.json", results)
        m = evaluate(ds.coco, results, ds.image_ids)
        base = {"attack": point.attack, "norm": point.norm if point is not CLEAN else "none", "eps": point.eps,
                "eps_label": point.eps_label if point is not CLEAN else "0", "steps": point.steps, "point": key}
        for t in IOU_TYPES:
            rows += [{**base, "iou_type": t, "metric": k, "value": m[t][k]} for k in METRICS]
            names = dict(zip(lm.category_ids, lm.class_names))
            class_rows += [{**base, "iou_type": t, "category_id": c, "category": names.get(c, str(c)), "AP": ap}
                           for c, ap in m["per_class"][t].items()]
    df = write_metrics(out, rows)
    write_csv(out / "per_class.csv", class_rows)
    write_csv(out / "per_image.csv", per_image_rows, PER_IMAGE_COLUMNS)
    shutil.rmtree(work, ignore_errors=True)
    run_info.update(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    wall_seconds=round(time.time() - t_start, 1))
    write_run_json(out, run_info)
    from .report.html import write_report
    write_report(out)
    return RunResult(out, df)


def summary_table(df) -> str:
    """Clean vs attacked AP per point (bbox and segm AP), the drop in brackets."""
    ap = df[df.metric == "AP"]
    lines = [f"{'point':44} {'bbox AP':>16} {'segm AP':>16}"]
    for key, g in ap.groupby("point", sort=False):
        cells = []
        for t in ("bbox", "segm"):
            r = g[g.iou_type == t].iloc[0]
            cells.append(f"{r.value:.3f}" + ("" if key == "clean" else f" ({-r.drop_abs:+.3f})"))
        lines.append(f"{key:44} {cells[0]:>16} {cells[1]:>16}")
    return "\n".join(lines)
