"""The run context: what every kind of run is given, checked once for all of them.

Model, dataset (the built-in synthetic split by default, with the kind's default limit), device and torchrun
rank, batching, seeds, on-error policy, the images found unusable up front, and the run's base fingerprint
(everything that changes its numbers) and base run.json fields.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..data.coco import CocoDataset
from ..data.labels import load_category_map, resolve_label_space
from ..errors import RobustsegError
from ..fileio import sha256_file
from ..models.checkpoint import LoadedModel, load_model
from ..results import model_fingerprint, versions
from ..training.distributed import Dist, setup

ON_ERROR = ("skip", "fail")
COUNT_SCORE = 0.5  # detections at or above this score are counted (per_image.csv, mask quality)
BOOTSTRAP = 200    # default resamples: percentile-interval ends move by ~0.005 AP between seeds at 32 images


@dataclass
class RunOptions:
    """The options every kind shares (the CLI's --limit, --batch-size, --seed, --on-error, ...)."""
    limit: int | None = None
    batch_size: int = 4
    device: str = "cpu"
    seed: int = 0
    on_error: str = "skip"
    amp: str | None = None
    workers: int = 0
    progress: bool = True
    command: str | None = None
    category_map: str | Path | None = None
    bootstrap: int = BOOTSTRAP  # resamples of the images behind every AP's interval (0: no intervals)

    def check(self) -> None:
        if self.on_error not in ON_ERROR:
            raise RobustsegError(f"on_error must be skip or fail, not {self.on_error!r}")
        for name in ("batch_size", "workers", "bootstrap"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if name == "batch_size" else 0):
                raise RobustsegError(f"{name.replace('_', '-')} must be an integer >= "
                                     f"{1 if name == 'batch_size' else 0}, got {v!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise RobustsegError(f"limit must be a positive number of images, got {self.limit!r}")


@dataclass
class RunContext:
    lm: LoadedModel
    ds: CocoDataset
    data: Path
    images: Path
    opts: RunOptions
    dist: Dist
    device: torch.device
    problems: dict[int, str] = field(default_factory=dict)  # image id -> why it cannot be used
    category_map: dict | None = None
    started: float = field(default_factory=time.time)

    @property
    def seed(self) -> int:
        return self.opts.seed

    def target(self, i: int) -> dict:
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self.ds.target(i).items()}

    def load(self, i: int) -> tuple[torch.Tensor, dict]:
        return self.ds.load_image(i).to(self.device), self.target(i)

    def fingerprint(self) -> dict:
        """What every kind's numbers depend on; each kind adds its own plan."""
        o = self.opts
        return {"seed": o.seed, "batch_size": o.batch_size, **model_fingerprint(self.lm, self.device),
                "amp": o.amp, "dataset_sha256": sha256_file(self.data), "image_ids": self.ds.image_ids,
                "category_map": self.category_map, "score_threshold_for_counts": COUNT_SCORE}

    def info(self) -> dict:
        """run.json fields every kind writes."""
        o = self.opts
        return {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": o.command or "robustseg " + " ".join(sys.argv[1:]), "seed": o.seed,
                "batch_size": o.batch_size, "device": str(self.device), "amp": o.amp, "workers": o.workers,
                "limit": o.limit, "on_error": o.on_error, "world_size": self.dist.world,
                "versions": versions(),
                "model": {k: v for k, v in self.lm.describe().items() if k != "meta"} | {"meta": self.lm.meta},
                "dataset": {"annotations": str(self.data.resolve()), "images": str(self.images.resolve()),
                            "sha256": sha256_file(self.data), "num_images": len(self.ds),
                            "skipped_annotations": self.ds.skipped},
                "category_map": self.category_map, "score_threshold_for_counts": COUNT_SCORE,
                "intervals": {"method": "percentile bootstrap over images, the same resamples for every point of a "
                                        "pass (drops paired with the clean point)", "level": 0.95,
                              "n_boot": o.bootstrap, "seed": "derived_seed(seed, 'bootstrap', pass)"}
                if o.bootstrap else {"method": "none (--bootstrap 0)"}}


def _dataset_paths(data, images, default_limit: int | None, limit: int | None):
    if data is None and images is None:
        from ..data.synth import default_split
        data, images = default_split()
        return Path(data), Path(images), limit if limit is not None else default_limit
    if data is None or images is None:
        raise RobustsegError("--data and --images go together: give the annotations file and its image folder")
    return Path(data), Path(images), limit


def _label_space(lm: LoadedModel, ds_data: dict, category_map) -> tuple[list[int], dict | None]:
    """The category ids the model's labels are written as for this dataset (a mismatch is refused)."""
    cmap = load_category_map(category_map) if category_map is not None else None
    ids = resolve_label_space(lm.class_names, lm.category_ids, ds_data["categories"], cmap,
                              annotated_ids={int(a["category_id"]) for a in ds_data["annotations"]})
    return ids, cmap


def open_context(model, data, images, opts: RunOptions, *, default_limit: int | None = None,
                 needs_annotations: bool = False, what: str = "run") -> RunContext:
    """Load and check everything a run needs, before any work: a bad option, model, dataset or image fails
    here with one line. Joins the torchrun process group when there is one."""
    opts.check()
    data, images, limit = _dataset_paths(data, images, default_limit, opts.limit)
    dist, device = setup(opts.device)
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    lm.model.to(device)
    # the dataset's own label space first (no overlap assumed), then the model's mapped onto it
    ds = CocoDataset(data, images, category_ids=None, limit=limit)
    category_ids, cmap = _label_space(lm, ds.data, opts.category_map)
    if category_ids != lm.category_ids:
        lm = replace(lm, category_ids=list(category_ids))
    ds.category_ids, ds.label_of = list(lm.category_ids), {c: i + 1 for i, c in enumerate(lm.category_ids)}
    if len(ds) == 0:
        raise RobustsegError(f"{data}: no images to {what}")
    if needs_annotations and not ds.has_annotations:
        raise RobustsegError(f"{data}: this {what} needs ground-truth annotations (none in the file)")
    problems = ds.check_images()  # every unreadable/missing/mis-sized image, found before any work
    if problems and opts.on_error == "fail":
        shown = "; ".join(f"image {i}: {e}" for i, e in list(problems.items())[:5])
        raise RobustsegError(f"{len(problems)} image(s) cannot be used: {shown}")
    if torch.device(device).type == "cuda":  # faster convolutions on tensor cores; same numbers
        lm.model.to(memory_format=torch.channels_last)
    ctx = RunContext(lm, ds, data, images, RunOptions(**{**opts.__dict__, "limit": limit}), dist, device,
                     problems, cmap)
    return ctx
