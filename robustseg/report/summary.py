"""summary.csv: metrics.csv made wide for spreadsheets, one row per run x attack point."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..fileio import atomic_write
from .rundata import RunData

KEYS = ["run", "point", "attack", "norm", "eps", "eps_label", "steps"]
WIDE_METRICS = ("AP", "AP50", "AP75")


def summary_frame(runs: list[RunData]) -> pd.DataFrame:
    frames = []
    for run in runs:
        m = run.metrics[run.metrics.metric.isin(WIDE_METRICS)].copy()
        points = m.drop_duplicates("point")[KEYS[1:]].assign(run=run.name)
        for t in ("bbox", "segm"):
            g = m[m.iou_type == t]
            wide = g.pivot(index="point", columns="metric", values="value")
            wide.columns = [f"{t}_{c}" for c in wide.columns]
            ap = g[g.metric == "AP"].set_index("point")
            wide[f"{t}_AP_drop"] = ap.drop_abs
            wide[f"{t}_AP_drop_rel"] = ap.drop_rel
            points = points.merge(wide, left_on="point", right_index=True, how="left")
        frames.append(points)
    df = pd.concat(frames, ignore_index=True)
    cols = KEYS + [f"{t}_{c}" for t in ("bbox", "segm") for c in (*WIDE_METRICS, "AP_drop", "AP_drop_rel")]
    return df.reindex(columns=cols)


def write_summary(path: Path, runs: list[RunData]) -> pd.DataFrame:
    df = summary_frame(runs)
    atomic_write(path, lambda f: df.to_csv(f, index=False, float_format="%.6g"))
    return df
