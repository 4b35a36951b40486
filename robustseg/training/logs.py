"""The run's CSV logs beside its checkpoint: one row per iteration (``model.log.csv``) and one per periodic
evaluation (``model.eval.csv``).

The iteration log is appended to, not rewritten through ``results.write_csv`` each time: it grows by one stretch
of rows per checkpoint, and rewriting the whole file every time would cost time quadratic in the run's length.
Whole-file rewrites (new columns, or trimming on --resume) do go through ``write_csv``, atomically.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from ..results import write_csv


def log_paths(out: Path) -> tuple[Path, Path]:
    """(per-iteration log, periodic evaluation log) of a run writing checkpoint ``out``."""
    return out.with_suffix(".log.csv"), out.with_suffix(".eval.csv")


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a log; a last line without its line end was cut short by a kill and is dropped."""
    if not path.exists():
        return [], []
    with open(path, newline="") as f:
        text = f.read()
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    r = csv.DictReader(io.StringIO(text, newline=""))
    return list(r.fieldnames or []), list(r)


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append to a log; a row with new columns (e.g. a run resumed by a newer version) rewrites the header."""
    if not rows:
        return
    fields, old = read_rows(path)
    new_fields = list(dict.fromkeys(fields + [k for r in rows for k in r]))
    if fields and new_fields == fields:
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=fields, extrasaction="ignore").writerows(rows)
    else:
        write_csv(path, old + rows, new_fields)


def keep_rows(path: Path, keep: Callable[[int], bool]) -> None:
    """Rewrite a log with only the rows whose iteration ``keep`` accepts (what a resumed run keeps)."""
    fields, rows = read_rows(path)
    if fields:
        write_csv(path, [r for r in rows if keep(int(r["iteration"]))], fields)
