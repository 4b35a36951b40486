"""Natural corruptions as a kind (COCO-C, Michaelis et al. 2019): every (corruption, severity) on each batch,
on the run's device (robustseg/corruptions/), beside the engine's clean pass; P / mPC / rPC for boxes and masks
(corruptions/benchmark.py), the 4 extra corruptions apart.

Files beside the engine's: corruptions.csv (AP per corruption and severity), corruption_per_class.csv (per-class
P / mPC / rPC), examples/<point>/<id>.png and examples/corruption_overview.png.
"""
from __future__ import annotations

import math

import numpy as np

from ..corruptions import MIN_SIDE, corrupt_batch
from ..corruptions import benchmark as cb
from ..errors import RobustsegError
from ..eval.bootstrap import interval
from ..eval.coco_eval import IOU_TYPES, predict, to_coco_results
from ..fileio import write_png
from ..report.grid import image_grid
from ..results import write_csv
from ..run import BatchOut, Kind, Point, RunOptions, execute
from ..utils import derived_seed

CORRUPTIONS_COLUMNS = ["corruption", "group", "severity", "bbox_AP", "segm_AP", "bbox_AP50", "segm_AP50"]
PER_CLASS_COLUMNS = ["group", "category_id", "category", "iou_type", "P", "mPC", "rPC"]
OVERVIEW = "corruption_overview.png"


def point_key(name: str, severity: int) -> str:
    return f"corrupt-{name}-s{severity}"


class Corruptions(Kind):
    name = "corruption"
    default_limit = 32
    needs_annotations = True

    def __init__(self, corruptions="benchmark", severities="1-5", examples: int = 1):
        self.names = cb.parse_corruptions(corruptions)
        self.severities = cb.parse_severities(severities)
        if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
            raise RobustsegError(f"examples must be a number of images >= 0, got {examples!r}")
        self.examples = examples
        self.plan = [(n, s) for n in self.names for s in self.severities]

    def fingerprint(self, ctx) -> dict:
        return {"corruptions": self.names, "severities": self.severities}

    def describe(self, ctx) -> dict:
        return {"corruptions": self.names, "severities": self.severities,
                "seeding": "derived_seed(seed, 'corruption', name, severity, image_id), on the run's device",
                "protocol": "Michaelis et al. 2019: mPC = mean over corruptions of the mean AP over severities; "
                            "rPC = mPC / P; the extra corruptions reported apart"}

    def check(self, ctx) -> None:
        """Images too small for the corruptions (the reference's 32 px minimum) are unusable, like unreadable
        ones: skipped and logged, or the run refused under --on-error fail."""
        small = {iid: f"smaller than {MIN_SIDE} px on a side, too small to corrupt"
                 for iid in ctx.ds.image_ids
                 if min(int(ctx.ds.coco.imgs[iid].get("width", MIN_SIDE)),
                        int(ctx.ds.coco.imgs[iid].get("height", MIN_SIDE))) < MIN_SIDE}
        if small and ctx.opts.on_error == "fail":
            iid = next(iter(small))
            raise RobustsegError(f"{len(small)} image(s) cannot be corrupted: image {iid}: {small[iid]}")
        for iid, why in small.items():
            ctx.problems.setdefault(iid, why)

    def ready(self, ctx, run_dir) -> None:
        self.out = run_dir.path
        usable = [i for i in ctx.ds.image_ids if i not in ctx.problems]
        self.example_ids = usable[:self.examples]

    def points(self, ctx) -> list[Point]:
        return [Point(point_key(n, s), self.name, {"attack": n, "norm": "none", "eps_label": "", "steps": 0,
                                                   "corruption": n, "severity": s}) for n, s in self.plan]

    def cost_per_image(self, ctx) -> float:
        return float(len(self.plan))  # a prediction per point; corrupting is far cheaper (docs/corruptions.md)

    def work(self, ctx, batch) -> BatchOut:
        out = BatchOut()
        for iid, x in zip(batch.ids, batch.images):
            if iid in self.example_ids:
                write_png(self.out / "examples" / "clean" / f"{iid}.png", x)
        for name, severity in self.plan:
            seeds = [derived_seed(ctx.seed, "corruption", name, severity, iid) for iid in batch.ids]
            images = corrupt_batch(batch.images, name, severity, seeds)
            key = point_key(name, severity)
            batch.progress(0, key)
            for iid, x in zip(batch.ids, images):
                if iid in self.example_ids:
                    write_png(self.out / "examples" / key / f"{iid}.png", x)
            outs = predict(ctx.lm.model, images)
            out.predictions[key] = [r for o, iid in zip(outs, batch.ids)
                                    for r in to_coco_results(o, iid, ctx.lm.category_ids)]
            batch.progress(len(batch.ids))
        return out

    def amend(self, ctx, run_dir, scored) -> None:
        """mPC and rPC rows (kind corruption, corruption = the group) and the per-class figures."""
        self.performance = {t: {} for t in IOU_TYPES}
        for t in IOU_TYPES:
            ap = {(p.columns["corruption"], p.columns["severity"]): scored.evals[p.key][t]["AP"]
                  for p in scored.points if p.kind == self.name}
            for group in cb.GROUPS:
                perf = cb.performance(scored.evals["clean"][t]["AP"], ap, group)
                if perf is None:
                    continue
                self.performance[t][group] = perf
                base = {"kind": self.name, "point": f"mPC-{group}", "attack": "mPC", "norm": "none", "eps_label": "",
                        "steps": 0, "corruption": group, "iou_type": t}
                mpc_ci, rpc_ci = self.intervals(scored, t, group)
                scored.rows += [{**base, "metric": "mPC", "value": perf["mPC"], **mpc_ci},
                                {**base, "metric": "rPC", "value": perf["rPC"], **rpc_ci}]
                perf.update(mPC_ci=[mpc_ci.get("ci_lo"), mpc_ci.get("ci_hi")],
                            rPC_ci=[rpc_ci.get("ci_lo"), rpc_ci.get("ci_hi")])
        self.class_rows = self.per_class(ctx, scored)
        scored.extra.update(corruption_performance=self.performance)

    def intervals(self, scored, iou_type: str, group: str) -> tuple[dict, dict]:
        """Bootstrap intervals of mPC and rPC: the same double mean (and ratio to clean AP) on every resample of
        the images, which every point shares (run/scoring.py)."""
        clean = scored.boots("clean", iou_type)
        if clean is None:
            return {}, {}
        per = [np.mean([scored.boots(point_key(n, s), iou_type) for s in self.severities], axis=0)
               for n in self.names if cb.group_of(n) == group]
        mpc = np.mean(per, axis=0)
        lo, hi = interval(mpc)
        rlo, rhi = interval(mpc / np.where(clean > 0, clean, np.nan))
        return {"ci_lo": lo, "ci_hi": hi}, {"ci_lo": rlo, "ci_hi": rhi}

    def per_class(self, ctx, scored) -> list[dict]:
        names = dict(zip(ctx.lm.category_ids, ctx.lm.class_names))
        rows = []
        for t in IOU_TYPES:
            clean = scored.evals["clean"]["per_class"][t]
            for group in cb.GROUPS:
                pts = [p for p in scored.points if p.kind == self.name and cb.group_of(p.columns["corruption"]) == group]
                if not pts:
                    continue
                for cid, p_clean in clean.items():
                    ap = {(p.columns["corruption"], p.columns["severity"]): scored.evals[p.key]["per_class"][t][cid]
                          for p in pts}
                    perf = cb.performance(p_clean, ap, group)
                    rows.append({"group": group, "category_id": cid, "category": names.get(cid, str(cid)),
                                 "iou_type": t, "P": perf["P"], "mPC": perf["mPC"], "rPC": perf["rPC"]})
        return rows

    def finish(self, ctx, run_dir, scored) -> dict:
        out = run_dir.path
        rows = []
        for name, severity in self.plan:
            m = scored.evals[point_key(name, severity)]
            rows.append({"corruption": name, "group": cb.group_of(name), "severity": severity,
                         **{f"{t}_{k}": m[t][k] for t in IOU_TYPES for k in ("AP", "AP50")}})
        write_csv(out / "corruptions.csv", rows, CORRUPTIONS_COLUMNS)
        write_csv(out / "corruption_per_class.csv", self.class_rows, PER_CLASS_COLUMNS)
        ex = out / "examples"
        for iid in self.example_ids[:1]:
            image_grid(ex / OVERVIEW, [[ex / "clean" / f"{iid}.png"] + [ex / point_key(n, s) / f"{iid}.png"
                                                                         for s in self.severities]
                                        for n in self.names],
                       row_labels=self.names, col_labels=["clean"] + [f"severity {s}" for s in self.severities])
        return {"corruption_performance": self.performance}

    def summary(self, ctx, scored) -> str:
        return summary_text(scored.evals, self.names, self.severities, self.performance)


def _cell(v: float) -> str:
    return "  -  " if v is None or not math.isfinite(v) or v < 0 else f"{v:.3f}"


def summary_text(evals: dict, names: list[str], severities: list[int], performance: dict) -> str:
    """bbox/segm AP per corruption and severity, then P / mPC / rPC per group."""
    head = f"{'corruption':18} " + " ".join(f"{'s' + str(s):>11}" for s in severities)
    lines = ["AP per corruption and severity (bbox/segm)", head]
    for n in names:
        cells = [f"{_cell(evals[point_key(n, s)]['bbox']['AP'])}/{_cell(evals[point_key(n, s)]['segm']['AP'])}"
                 for s in severities]
        lines.append(f"{n:18} " + " ".join(f"{c:>11}" for c in cells))
    for group in cb.GROUPS:
        b, s = performance["bbox"].get(group), performance["segm"].get(group)
        if b is None:
            continue
        scope = "" if b["complete"] else (f" (partial: {len(b['corruptions'])} of {len(cb.GROUPS[group])} "
                                          f"corruptions, severities {','.join(map(str, b['severities']))})")
        label = "mPC" if group == "benchmark" else "extra mPC"
        lines.append(f"{group}{scope}: P {_cell(b['P'])}/{_cell(s['P'])}  {label} {_cell(b['mPC'])}{_ci(b)}/"
                     f"{_cell(s['mPC'])}{_ci(s)}  rPC {_pct(b['rPC'])}/{_pct(s['rPC'])}  (bbox/segm)")
    return "\n".join(lines)


def _ci(perf: dict) -> str:
    lo, hi = perf.get("mPC_ci") or (None, None)
    return "" if lo is None or not math.isfinite(lo) else f" [{lo:.3f},{hi:.3f}]"


def _pct(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{100 * v:.1f}%"


def run_corruptions(model=None, data=None, images=None, *, corruptions="benchmark", severities="1-5",
                    examples: int = 1, out=None, force: bool = False, resume: bool = False, **options):
    """The COCO-C benchmark (or the chosen corruptions and severities) on a dataset (default: the first 32
    images of the built-in synthetic split), into the results directory ``out``; the result has
    ``.corruption_performance`` ({iou_type: {group: {P, mPC, rPC, ...}}})."""
    return execute([Corruptions(corruptions, severities, examples)], model, data, images, out=out,
                   opts=RunOptions(**options), force=force, resume=resume, label="corrupt")
