"""The worst-case ensemble's part of a report (docs/robust.md): robust AP per eps with its interval beside each
member's AP, the members' curves, and how often each member's image was kept (ensemble_winners.csv)."""
from __future__ import annotations

import pandas as pd

from ..errors import RobustsegError
from . import plots
from .rundata import RunData, finite_or_none

IOU_TYPES = ("bbox", "segm")
WINNER_COLUMNS = ("image_id", "norm", "eps_label", "iou_type", "winner")


def _value(g: pd.DataFrame, point: str, iou_type: str) -> tuple[float | None, float | None, float | None]:
    r = g[(g.point == point) & (g.iou_type == iou_type)]
    if r.empty:
        return None, None, None
    r = r.iloc[0]
    return finite_or_none(r.value), finite_or_none(r.ci_lo), finite_or_none(r.ci_hi)


def winners(run: RunData) -> pd.DataFrame | None:
    """ensemble_winners.csv read strictly (None when the run has none)."""
    path = run.path / "ensemble_winners.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path, dtype={"winner": str, "norm": str, "eps_label": str, "iou_type": str})
    missing = [c for c in WINNER_COLUMNS if c not in df.columns]
    if missing:
        raise RobustsegError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def rows(run: RunData) -> list[dict]:
    """Per robust point (one per norm and eps): robust AP per IoU type with its interval, and per member its AP
    and how many images it won, per IoU type."""
    ap = run.metrics[run.metrics.metric == "AP"]
    robust = ap[(ap.kind == "attack") & (ap.attack == "robust")].drop_duplicates("point")
    won = winners(run)
    out = []
    for r in robust.sort_values(["norm", "eps"]).itertuples():
        row = {"point": r.point, "norm": r.norm, "eps": r.eps_label, "members": []}
        for t in IOU_TYPES:
            row[t], row[f"{t}_lo"], row[f"{t}_hi"] = _value(ap, r.point, t)
        same = won[(won.norm == r.norm) & (won.eps_label == r.eps_label)] if won is not None else None
        members = sorted(set(same.winner)) if same is not None else []
        members = list(dict.fromkeys(
            [p for p in ap[(ap.kind == "attack") & (ap.norm == r.norm) & (ap.eps_label == r.eps_label)
                           & ~ap.attack.isin(["robust", "random"])].point] + members))
        for m in members:
            entry = {"point": m}
            for t in IOU_TYPES:
                entry[t] = _value(ap, m, t)[0]
                entry[f"{t}_won"] = int(((same.winner == m) & (same.iou_type == t)).sum()) if same is not None else None
            row["members"].append(entry)
        out.append(row)
    return out


def section(run: RunData, images, optional) -> dict | None:
    if not ((run.metrics.kind == "attack") & (run.metrics.attack == "robust")).any():
        return None
    return {"rows": rows(run),
            "figure": optional("robust-AP plot", lambda: images.add(plots.robust_curves(run), "robust-ap",
                                                                    "robust AP and its members vs eps"), None)}
