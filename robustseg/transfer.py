"""``robustseg transfer --source A [B ...] --target C [D ...]``: a matrix of AP under attacks crafted on each source
and evaluated on each target (the diagonal, a target attacked through its own gradients, is white-box).

For each target: one run of the transfer kind on the engine (kinds/transfer.py) into ``OUT/<target>/``, the
target always among its own sources; then ``OUT/transfer.csv`` built from those runs' files alone, and the
comparison report of the runs in ``OUT/report/``.

transfer.csv: one row per (target, source, attack point, iou_type): ``whitebox`` (the source is the target),
``clean_ap`` (the target's), ``ap`` with its 95% interval, ``ap_drop`` with its paired interval, and
``whitebox_ap`` (the same point crafted on the target) with ``transfer_verdict`` (warn: the transfer attack beat
the white-box one, see kinds/transfer.py).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from .compare import SHIPPED_NAME, run_names
from .errors import RobustsegError
from .models.checkpoint import LoadedModel, load_model
from .results import prepare_out_dir, read_metrics, read_run_json, write_csv
from .suites import Suite, load_suite

COLUMNS = ["target", "source", "whitebox", "point", "attack", "norm", "eps", "steps", "iou_type", "clean_ap", "ap",
           "ci_lo", "ci_hi", "ap_drop", "drop_ci_lo", "drop_ci_hi", "whitebox_ap", "transfer_verdict"]


def _load(ckpt, options: dict, overrides: dict):
    return load_model(None if ckpt in (None, SHIPPED_NAME) else ckpt, device=options.get("device", "cpu"),
                      **overrides)


def _keyed(models: list) -> tuple[list[str], dict[str, LoadedModel]]:
    """Each model as a key: a checkpoint path (or the shipped model) as itself, a model object (a defence from
    ``rs.as_model``, any LoadedModel) by its identity, so one object given as source and target is one model."""
    keys, objects = [], {}
    for m in models:
        if isinstance(m, LoadedModel):
            key = f"<model {id(m)}>"
            objects[key] = m
        else:
            key = SHIPPED_NAME if m is None else str(m)
        keys.append(key)
    return keys, objects


def transfer_rows(run_dirs: list[Path], targets: list[str]) -> list[dict]:
    """transfer.csv from each target run's metrics.csv and run.json."""
    rows = []
    for target, d in zip(targets, run_dirs):
        m = read_metrics(d)
        verdicts = {(c["point"], c["source"]): c["verdict"]
                    for c in read_run_json(d).get("transfer_checks", {}).get("checks", [])}
        ap = m[(m.kind == "transfer") & (m.metric == "AP") & m.source.notna() & (m.source != "")]
        for r in ap.itertuples():
            point = r.point.split("--", 1)[1]
            white = ap[(ap.source == target) & (ap.iou_type == r.iou_type) & ap.point.str.endswith("--" + point)]
            rows.append({"target": target, "source": r.source, "whitebox": r.source == target, "point": point,
                         "attack": r.attack, "norm": r.norm, "eps": r.eps_label, "steps": int(r.steps),
                         "iou_type": r.iou_type, "clean_ap": r.clean_value, "ap": r.value, "ci_lo": r.ci_lo,
                         "ci_hi": r.ci_hi, "ap_drop": r.drop_abs, "drop_ci_lo": r.drop_ci_lo,
                         "drop_ci_hi": r.drop_ci_hi,
                         "whitebox_ap": float(white.value.iloc[0]) if len(white) else math.nan,
                         "transfer_verdict": verdicts.get((point, r.source), "")})
    return rows


def run_transfer(sources: list, targets: list, out: str | Path, *, suite=None, data=None,
                 images=None, force: bool = False, resume: bool = False, model_overrides: dict | None = None,
                 **options) -> Path | None:
    """Attacks of ``suite`` (default quick) crafted on every source, each evaluated on every target; returns the
    path of transfer.csv (None on torchrun ranks other than 0). Sources and targets are checkpoint paths (None: the
    shipped model) or loaded models, defences from ``rs.as_model`` included (a run directory is named after the
    model's ``path``). ``resume=True`` keeps complete target runs and continues an interrupted one."""
    from .kinds.transfer import Transfer
    from .report.compare import write_comparison
    from .run import RunOptions, execute
    if not sources or not targets:
        raise RobustsegError("transfer needs at least one --source and one --target")
    keys, objects = _keyed([*targets, *sources])
    targets, sources = keys[:len(targets)], keys[len(targets):]
    unique = list(dict.fromkeys([*targets, *sources]))
    names = dict(zip(unique, run_names([objects[k].path or "model" if k in objects else k for k in unique])))
    out, main = Path(out), int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 writes the matrix
    if resume:
        if not any((out / names[t] / "run.json").is_file() for t in targets):
            raise RobustsegError(f"--resume: {out} holds no transfer run of these targets to resume")
    elif main:
        out = prepare_out_dir(out, force=force)
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    overrides = model_overrides or {}
    loaded = {c: objects.get(c) or _load(c, options, overrides) for c in unique}  # each file read once
    from .training.distributed import held
    with held(options.get("device", "cpu")):  # one process group for every target run
        for target in dict.fromkeys(targets):
            run_dir = out / names[target]
            state = read_run_json(run_dir).get("status") if resume else None
            # the target itself is added by the kind (check), first: the white-box row
            kind = Transfer(suite, [(names[s], loaded[s]) for s in dict.fromkeys(sources) if s != target],
                            names[target])
            execute([kind], loaded[target], data, images, out=run_dir, opts=RunOptions(**options), force=not state,
                    resume=bool(state), keep_complete=True, label="transfer")
    if not main:
        return None
    dirs = [out / names[t] for t in dict.fromkeys(targets)]
    write_csv(out / "transfer.csv", transfer_rows(dirs, [names[t] for t in dict.fromkeys(targets)]), COLUMNS)
    write_comparison(dirs, out / "report", force=True)
    return out / "transfer.csv"


def matrix_text(transfer_csv: str | Path) -> str:
    """bbox AP per (source, target) at each attack point, for the terminal; * marks a transfer that beat the
    white-box attack."""
    import pandas as pd
    df = pd.read_csv(transfer_csv)
    df = df[df.iou_type == "bbox"]
    lines = []
    for point, g in df.groupby("point", sort=False):
        targets = list(dict.fromkeys(g.target))
        lines.append(f"bbox AP at {point} (rows: crafted on; columns: evaluated on)")
        lines.append(f"{'':24}" + "".join(f"{t:>14}" for t in targets))
        for src, h in g.groupby("source", sort=False):
            cells = {r.target: f"{r.ap:.3f}{'*' if r.transfer_verdict == 'warn' else ''}" for r in h.itertuples()}
            lines.append(f"{src:24}" + "".join(f"{cells.get(t, '-'):>14}" for t in targets))
    if (df.transfer_verdict == "warn").any():
        lines.append("* a transfer attack beat the white-box one on that target: its gradients may be masked")
    return "\n".join(lines)
