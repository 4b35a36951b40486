"""Before/after comparison of checkpoints (e.g. a model and its adversarially fine-tuned version).

For each checkpoint: one run of two kinds on the engine, the attack sweep and the gradient norms, on the same
images, into ``OUT/<name>/``; then ``OUT/compare.csv`` side by side, built from those files alone, and the
comparison HTML report of the run directories in ``OUT/report/``.

compare.csv: one row per checkpoint, point (attack, or corruption with --corruptions; column kind) and iou_type: clean_ap, ap, ap_drop (clean - attacked),
rel_drop (ap_drop / clean_ap), clean_ap_change (vs the first checkpoint), ap_drop_ratio (this checkpoint's
ap_drop / the first's: < 1 means a smaller drop), and for each loss component the median input-gradient L1 and
L2 norm on clean images with its ratio to the first checkpoint's (< 1: smaller gradients).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .errors import RobustsegError
from .gradnorm import COMPONENTS
from .models.checkpoint import load_model
from .results import prepare_out_dir, read_metrics, read_run_json, write_csv
from .suites import Suite, load_suite

SHIPPED_NAME = "shipped"      # on the command line: the shipped model
COMPARE_NORMS = ("l1", "l2")  # duals of the Linf and L2 attack budgets


def run_names(checkpoints: list[str | None]) -> list[str]:
    """Directory names of the checkpoints' runs: file stems, made unique."""
    stems = [SHIPPED_NAME if c in (None, SHIPPED_NAME) else Path(c).stem for c in checkpoints]
    return [s if stems.count(s) == 1 else f"{s}-{i + 1}" for i, s in enumerate(stems)]


def _ratio(a: float, b: float) -> float:
    return b / a if a and math.isfinite(a) and math.isfinite(b) else math.nan


def compare_rows(run_dirs: list[Path], names: list[str]) -> list[dict]:
    """compare.csv rows from each run's metrics.csv and gradnorms_summary.csv; the first run is the reference."""
    runs = []
    for d in run_dirs:
        m = read_metrics(d)
        g = pd.read_csv(d / "gradnorms_summary.csv")
        g = g[g.condition == "clean"].set_index("component")
        runs.append((m[m.metric == "AP"], {f"grad_{n}_median_{c}": float(g.loc[c, f"{n}_median"])
                                           for n in COMPARE_NORMS for c in COMPONENTS}))
    ref_ap, ref_grad = runs[0]
    rows = []
    for name, d, (ap, grad) in zip(names, run_dirs, runs):
        for r in ap[ap.attack != "clean"].itertuples():
            ref = ref_ap[(ref_ap.point == r.point) & (ref_ap.iou_type == r.iou_type)]
            row = {"checkpoint": name, "run_dir": str(d), "kind": r.kind, "point": r.point, "attack": r.attack,
                   "norm": r.norm,
                   "eps": r.eps_label, "steps": int(r.steps), "iou_type": r.iou_type,
                   "clean_ap": r.clean_value, "ap": r.value, "ap_drop": r.drop_abs, "rel_drop": r.drop_rel,
                   "clean_ap_change": r.clean_value - ref.clean_value.iloc[0] if len(ref) else math.nan,
                   "ap_drop_ratio": _ratio(ref.drop_abs.iloc[0], r.drop_abs) if len(ref) else math.nan}
            for k, v in grad.items():
                row[k] = v
                row[k.replace("_median_", "_ratio_")] = _ratio(ref_grad[k], v)
            rows.append(row)
    return rows


def compare_checkpoints(checkpoints: list[str | None], out: str | Path, *, suite=None, data=None, images=None,
                        force: bool = False, resume: bool = False, model_overrides: dict | None = None,
                        corruptions=None, severities="1-5", **options) -> Path:
    """Run the attack sweep and the gradient norms (two kinds, one run) for every checkpoint into ``out/<name>/``;
    write ``out/compare.csv`` and the comparison report in ``out/report/``. ``corruptions`` (benchmark, all or
    names; with ``severities``) adds the natural corruptions as a third kind of the same runs.

    ``resume=True`` continues an interrupted comparison: a checkpoint whose run is complete (with the same
    fingerprint) is kept as it is, an interrupted one continues from its own work files."""
    from .kinds.attack import AttackSweep
    from .kinds.corruption import Corruptions
    from .kinds.gradnorm import GradientNorms
    from .report.compare import write_comparison
    from .run import RunOptions, execute
    if len(checkpoints) < 2:
        raise RobustsegError("compare needs at least two checkpoints (the first is the reference)")
    names = run_names(checkpoints)
    out = Path(out)
    if resume:
        if not any((out / n / "run.json").is_file() for n in names):
            raise RobustsegError(f"--resume: {out} holds no comparison of these checkpoints to resume")
    else:
        out = prepare_out_dir(out, force=force)
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    from .training.distributed import held
    with held(options.get("device", "cpu")):  # one process group for every checkpoint's run
        for ckpt, name in zip(checkpoints, names):
            run_dir = out / name
            lm = load_model(None if ckpt in (None, SHIPPED_NAME) else ckpt, device=options.get("device", "cpu"),
                            **(model_overrides or {}))
            state = read_run_json(run_dir).get("status") if resume else None
            kinds = [AttackSweep(suite), GradientNorms(name)]
            if corruptions:
                kinds.append(Corruptions(corruptions, severities))
            execute(kinds, lm, data, images, out=run_dir,
                    opts=RunOptions(**options), force=not state, resume=bool(state), keep_complete=True)
    dirs = [out / n for n in names]
    write_csv(out / "compare.csv", compare_rows(dirs, names))
    write_comparison(dirs, out / "report", force=True)
    return out / "compare.csv"


def headline(compare_csv: str | Path, point_prefix: str = "pgd-linf-eps0.015686") -> str:
    """A short text table for the terminal: bbox AP drop at one point and the median total-loss L1 norm."""
    df = pd.read_csv(compare_csv)
    sel = df[(df.iou_type == "bbox") & df.point.str.startswith(point_prefix)]
    if sel.empty:
        sel = df[(df.iou_type == "bbox") & (df.kind == "attack")].drop_duplicates("checkpoint", keep="last")
    lines = [f"{'checkpoint':24} {'point':28} {'clean AP':>9} {'AP':>7} {'drop':>7} {'drop x':>7} {'|g|1':>9} "
             f"{'|g|1 x':>7}"]
    for r in sel.drop_duplicates("checkpoint", keep="first").itertuples():
        lines.append(f"{r.checkpoint:24} {r.point:28} {r.clean_ap:9.3f} {r.ap:7.3f} {r.ap_drop:7.3f} "
                     f"{r.ap_drop_ratio:7.2f} {r.grad_l1_median_total:9.3g} {r.grad_l1_ratio_total:7.2f}")
    return "\n".join(lines)
