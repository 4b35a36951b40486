"""The results-directory contract (docs/results.md). Every file goes through an atomic write.

    run.json            what ran: resolved suite, command line, seed, versions, checkpoint and dataset hashes
    metrics.csv         tidy, one row per (point, iou_type, metric): METRIC_COLUMNS below
    per_class.csv       per-category AP per point (bbox and segm)
    per_image.csv       image_id, point, loss_clean, loss_adv, detections (score >= 0.5), realised Linf/L2 norms
    predictions/*.json  COCO results per point (clean.json too), the dataset's category ids
    report.html         self-contained report
"""
from __future__ import annotations

import csv
import json
import platform
import sys
from pathlib import Path
from typing import Iterable

import pandas as pd

from .errors import RobustsegError
from .fileio import atomic_write, read_json, write_json

# one schema for every kind: kind says which part wrote the row (clean, attack, patch, probe, gradnorm,
# corruption, ...); what is not an eps has its own column (a patch's area, a probe's name, a corruption, the
# viewing condition a physical patch was judged under: view = all, none, perspective, blur, ...; named eot
# in earlier runs, when it read like the unrelated --eot N gradient averaging: such files are read with it renamed)
IDENTITY_COLUMNS = ["kind", "attack", "norm", "eps", "eps_label", "steps", "seed", "point", "source", "patch_area",
                    "probe", "corruption", "severity", "view"]
# added after 0.3: absent from older runs' metrics.csv, read as empty (NaN); seed is then 0 for attack rows
LATER_COLUMNS = ("view", "source", "seed")
# ci_lo/ci_hi: 95% bootstrap interval of value over images; drop_ci_lo/hi: of drop_abs, paired with clean
METRIC_COLUMNS = IDENTITY_COLUMNS + ["iou_type", "metric", "value", "ci_lo", "ci_hi", "clean_value", "drop_abs",
                                     "drop_ci_lo", "drop_ci_hi", "drop_rel"]
INTERVAL_COLUMNS = ("ci_lo", "ci_hi", "drop_ci_lo", "drop_ci_hi")


def prepare_out_dir(out: str | Path, force: bool = False, resume: bool = False, check_only: bool = False) -> Path:
    """An empty (or forced, or resumable) output directory; never silently overwrites earlier results."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RobustsegError(f"output {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not (force or resume):
        raise RobustsegError(f"output directory {out} is not empty; pass --force to overwrite it, --resume to "
                             f"continue it, or choose another --out")
    if resume and not (out / "run.json").is_file():
        raise RobustsegError(f"--resume: {out} holds no run to resume")
    if not check_only:
        out.mkdir(parents=True, exist_ok=True)
    return out


def versions() -> dict:
    import torch
    import torchvision

    from .version import __version__
    return {"robustseg": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": sys.version.split()[0], "platform": platform.platform()}


def write_metrics(out: Path, rows: list[dict]) -> pd.DataFrame:
    """Write metrics.csv with drops from the clean row of the same iou_type/metric."""
    df = pd.DataFrame(rows).reindex(columns=METRIC_COLUMNS)
    clean = df[df.kind == "clean"].set_index(["iou_type", "metric"])["value"]
    df["clean_value"] = [clean.get((t, m), float("nan")) for t, m in zip(df.iou_type, df.metric)]
    df["drop_abs"] = df.clean_value - df.value
    df["drop_rel"] = (df.drop_abs / df.clean_value).where(df.clean_value > 0)
    df = df[METRIC_COLUMNS]
    atomic_write(out / "metrics.csv", lambda f: df.to_csv(f, index=False, float_format="%.6g"))
    return df


def read_metrics(out: Path) -> pd.DataFrame:
    """metrics.csv read strictly: every column of METRIC_COLUMNS, or a one-line error naming what is missing."""
    path = Path(out) / "metrics.csv"
    try:
        df = pd.read_csv(path, dtype={"point": str, "attack": str, "eps_label": str, "kind": str, "probe": str,
                                      "corruption": str, "source": str, "eot": str,
                                      "view": str})
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise RobustsegError(f"{path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    for c in INTERVAL_COLUMNS:  # written before the bootstrap intervals (0.3): no intervals, the rest is sound
        if c not in df.columns:
            df[c] = float("nan")
    if "eot" in df.columns and "view" not in df.columns:  # the physical viewing condition's old name
        df = df.rename(columns={"eot": "view"})
    for c in LATER_COLUMNS:
        if c not in df.columns:
            df[c] = float("nan")
    if df.seed.isna().all() and "kind" in df.columns:  # before --seeds: every attack point was seed 0
        df.loc[df.kind == "attack", "seed"] = 0.0
    df = df[[c for c in METRIC_COLUMNS if c in df.columns] + [c for c in df.columns if c not in METRIC_COLUMNS]]
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        hint = " (written by robustseg before 0.2: re-run it, or add kind=clean/attack by hand)" \
            if "kind" in missing else ""
        raise RobustsegError(f"{path}: missing column(s) {', '.join(missing)}{hint}")
    return df


def write_csv(path: Path, rows: Iterable[dict], columns: list[str] | None = None) -> None:
    rows = list(rows)
    cols = columns or (list(rows[0]) if rows else [])

    def w(f):
        wr = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        wr.writeheader()
        wr.writerows(rows)
    atomic_write(path, w)


def write_run_json(out: Path, info: dict) -> None:
    from .sanity import _finite
    write_json(out / "run.json", _finite(info))  # JSON has no NaN: null, so jq and browsers can read it


def check_resumable(out: Path, fingerprint: dict, allow_complete: bool = False) -> dict:
    """The interrupted run's run.json, after checking it can be continued with these options (``fingerprint``:
    everything that changes the numbers). Shared by attack, probe, patch and compare runs."""
    old = read_json(out / "run.json", "--resume: run.json")
    if not isinstance(old, dict):
        raise RobustsegError(f"--resume: {out / 'run.json'} is not a run's run.json")
    if old.get("status") == "complete" and not allow_complete:
        raise RobustsegError(f"--resume: the run in {out} is already complete")
    fingerprint = json.loads(json.dumps(fingerprint))  # as run.json holds it (tuples are lists there)
    differs = [k for k, v in fingerprint.items() if old.get("fingerprint", {}).get(k) != v]
    if differs:
        raise RobustsegError(f"--resume: {out} was run with different {', '.join(differs)}; "
                             f"resume with the same options or start a new --out")
    return old


def trim_to_done(work: Path) -> None:
    """Drop the rows of a half-written batch from a work folder's *.jsonl files: a batch's rows are appended
    before its image ids go into done.jsonl, so rows of images not in done.jsonl are redone on resume."""
    done = {int(r["image_id"]) for r in read_jsonl(work / "done.jsonl")}
    for f in work.glob("*.jsonl"):
        if f.name not in ("done.jsonl", "failed.jsonl"):
            keep = [r for r in read_jsonl(f) if int(r["image_id"]) in done]
            atomic_write(f, lambda fh: fh.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in keep)))


def read_run_json(out: Path) -> dict:
    """The run's run.json, or {} where there is none (a one-line error where it is unreadable)."""
    path = Path(out) / "run.json"
    if not path.is_file():
        return {}
    info = read_json(path, "run.json")
    return info if isinstance(info, dict) else {}


def model_fingerprint(lm, device) -> dict:
    """What makes a model predict what it predicts: the file, the input sizes and the kind of device."""
    import torch
    return {"model_sha256": lm.sha256, "arch_cfg": lm.arch_cfg, "device_type": torch.device(device).type}


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a work file; a last line cut short by a killed process is dropped (its batch is redone)."""
    if not path.exists():
        return []
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1 or line.endswith("\n"):
                raise RobustsegError(f"{path}: line {i + 1} is not valid JSON") from None
    return rows


def append_jsonl(path: Path, items: Iterable[dict]) -> None:
    with open(path, "a") as f:
        for it in items:
            f.write(json.dumps(it, separators=(",", ":")) + "\n")
