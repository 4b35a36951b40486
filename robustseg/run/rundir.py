"""The run directory: opened with --force or --resume, a work log per pass and rank, run.json, finish.

    out/run.json                    what ran (status running -> complete), written at open and at finish
    out/work/<pass>/rank<r>/        per torchrun rank: done.jsonl, failed.jsonl and one <name>.jsonl per
                                    stream (a point's predictions, a kind's per-image rows); removed at finish

A batch's rows are appended before its image ids go into done.jsonl, so a kill between the two leaves rows
that ``--resume`` drops (``trim_to_done``) and redoes.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..errors import RobustsegError
from ..results import (append_jsonl, check_resumable, prepare_out_dir, read_jsonl, read_run_json, trim_to_done,
                       write_run_json)

# everything a run of any kind writes: removed by --force before a new run, so nothing stale shows in its report
RUN_OUTPUTS = ("work", "predictions", "examples", "plots", "patches", "cue_conflict", "metrics.csv",
               "per_class.csv", "per_image.csv", "detection_stats.csv", "object_accuracy.csv", "sanity.json",
               "summary.csv", "mask_quality.csv", "gradnorms.csv", "gradnorms_summary.csv", "probes.csv",
               "shape_bias.json", "shape_bias.csv", "decisions.csv", "patches.csv", "patch_training.csv",
               "corruptions.csv", "corruption_per_class.csv", "object_outcomes.csv", "report.html")


def refuse_early(out, force: bool, resume: bool) -> None:
    """Before loading anything: refuse a non-empty --out (results are never overwritten silently)."""
    if resume and out is None:
        raise RobustsegError("--resume needs the --out directory of the interrupted run")
    if out is not None:
        prepare_out_dir(out, force=force, resume=resume, check_only=True)


class RunDir:
    def __init__(self, path: Path, rank: int = 0):
        self.path, self.rank = Path(path), rank

    def open(self, info: dict, fingerprint: dict, *, force: bool, resume: bool) -> dict:
        """Main rank only: make the directory ready and write run.json (``info`` gains the fingerprint). On
        resume the interrupted run must have the same fingerprint; it keeps its command and start time."""
        prepare_out_dir(self.path, force=force, resume=resume)
        info = {**info, "fingerprint": fingerprint}
        if resume:
            old = check_resumable(self.path, fingerprint)
            for d in (self.path / "work").glob("*/rank*"):
                trim_to_done(d)
            info.update(command=old.get("command", info["command"]), started=old.get("started", info["started"]),
                        resumed=[*old.get("resumed", []), time.strftime("%Y-%m-%dT%H:%M:%S%z")])
        else:
            for name in RUN_OUTPUTS:
                p = self.path / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        write_run_json(self.path, info)
        return info

    def work(self, pass_name: str) -> Path:
        d = self.path / "work" / pass_name / f"rank{self.rank}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def append(self, pass_name: str, stream: str, rows: list[dict]) -> None:
        append_jsonl(self.work(pass_name) / f"{stream}.jsonl", rows)

    def read_all(self, pass_name: str, stream: str) -> list[dict]:
        """One stream merged over every rank's folder, in the order the ranks wrote it."""
        return [r for d in sorted((self.path / "work" / pass_name).glob("rank*"))
                for r in read_jsonl(d / f"{stream}.jsonl")]

    def merged(self, pass_name: str, stream: str, order: dict[int, int]) -> list[dict]:
        """In dataset order, whatever rank or resume wrote the rows (stable within an image)."""
        return sorted(self.read_all(pass_name, stream), key=lambda r: order[int(r["image_id"])])

    def finished_ids(self, pass_name: str) -> set[int]:
        return {int(r["image_id"]) for s in ("done", "failed") for r in self.read_all(pass_name, s)}

    def info(self) -> dict:
        return read_run_json(self.path)

    def finish(self, info: dict, started: float) -> dict:
        shutil.rmtree(self.path / "work", ignore_errors=True)
        info = {**info, "status": "complete", "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "wall_seconds": round(time.time() - started, 1)}
        write_run_json(self.path, info)
        return info
