"""The transfer matrix of a comparison report (robustseg transfer): per attack point and IoU type, the AP of
every (crafted on, evaluated on) pair with its interval, the white-box diagonal marked, and a transfer attack
that beat the white-box one flagged. From each target run's metrics.csv and run.json alone."""
from __future__ import annotations

from .rundata import RunData, finite_or_none as _finite


def matrices(runs: list[RunData]) -> list[dict]:
    """[{point, iou_type, targets, rows: [{source, cells: [{ap, lo, hi, whitebox, warn} | None per target]}]}]"""
    cells: dict = {}
    targets = []
    for run in runs:
        m = run.metrics
        rows = m[(m.kind == "transfer") & (m.metric == "AP") & m.source.notna() & (m.source != "")]
        if rows.empty:
            continue
        target = str(run.info.get("transfer", {}).get("target", run.name))
        targets.append(target)
        warns = {(c["point"], c["source"]) for c in run.info.get("transfer_checks", {}).get("checks", [])
                 if c.get("verdict") == "warn"}
        for r in rows.itertuples():
            point = r.point.split("--", 1)[1]
            cells.setdefault((point, r.iou_type), {})[(str(r.source), target)] = {
                "ap": float(r.value), "lo": _finite(r.ci_lo), "hi": _finite(r.ci_hi),
                "whitebox": str(r.source) == target, "warn": (point, str(r.source)) in warns}
    out = []
    for (point, iou_type), by_pair in cells.items():
        sources = list(dict.fromkeys(s for s, _ in by_pair))
        out.append({"point": point, "iou_type": iou_type, "targets": targets,
                    "rows": [{"source": s, "cells": [by_pair.get((s, t)) for t in targets]} for s in sources]})
    return out
