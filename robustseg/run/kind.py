"""What a kind of run supplies to the engine (docs/architecture.md): its plan, the work for one batch, and its
own files at the end. Everything else (context, run directory, sharding, resume, evaluation, report) is the
engine's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(frozen=True)
class Point:
    """One evaluated condition: its predictions are streamed to ``<key>.jsonl`` and scored once at the end.
    ``columns`` fill metrics.csv's identity columns (attack, norm, eps, eps_label, steps, patch_area, probe,
    corruption, severity); ``pass_name`` is the pass whose images and ground truth it is scored on."""
    key: str
    kind: str
    columns: dict = field(default_factory=dict)
    pass_name: str = "images"


@dataclass
class Batch:
    """One batch of a pass, as a kind's ``work`` sees it."""
    images: list[torch.Tensor]
    targets: list[dict]
    ids: list[int]
    key: int                        # the batch's first image id: seeds derive from it, never from its position
    clean: list[dict] | None        # the model's clean outputs (main pass only)
    progress: Callable[..., None]   # progress(units, point=None): units done; point: what runs now (the bar)


@dataclass
class BatchOut:
    """Per point, the COCO results of this batch's images; per stream, rows keyed by image_id."""
    predictions: dict[str, list[dict]] = field(default_factory=dict)
    rows: dict[str, list[dict]] = field(default_factory=dict)

    def merge(self, other: "BatchOut") -> "BatchOut":
        for k, v in other.predictions.items():
            self.predictions.setdefault(k, []).extend(v)
        for k, v in other.rows.items():
            self.rows.setdefault(k, []).extend(v)
        return self


@dataclass
class Source:
    """Images a pass runs over: ids in order, loaders by position, the ground truth they are scored on."""
    image_ids: list[int]
    load_image: Callable[[int], torch.Tensor]
    target: Callable[[int], dict]
    gt: object                      # pycocotools COCO


@dataclass
class Pass:
    """A pass over a source other than the run's dataset (e.g. the probes' cue-conflict set)."""
    name: str
    source: Source
    work: Callable[[Batch], BatchOut]
    cost_per_image: float
    pre_failed: dict[int, str] = field(default_factory=dict)  # ids known bad before the pass (logged, skipped)


class Kind:
    """Override what the kind needs; the defaults do nothing."""
    name = "kind"
    default_limit: int | None = None     # images of the built-in synthetic split when no dataset is given
    needs_annotations = False

    def check(self, ctx) -> None:
        """Every rank, right after the context is open: refuse what cannot run (one-line RobustsegError)."""

    def fingerprint(self, ctx) -> dict:
        """The kind's plan, as it changes the numbers (merged into the run's fingerprint)."""
        return {}

    def describe(self, ctx) -> dict:
        """run.json fields of this kind."""
        return {}

    def points(self, ctx) -> list[Point]:
        return []

    def cost_per_image(self, ctx) -> float:
        """Work per image in prediction-equivalents (a gradient evaluation counts GRADIENT_COST)."""
        return 0.0

    def prepare(self, ctx, run_dir) -> None:
        """Main rank, before any pass (e.g. train the universal patch); other ranks wait, then ``ready``."""

    def ready(self, ctx, run_dir) -> None:
        """Every rank, after ``prepare``: pick up what it made."""

    def work(self, ctx, batch: Batch) -> BatchOut:
        return BatchOut()

    def extra_passes(self, ctx, run_dir, failed: dict[int, str]) -> list[Pass]:
        """Passes after the main one (built on every rank; ``failed``: the main pass's unusable images)."""
        return []

    def amend(self, ctx, run_dir, scored) -> None:
        """Main rank, after scoring, before metrics.csv: add the kind's own metric rows (``scored.rows``) and
        identity columns known only now (``scored.columns``, e.g. a patch's realised area)."""

    def finish(self, ctx, run_dir, scored) -> dict:
        """Main rank, after every point is scored: write the kind's own files; return run.json fields."""
        return {}
