"""The natural-corruption parts of a report, from metrics.csv alone: P / mPC / rPC per group and IoU type
(recomputed from the per-point AP rows with corruptions/benchmark.py, so a report never trusts a stale figure),
the heatmap, the example grid and the kind's tables."""
from __future__ import annotations

import math

from ..corruptions import benchmark as cb
from . import plots
from .rundata import RunData

IOU_TYPES = ("bbox", "segm")


def ap_grid(run: RunData, iou_type: str) -> dict[tuple[str, int], float]:
    """(corruption, severity) -> AP of the run's corruption points."""
    g = run.ap(iou_type)
    g = g[g.kind == "corruption"]
    return {(str(r.corruption), int(r.severity)): float(r.value) for r in g.itertuples()}


def performance_rows(run: RunData) -> list[dict]:
    """One row per (group, iou_type): P, mPC, rPC, and what they were computed over."""
    rows = []
    for group in cb.GROUPS:
        for t in IOU_TYPES:
            perf = cb.performance(run.clean_value(t), ap_grid(run, t), group)
            if perf is None:
                continue
            scope = "15 corruptions x 5 severities" if group == "benchmark" else "4 corruptions x 5 severities"
            if not perf["complete"]:
                scope = (f"partial: {len(perf['corruptions'])} of {len(cb.GROUPS[group])} corruptions, severities "
                         f"{','.join(map(str, perf['severities']))}")
            rows.append({"group": group, "iou_type": t, "P": perf["P"], "mPC": perf["mPC"],
                         "rPC": perf["rPC"], "complete": perf["complete"], "scope": scope,
                         **{f"{k}_ci": _stored_ci(run, group, t, k) for k in ("mPC", "rPC")}})
    return rows


def _stored_ci(run: RunData, group: str, iou_type: str, metric: str) -> tuple:
    """The bootstrap interval the run stored beside its mPC/rPC row ((None, None) without one)."""
    m = run.metrics
    r = m[(m.point == f"mPC-{group}") & (m.iou_type == iou_type) & (m.metric == metric)]
    if r.empty:
        return None, None
    lo, hi = float(r.ci_lo.iloc[0]), float(r.ci_hi.iloc[0])
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (None, None)


def has_corruptions(run: RunData) -> bool:
    return bool((run.metrics.kind == "corruption").any())


def section(run: RunData, images, embed, optional, csv_table) -> dict | None:
    if not has_corruptions(run):
        return None
    ex = run.path / "examples" / "corruption_overview.png"
    return {"performance": performance_rows(run),
            "heatmap": optional("corruption heatmap", lambda: images.add(plots.corruption_heatmap(run),
                                                                         "corruption-heatmap",
                                                                         "AP per corruption and severity"), None),
            "overview": embed(ex) if ex.is_file() else None,
            "tables": [t for t in (optional(f, lambda: csv_table(run.path / f), None)
                                   for f in ("corruptions.csv", "corruption_per_class.csv")) if t]}


def pct(v) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"
