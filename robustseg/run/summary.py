"""The table a run prints when it ends: clean vs attacked AP per point, the drop in brackets."""
from __future__ import annotations

import re


def summary_table(df) -> str:
    """bbox and segm AP per point; eps as written (8/255), steps, and what else tells points apart (objective,
    losses, parameters: the end of the point's key). Points with no eps (patches) show their name."""
    ap = df[df.metric == "AP"]
    lines = [f"{'attack':12} {'norm':6} {'eps':>8} {'steps':>5} {'bbox AP':>16} {'segm AP':>16}  variant"]
    for key, g in ap.groupby("point", sort=False):
        cells = []
        for t in ("bbox", "segm"):
            r = g[g.iou_type == t].iloc[0]
            cells.append(f"{r.value:.3f}" + ("" if key == "clean" else f" ({-r.drop_abs:+.3f})"))
        r = g.iloc[0]
        variant = ""
        if r.norm in ("linf", "l2"):
            head = f"{r.attack:12} {r.norm:6} {r.eps_label:>8} {int(r.steps):>5}"
            m = re.search(r"-s\d+(.*)$", str(key))
            variant = m.group(1).lstrip("-") if m else ""
        else:  # clean, patches: the point's name says it all
            head = f"{key:34}"
        lines.append(f"{head} {cells[0]:>16} {cells[1]:>16}  {variant}".rstrip())
    return "\n".join(lines)
