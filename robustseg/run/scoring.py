"""Scoring: every point's merged predictions evaluated once, with the same COCO code as ``robustseg eval``,
into metrics.csv (one schema for every kind, results.METRIC_COLUMNS), per_class.csv and predictions/."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import RobustsegError
from ..eval.bootstrap import AP_METRICS, interval, resamples
from ..eval.coco_eval import IOU_TYPES, METRICS, evaluate
from ..fileio import write_json
from ..results import write_csv, write_metrics
from ..utils import derived_seed
from .kind import Point

CLEAN = Point("clean", "clean", {"attack": "clean", "norm": "none", "eps": 0.0, "eps_label": "0", "steps": 0})


@dataclass
class Scored:
    """What the kinds' ``amend`` and ``finish`` see: per point its results and COCO metrics; per pass the
    evaluated and the failed images. Kinds add metric rows and identity columns before metrics.csv is written."""
    points: list[Point]
    results: dict[str, list[dict]]
    evals: dict[str, dict]
    eval_ids: dict[str, list[int]]
    failed: dict[str, list[dict]]
    rows: list[dict] = field(default_factory=list)          # extra metric rows (a kind's own metrics)
    columns: dict[str, dict] = field(default_factory=dict)  # point -> identity columns known only at the end
    extra: dict = field(default_factory=dict)               # kinds' results for the Python API
    metrics: object = None                                  # the written metrics.csv as a DataFrame
    resamples: dict = field(default_factory=dict)           # pass -> bootstrap rows (positions, sorted ids)

    def base(self, point: Point) -> dict:
        return {"kind": point.kind, "point": point.key, **point.columns, **self.columns.get(point.key, {})}

    def boots(self, key: str, iou_type: str, metric: str = "AP") -> np.ndarray | None:
        """Point ``key``'s metric on every bootstrap resample of its pass (None without intervals)."""
        b = self.evals[key].get("boots")
        return None if b is None else b[iou_type][metric]

    def intervals(self, point: Point, iou_type: str, metric: str) -> dict:
        """ci_lo/ci_hi of the metric and, on the main pass, drop_ci_lo/hi of the drop paired with clean."""
        b = self.boots(point.key, iou_type, metric) if metric in AP_METRICS else None
        if b is None:
            return {}
        lo, hi = interval(b)
        out = {"ci_lo": lo, "ci_hi": hi}
        if point.pass_name == CLEAN.pass_name:
            out["drop_ci_lo"], out["drop_ci_hi"] = interval(self.boots(CLEAN.key, iou_type, metric) - b)
        return out

    def run_info(self) -> dict:
        failed = [f for rows in self.failed.values() for f in rows]
        return {"failed_images": failed, "num_failed_images": len(failed),
                "num_evaluated_images": len(self.eval_ids.get("images", []))}


def score(ctx, run_dir, passes: dict, points: list[Point]) -> Scored:
    """Merge every rank's streamed predictions in dataset order and evaluate each point once."""
    eval_ids, failed = {}, {}
    for name, p in passes.items():
        failed[name] = run_dir.merged(name, "failed", {iid: n for n, iid in enumerate(p.source.image_ids)})
        bad = {int(f["image_id"]) for f in failed[name]}
        eval_ids[name] = [i for i in p.source.image_ids if i not in bad]
    if not eval_ids["images"]:
        raise RobustsegError("no image could be read; nothing to evaluate (see run.json)")
    n_boot = ctx.opts.bootstrap
    rows = {name: resamples(len(ids), n_boot, derived_seed(ctx.seed, "bootstrap", name)) if n_boot and ids else None
            for name, ids in eval_ids.items()}  # positions into the sorted ids, as evaluate orders them
    results, evals = {}, {}
    for point in [CLEAN, *points]:
        src = passes[point.pass_name].source
        order = {iid: n for n, iid in enumerate(src.image_ids)}
        results[point.key] = run_dir.merged(point.pass_name, point.key, order)
        evals[point.key] = evaluate(src.gt, results[point.key], eval_ids[point.pass_name],
                                    resamples=rows[point.pass_name])
    return Scored([CLEAN, *points], results, evals, eval_ids, failed, resamples=rows)


def write_scored(ctx, run_dir, scored: Scored) -> None:
    """predictions/<point>.json, metrics.csv (with drops from the clean row) and per_class.csv."""
    out = run_dir.path
    names = dict(zip(ctx.lm.category_ids, ctx.lm.class_names))
    rows, class_rows = [], []
    for point in scored.points:
        write_json(out / "predictions" / f"{point.key}.json", scored.results[point.key])
        m, base = scored.evals[point.key], scored.base(point)
        for t in IOU_TYPES:
            rows += [{**base, "iou_type": t, "metric": k, "value": m[t][k], **scored.intervals(point, t, k)}
                     for k in METRICS]
            class_rows += [{**base, "iou_type": t, "category_id": c, "category": names.get(c, str(c)), "AP": ap}
                           for c, ap in m["per_class"][t].items()]
    scored.metrics = write_metrics(out, rows + scored.rows)
    write_csv(out / "per_class.csv", class_rows)


def score_and_write(ctx, run_dir, passes: dict, points: list[Point], kinds) -> Scored:
    scored = score(ctx, run_dir, passes, points)
    for k in kinds:
        k.amend(ctx, run_dir, scored)
    write_scored(ctx, run_dir, scored)
    return scored
