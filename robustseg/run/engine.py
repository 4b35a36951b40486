"""The one run engine: every kind of run (attack sweep, patches, probes, gradient norms, ...) goes through
``execute``. image -> kind's work (perturbation, loss, gradient, step) -> predictions -> COCO eval -> tidy rows
-> report, with the same context checks, run directory, sharding, resume, evaluation and report policy for all.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..errors import RobustsegError
from ..results import check_resumable, read_metrics
from ..eval.coco_eval import predict, to_coco_results
from .context import RunContext, RunOptions, open_context
from .kind import Batch, BatchOut, Kind, Pass, Source
from .progress import Progress
from .rundir import RunDir, refuse_early
from .scoring import score_and_write
from .stream import PassRunner, share

MAIN_PASS = "images"


@dataclass
class RunResult:
    out: Path
    metrics: object                              # pandas DataFrame of metrics.csv
    summaries: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)    # kinds' own results (e.g. the probes' shape bias)

    def summary(self) -> str:
        return "\n".join(self.summaries)

    def __getattr__(self, name):  # result.shape_bias, result.probes: what a kind returned, by name
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(name)


def _barrier(ctx: RunContext) -> None:
    if ctx.dist.enabled:
        import torch.distributed as td
        td.barrier()


def default_out(ctx: RunContext, label: str) -> Path:
    return Path("reports") / f"{Path(ctx.lm.path or 'model').stem}-{label}-{time.strftime('%Y%m%d-%H%M%S')}"


class _MainWork:
    """The main pass's batch: clean predictions once, then every kind's work on the same images."""

    def __init__(self, ctx: RunContext, kinds: list[Kind]):
        self.ctx, self.kinds = ctx, kinds

    def __call__(self, batch: Batch) -> BatchOut:
        batch.progress(0, "clean")
        clean = predict(self.ctx.lm.model, batch.images)
        batch.clean = clean
        out = BatchOut({"clean": [r for o, iid in zip(clean, batch.ids)
                                  for r in to_coco_results(o, iid, self.ctx.lm.category_ids)]})
        batch.progress(len(batch.ids))
        for kind in self.kinds:
            out.merge(kind.work(self.ctx, batch))
        return out


def _main_source(ctx: RunContext) -> Source:
    return Source(ctx.ds.image_ids, ctx.ds.load_image, ctx.ds.target, ctx.ds.coco)


def _bar(ctx: RunContext, total: float, desc: str) -> Progress:
    return Progress(total, desc, enabled=ctx.opts.progress and ctx.dist.main)


def _run_passes(ctx: RunContext, kinds: list[Kind], run_dir: RunDir) -> dict[str, Pass]:
    """The main pass over the dataset, then each kind's extra passes; every rank streams its share."""
    cost = 1.0 + sum(k.cost_per_image(ctx) for k in kinds)
    main = Pass(MAIN_PASS, _main_source(ctx), _MainWork(ctx, kinds), cost, dict(ctx.problems))
    bar = _bar(ctx, share(len(ctx.ds), ctx) * cost, "+".join(k.name for k in kinds))
    PassRunner(main.name, main.source, main.work, run_dir, ctx, cost, bar).run(main.pre_failed)
    bar.close()
    _barrier(ctx)
    passes = {MAIN_PASS: main}
    failed = {int(r["image_id"]): r["error"] for r in run_dir.read_all(MAIN_PASS, "failed")}
    for kind in kinds:
        extras = kind.extra_passes(ctx, run_dir, failed) if ctx.dist.main else []
        _barrier(ctx)  # the main rank builds what a pass needs on disk first; the others then read it
        if not ctx.dist.main:
            extras = kind.extra_passes(ctx, run_dir, failed)
        for extra in extras:
            bar = _bar(ctx, share(len(extra.source.image_ids), ctx) * extra.cost_per_image, extra.name)
            PassRunner(extra.name, extra.source, extra.work, run_dir, ctx, extra.cost_per_image, bar).run(
                extra.pre_failed, log_pre_failed=False)
            bar.close()
            _barrier(ctx)
            passes[extra.name] = extra
    return passes


def _write_report(out: Path, info: dict) -> dict:
    """One policy for every kind: the results stand without their HTML view; a failed report is a warning,
    recorded in run.json, and ``robustseg report`` can rebuild it."""
    from ..report.html import write_report
    try:
        write_report(out)
        return {}
    except Exception as e:  # noqa: BLE001 - any failure of the view, never of the results
        msg = f"{type(e).__name__}: {e}"
        tqdm.write(f"warning: report.html not written ({msg}); run 'robustseg report {out}'", file=sys.stderr)
        return {"report_error": msg}


def execute(kinds: list[Kind], model=None, data=None, images=None, *, out=None, opts: RunOptions | None = None,
            force: bool = False, resume: bool = False, label: str | None = None,
            keep_complete: bool = False) -> RunResult | None:
    """Run ``kinds`` on one model and dataset into one results directory (docs/results.md). Under torchrun the
    images are sharded across ranks; rank 0 merges, scores and reports, the others return None.
    ``keep_complete`` (with ``resume``): a complete run with the same fingerprint is kept, not redone."""
    opts = opts or RunOptions()
    refuse_early(out, force, resume)
    main = kinds[0]
    # a caller that runs several runs in one torchrun job (transfer, compare) holds the process group: re-joining
    # it between runs races, a rank that finished early meets the other still in the last run's scoring
    owns_group = not _group_initialised()
    ctx = open_context(model, data, images, opts, default_limit=main.default_limit,
                       needs_annotations=any(k.needs_annotations for k in kinds), what=main.name)
    if ctx.dist.enabled and out is None:
        raise RobustsegError("under torchrun, give --out so that every process writes to the same run")
    for k in kinds:
        k.check(ctx)
    run_dir = RunDir(Path(out) if out is not None else default_out(ctx, label or main.name), ctx.dist.rank)
    fingerprint = {**ctx.fingerprint(), **{f"{k.name}": k.fingerprint(ctx) for k in kinds}}
    info = {**ctx.info(), "kinds": [k.name for k in kinds], **{k.name: k.describe(ctx) for k in kinds}}
    try:
        if resume and keep_complete and run_dir.info().get("status") == "complete":
            check_resumable(run_dir.path, fingerprint, allow_complete=True)
            return RunResult(run_dir.path, read_metrics(run_dir.path))
        if ctx.dist.main:
            info = run_dir.open(info, fingerprint, force=force, resume=resume)
            for k in kinds:
                k.prepare(ctx, run_dir)
        _barrier(ctx)
        for k in kinds:
            k.ready(ctx, run_dir)
        passes = _run_passes(ctx, kinds, run_dir)
        if not ctx.dist.main:
            return None
        return _finish(ctx, kinds, run_dir, passes, info)
    finally:
        if owns_group:
            from ..training.distributed import teardown
            teardown(ctx.dist)


def _group_initialised() -> bool:
    import torch.distributed as td
    return td.is_available() and td.is_initialized()


def _finish(ctx: RunContext, kinds: list[Kind], run_dir: RunDir, passes: dict[str, Pass], info: dict) -> RunResult:
    points = [p for k in kinds for p in k.points(ctx)]
    scored = score_and_write(ctx, run_dir, passes, points, kinds)
    result_info: dict = {}
    for k in kinds:
        result_info.update(k.finish(ctx, run_dir, scored))
    info = run_dir.finish({**info, **scored.run_info(), **result_info}, ctx.started)
    report = _write_report(run_dir.path, info)
    if report:
        info = run_dir.finish({**info, **report}, ctx.started)
    summaries = [s for k in kinds if (s := getattr(k, "summary", lambda *_: None)(ctx, scored))]
    return RunResult(run_dir.path, scored.metrics, summaries, scored.extra)
