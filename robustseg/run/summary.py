"""The table a run prints when it ends: clean vs attacked AP per point, its 95% interval, the drop in brackets."""
from __future__ import annotations

import math
import re


def _ci(lo, hi) -> str:
    return f"[{lo:.2f},{hi:.2f}]" if isinstance(lo, float) and math.isfinite(lo) and math.isfinite(hi) else ""


def ap_cell(r, clean: bool) -> str:
    """``0.282 [0.21,0.35] (-0.622 [-0.70,-0.55])``: AP and its change from clean, each with its bootstrap interval
    when the run has one (the change's is paired: the same resampled images for both)."""
    text = f"{r.value:.3f}" + (f" {_ci(r.ci_lo, r.ci_hi)}" if _ci(r.ci_lo, r.ci_hi) else "")
    if clean:
        return text
    change = f"{-r.drop_abs:+.3f}" + (f" {_ci(-r.drop_ci_hi, -r.drop_ci_lo)}" if _ci(r.drop_ci_lo, r.drop_ci_hi) else "")
    return f"{text} ({change})"


def summary_table(df) -> str:
    """bbox and segm AP per point; eps as written (8/255), steps, and what else tells points apart (objective,
    losses, parameters: the end of the point's key). Points with no eps (patches) show their name."""
    ap = df[df.metric == "AP"]
    repeated = ap.seed.fillna(0) > 0
    spread = _seed_lines(ap) if repeated.any() else []
    ap = ap[~repeated]
    width = 42 if ap.ci_lo.notna().any() else 16
    lines = [f"{'attack':12} {'norm':6} {'eps':>8} {'steps':>5} {'bbox AP':>{width}} {'segm AP':>{width}}  variant"]
    for key, g in ap.groupby("point", sort=False):
        cells = [ap_cell(g[g.iou_type == t].iloc[0], key == "clean") for t in ("bbox", "segm")]
        r = g.iloc[0]
        variant = ""
        if r.norm in ("linf", "l2"):
            head = f"{r.attack:12} {r.norm:6} {r.eps_label:>8} {int(r.steps):>5}"
            m = re.search(r"-s\d+(.*)$", str(key))
            variant = m.group(1).lstrip("-") if m else ""
        else:  # clean, patches: the point's name says it all
            head = f"{key:34}"
        lines.append(f"{head} {cells[0]:>{width}} {cells[1]:>{width}}  {variant}".rstrip())
    if width > 16:
        lines.append("[lo,hi]: 95% bootstrap interval over images (run.json 'intervals')")
    return "\n".join(lines + spread)


def _seed_lines(ap) -> list[str]:
    """Under --seeds: per repeated point, its AP over the seeds (the table above shows seed 0)."""
    ap = ap.assign(base=[re.sub(r"-seed\d+$", "", p) for p in ap.point])
    lines = []
    for base, g in ap.groupby("base", sort=False):
        if g.seed.nunique() < 2:
            continue
        cells = []
        for t in ("bbox", "segm"):
            v = g[g.iou_type == t].value
            cells.append(f"{t} {v.mean():.3f} sd {v.std(ddof=1):.3f} [{v.min():.3f},{v.max():.3f}]")
        lines.append(f"  {base}: {', '.join(cells)}")
    n = int(ap.seed.nunique())
    return [f"over {n} seeds (mean, sd, [min,max]; the table shows seed 0):", *lines] if lines else []
