"""Comparison report of several results directories (e.g. a baseline and its adversarially fine-tuned version):
overlaid AP-vs-eps curves (a line per run), a delta table (each run minus the first, per common point) and the
summary.csv of all runs. Built from the files on disk alone.
"""
from __future__ import annotations

import time
from pathlib import Path

from .. import results
from ..fileio import atomic_write, write_text
from . import corruption as corr
from . import plots
from . import transfer
from .html import Images, env, headline
from .rundata import RunData, load_run
from .summary import write_summary


def _labels(dirs: list[Path]) -> list[str]:
    """Run names for legends and tables: the directory names, made unique."""
    names = [d.resolve().name for d in dirs]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]


def delta_rows(base: RunData, other: RunData) -> list[dict]:
    """For each point both runs have: AP of each, the difference other - base, and the change in drop."""
    rows = []
    points = [p for p in base.metrics.point.unique() if p in set(other.metrics.point)]
    for p in points:
        row = {"point": p}
        for t in ("bbox", "segm"):
            a, b = base.ap(t), other.ap(t)
            a, b = a[a.point == p], b[b.point == p]
            if a.empty or b.empty:
                continue
            row[f"{t}_a"], row[f"{t}_b"] = float(a.value.iloc[0]), float(b.value.iloc[0])
            row[f"{t}_delta"] = row[f"{t}_b"] - row[f"{t}_a"]
            row[f"{t}_drop_delta"] = float(b.drop_abs.iloc[0]) - float(a.drop_abs.iloc[0])
        if len(row) == 1:  # no AP at this point (e.g. the mPC rows of corruptions)
            continue
        r0 = base.metrics[base.metrics.point == p].iloc[0]
        row.update(attack=r0.attack, norm=r0.norm, eps=r0.eps_label, steps=int(r0.steps))
        rows.append(row)
    return rows


def default_out() -> Path:
    return Path("reports") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"


def write_comparison(run_dirs, out: str | Path | None = None, force: bool = False) -> Path:
    dirs = [Path(d) for d in run_dirs]
    runs = [load_run(d, label) for d, label in zip(dirs, _labels(dirs))]
    out_dir = results.prepare_out_dir(out or default_out(), force=force)
    write_summary(out_dir / "summary.csv", runs)
    images = Images(out_dir / "plots")
    families = list(dict.fromkeys(f for r in runs for f in r.families()))
    figures = []
    for attack, norm, variant in families:
        fid = "-".join(filter(None, (attack, norm, variant)))
        figures += [images.add(plots.ap_vs_eps(runs, attack, norm, variant), f"ap-vs-eps-{fid}", f"AP vs eps, {fid}"),
                    images.add(plots.ap_vs_steps(runs, attack, norm, variant), f"ap-vs-steps-{fid}",
                               f"AP vs steps, {fid}")]
    for kind, title in (("probe", "probes"), ("patch", "patches")):
        figures.append(images.add(plots.kind_bars(runs, kind), f"{kind}-ap", f"AP of {title}"))
    figures.append(images.add(plots.corruption_bars(runs), "corruption-ap", "AP per corruption, mean over severities"))
    figures.append(images.add(plots.gradnorm_cdfs(runs), "gradnorm-cdf", "input-gradient norm CDFs"))
    deltas = [{"base": runs[0].name, "other": r.name, "rows": delta_rows(runs[0], r)} for r in runs[1:]]
    atomic_write(out_dir / "delta.csv", lambda f: _delta_csv(f, deltas))
    html = env().get_template("compare.html.j2").render(
        runs=[{"name": r.name, "path": str(r.path), "info": r.info, "headline": headline(r),
               "corruption": _corruption_rows(r)} for r in runs],
        deltas=deltas, figures=[f for f in figures if f], transfer=transfer.matrices(runs), generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    return write_text(out_dir / "report.html", html)


def _corruption_rows(run: RunData) -> list[dict]:
    """P/mPC/rPC of a run with corruptions; a malformed one costs its rows, never the comparison."""
    try:
        return corr.performance_rows(run) if corr.has_corruptions(run) else []
    except (KeyError, IndexError, ValueError):
        return []


def _delta_csv(f, deltas: list[dict]) -> None:
    import pandas as pd
    rows = [{"base": d["base"], "other": d["other"], **r} for d in deltas for r in d["rows"]]
    cols = ["base", "other", "point", "attack", "norm", "eps", "steps"] + [
        f"{t}_{k}" for t in ("bbox", "segm") for k in ("a", "b", "delta", "drop_delta")]
    pd.DataFrame(rows, columns=cols).to_csv(f, index=False, float_format="%.6g")
