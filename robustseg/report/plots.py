"""Report figures with matplotlib's object API (Figure + Agg canvas, no pyplot state, no display needed).

Each function returns a Figure or None when there is nothing to draw; ``save`` writes it as PNG (deterministic
bytes: no timestamp metadata) and returns the bytes for embedding. Text from data goes through ``_text`` so a
'$' in a category name is shown literally instead of starting matplotlib mathtext.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..fileio import write_bytes
from .rundata import RunData

IOU_TYPES = ("bbox", "segm")
DPI = 100


def _text(s) -> str:
    return str(s).replace("$", r"\$")


def save(fig: Figure, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})  # layout="constrained" fits it
    write_bytes(path, buf.getvalue())
    return buf.getvalue()


def _x(eps, norm: str):
    """Linf eps shown in 1/255 units, L2 eps as is."""
    return np.asarray(eps, dtype=float) * (255 if norm == "linf" else 1)


def _xlabel(norm: str) -> str:
    return "eps (x/255, Linf)" if norm == "linf" else f"eps ({norm.upper()})"


def _only(df: pd.DataFrame, iou_type: str, metric: str = "AP") -> pd.DataFrame:
    return df[(df.iou_type == iou_type) & (df.metric == metric)]


def _panels(n: int = 2, height: float = 3.2) -> tuple[Figure, list]:
    fig = Figure(figsize=(4.2 * n, height), layout="constrained")
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


def ap_vs_eps(runs: list[RunData], attack: str, norm: str, variant: str = "") -> Figure | None:
    """AP vs eps for one attack family (a line per step count; per run when comparing), with the same-norm
    random baseline dashed and eps 0 = clean AP."""
    fig, axes = _panels()
    drew = False
    for ax, t in zip(axes, IOU_TYPES):
        for k, run in enumerate(runs):
            prefix = f"{run.name}: " if len(runs) > 1 else ""
            clean = run.clean_value(t)
            fam = _only(run.family(attack, norm, variant), t)
            for j, (steps, s) in enumerate(fam.groupby("steps")):
                s = s.sort_values("eps")
                label = f"{prefix}{attack}" + (f" {steps} steps" if attack not in ("fgsm",) and steps else "")
                ax.plot(_x([0, *s.eps], norm), [clean, *s.value], marker="o", color=f"C{k}",
                        linestyle=["-", ":", "-."][j % 3],
                        label=_text(label))
                drew = True
            rnd = _only(run.random_rows(norm), t).sort_values("eps")
            if len(rnd):
                ax.plot(_x([0, *rnd.eps], norm), [clean, *rnd.value], marker=".", linestyle="--",
                        color=f"C{k}", alpha=0.5, label=_text(f"{prefix}random noise"))
        ax.set(title=f"{t} AP", xlabel=_xlabel(norm), ylabel="AP", ylim=(0, None))
        ax.grid(alpha=0.3)
    if drew:
        axes[-1].legend(fontsize=7, loc="best")
    return fig if drew else None


def robust_curves(run: RunData) -> Figure | None:
    """Per norm: robust AP vs eps (bold) and each ensemble member's AP at the same eps (thin), eps 0 = clean."""
    m = run.metrics
    robust = m[(m.kind == "attack") & (m.attack == "robust")]
    if robust.empty:
        return None
    fig, axes = _panels()
    for ax, t in zip(axes, IOU_TYPES):
        clean = run.clean_value(t)
        for norm in dict.fromkeys(robust.norm):
            r = _only(robust[robust.norm == norm], t).sort_values("eps")
            members = _only(m[(m.kind == "attack") & (m.norm == norm) & m.eps.isin(r.eps)
                              & ~m.attack.isin(["robust", "random"])], t)
            for j, (point_variant, s) in enumerate(members.groupby(["attack", "variant"], sort=False)):
                s = s.sort_values("eps")
                ax.plot(_x([0, *s.eps], norm), [clean, *s.value], marker=".", linewidth=1, alpha=0.7,
                        color=f"C{j + 1}", label=_text(f"{point_variant[0]} {point_variant[1] or 'gt'}"))
            ax.plot(_x([0, *r.eps], norm), [clean, *r.value], marker="o", linewidth=2.5, color="C0",
                    label=_text(f"robust ({norm})"))
            if r.ci_lo.notna().all():
                ax.fill_between(_x(list(r.eps), norm), r.ci_lo, r.ci_hi, color="C0", alpha=0.15)
        ax.set(title=f"{t} AP", xlabel=_xlabel(norm), ylabel="AP", ylim=(0, None))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    return fig


def ap_vs_steps(runs: list[RunData], attack: str, norm: str, variant: str = "") -> Figure | None:
    """AP vs number of steps at each eps that was run with several step counts."""
    fig, axes = _panels()
    drew = False
    for ax, t in zip(axes, IOU_TYPES):
        for k, run in enumerate(runs):
            fam = _only(run.family(attack, norm, variant), t)
            for j, (eps, s) in enumerate(fam.groupby("eps")):
                if s.steps.nunique() < 2:
                    continue
                s = s.sort_values("steps")
                label = (f"{run.name}: " if len(runs) > 1 else "") + f"eps {s.eps_label.iloc[0]}"
                ax.plot(s.steps, s.value, marker="o", color=f"C{k if len(runs) > 1 else j}", label=_text(label))
                drew = True
        ax.set(title=f"{t} AP", xlabel="steps", ylabel="AP", ylim=(0, None))
        ax.grid(alpha=0.3)
    if drew:
        axes[-1].legend(fontsize=7)
    return fig if drew else None


def per_class_drop(run: RunData, point: str) -> Figure | None:
    """Per-category AP drop (clean minus attacked) at one point, bbox and segm."""
    pc = run.per_class
    if pc is None or pc.empty:
        return None
    fig, axes = _panels(height=0.35 * pc.category_id.nunique() + 1.5)
    for ax, t in zip(axes, IOU_TYPES):
        g = pc[pc.iou_type == t]
        clean = g[g.point == "clean"].set_index("category_id")
        adv = g[g.point == point].set_index("category_id")
        drop = (clean.AP - adv.AP).dropna()
        names = [_text(clean.category.get(c, c)) for c in drop.index]
        ax.barh(range(len(drop)), drop.values, color=["C3" if v > 0 else "C2" for v in drop.values])
        ax.set_yticks(range(len(drop)), names)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.8)
        ax.set(title=f"{t} AP drop per class", xlabel="clean AP - attacked AP")
        ax.grid(axis="x", alpha=0.3)
    return fig


def kind_bars(runs: list[RunData], kind: str) -> Figure | None:
    """AP of a kind's rows (probe, patch) beside clean AP (a bar group per row, a bar per run when comparing)."""
    fig, axes = _panels()
    drew = False
    for ax, t in zip(axes, IOU_TYPES):
        width = 0.8 / len(runs)
        for k, run in enumerate(runs):
            g = run.ap(t)
            rows = pd.concat([g[g.kind == "clean"], g[g.kind == kind]])
            if len(rows) < 2:
                continue
            x = np.arange(len(rows)) + k * width
            ax.bar(x, rows.value, width=width, color=f"C{k}", label=_text(run.name))
            ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, [_text(p) for p in rows.point], rotation=30,
                          ha="right", fontsize=7)
            drew = True
        ax.set(title=f"{t} AP", ylabel="AP", ylim=(0, None))
        ax.grid(axis="y", alpha=0.3)
    if drew and len(runs) > 1:
        axes[-1].legend(fontsize=7)
    return fig if drew else None


def gradnorm_columns(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(grouping columns, norm columns) of a gradnorms.csv (robustseg/gradnorm.py: image_id, checkpoint,
    component, condition, l1, l2, linf); other layouts degrade to whatever numeric columns there are."""
    groups = [c for c in ("checkpoint", "component", "loss", "condition", "split") if c in df.columns]
    norms = [c for c in ("l1", "l2", "linf") if c in df.columns]
    if not norms:
        norms = [c for c in df.select_dtypes("number").columns if c not in ("image_id", "iteration", "step")]
    return groups, norms


def groups_of(df: pd.DataFrame, by: list[str]):
    """[(label, {column: value}, rows)] per combination of the grouping columns."""
    if not by:
        return [("all", {}, df)]
    out = []
    for k, g in df.groupby(by):
        k = k if isinstance(k, tuple) else (k,)
        out.append((" / ".join(map(str, k)), dict(zip(by, k)), g))
    return out


def gradnorm_cdfs(runs: list[RunData]) -> Figure | None:
    """Empirical CDF of each gradient norm: a colour per loss component, a line style per checkpoint,
    condition (clean/adversarial) and run."""
    runs = [r for r in runs if r.gradnorms is not None and not r.gradnorms.empty]
    if not runs:
        return None
    _, norms = gradnorm_columns(runs[0].gradnorms)
    if not norms:
        return None
    fig, axes = _panels(len(norms[:3]))
    colours: dict = {}
    styles: dict = {}
    drew = False
    for ax, norm in zip(axes, norms[:3]):
        lo = np.inf
        for run in runs:
            by, _ = gradnorm_columns(run.gradnorms)
            if norm not in run.gradnorms:
                continue
            for name, keys, g in groups_of(run.gradnorms, by):
                v = np.sort(pd.to_numeric(g[norm], errors="coerce").dropna().to_numpy())
                if not len(v):
                    continue
                lo = min(lo, v[0])
                comp = keys.get("component", keys.get("loss", ""))
                rest = (run.name, *(v_ for k_, v_ in keys.items() if k_ not in ("component", "loss")))
                c = colours.setdefault(comp, f"C{len(colours) % 10}")
                ls = styles.setdefault(rest, ["-", "--", ":", "-."][len(styles) % 4])
                label = (f"{run.name}: " if len(runs) > 1 else "") + name
                ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", color=c, linestyle=ls,
                        label=_text(label))
                drew = True
        ax.set(title=f"input-gradient {norm}", xlabel=norm, ylabel="fraction of images", ylim=(0, 1.02))
        if np.isfinite(lo) and lo > 0:  # norms span orders of magnitude
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    if drew:
        axes[-1].legend(fontsize=6)
    return fig if drew else None


def corruption_heatmap(run: RunData) -> Figure | None:
    """AP per corruption (rows) and severity (columns), boxes and masks, each cell written out."""
    g = run.metrics[(run.metrics.kind == "corruption") & (run.metrics.metric == "AP")]
    if g.empty:
        return None
    names = list(dict.fromkeys(g.corruption))
    sevs = sorted({int(s) for s in g.severity})
    fig, axes = _panels(height=0.28 * len(names) + 1.6)
    for ax, t in zip(axes, IOU_TYPES):
        cells = np.full((len(names), len(sevs)), np.nan)
        for r in g[g.iou_type == t].itertuples():
            cells[names.index(r.corruption), sevs.index(int(r.severity))] = r.value if r.value >= 0 else np.nan
        im = ax.imshow(cells, vmin=0, vmax=max(run.clean_value(t), 1e-6), cmap="viridis", aspect="auto")
        for i in range(len(names)):
            for j in range(len(sevs)):
                if np.isfinite(cells[i, j]):
                    ax.text(j, i, f"{cells[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="w" if cells[i, j] < 0.6 * run.clean_value(t) else "k")
        ax.set_xticks(range(len(sevs)), [str(s) for s in sevs])
        ax.set_yticks(range(len(names)), [_text(n) for n in names], fontsize=7)
        ax.set(title=f"{t} AP (clean {run.clean_value(t):.3f})", xlabel="severity")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def corruption_bars(runs: list[RunData]) -> Figure | None:
    """Mean AP over severities per corruption, a bar per run (comparisons)."""
    fig, axes = _panels(height=3.6)
    drew = False
    for ax, t in zip(axes, IOU_TYPES):
        width = 0.8 / len(runs)
        names: list[str] = []
        for run in runs:
            g = run.ap(t)
            names += [n for n in g[g.kind == "corruption"].corruption if n not in names]
        for k, run in enumerate(runs):
            g = run.ap(t)
            g = g[(g.kind == "corruption") & (g.value >= 0)]
            if g.empty:
                continue
            mean = g.groupby("corruption").value.mean()
            ax.bar(np.arange(len(names)) + k * width, [mean.get(n, np.nan) for n in names], width=width,
                   color=f"C{k}", label=_text(run.name))
            drew = True
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, [_text(n) for n in names], rotation=45, ha="right",
                      fontsize=7)
        ax.set(title=f"{t} AP, mean over severities", ylabel="AP", ylim=(0, None))
        ax.grid(axis="y", alpha=0.3)
    if drew:
        axes[-1].legend(fontsize=7)
    return fig if drew else None
