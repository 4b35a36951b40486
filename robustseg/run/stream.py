"""One pass over a source: this rank's batches, decoded in DataLoader workers, done images skipped, each batch's
work run (halved on CUDA out-of-memory) and committed to the work log. Identical under any torchrun world size:
batches are the same index lists whoever runs them, and seeds derive from a batch's first image id."""
from __future__ import annotations

import sys
from typing import Callable

import torch
from tqdm import tqdm

from ..errors import RobustsegError
from ..utils import batches
from .kind import Batch, BatchOut, Source
from .rundir import RunDir


class _Decoded(torch.utils.data.Dataset):
    """Image i and its target, or the reason it cannot be used: decoding runs in DataLoader workers."""

    def __init__(self, source: Source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source.image_ids)

    def __getitem__(self, i: int):
        try:
            return i, self.source.load_image(i), self.source.target(i), None
        except RobustsegError as e:  # e.g. a truncated file whose header looked fine
            return i, None, None, str(e)


def _to(x, device):
    return x.to(device, non_blocking=True) if torch.is_tensor(x) else x


def share(n_images: int, ctx) -> int:
    """How many of a pass's images this rank's batches hold (batch n goes to rank n % world): its bar's total."""
    d = ctx.dist
    return sum(len(b) for n, b in enumerate(batches(n_images, ctx.opts.batch_size)) if n % d.world == d.rank)


class PassRunner:
    """Streams one pass for this rank into ``run_dir``; ``work(batch) -> BatchOut`` is the kinds' work."""

    def __init__(self, name: str, source: Source, work: Callable[[Batch], BatchOut], run_dir: RunDir, ctx,
                 cost_per_image: float, bar):
        self.name, self.source, self.work, self.run_dir, self.ctx = name, source, work, run_dir, ctx
        self.cost, self.bar = cost_per_image, bar

    def plan(self) -> list[tuple[int, list[int]]]:
        """(batch key, positions still to do) for every batch of this rank; done work is counted as done."""
        ids, d = self.source.image_ids, self.ctx.dist
        finished = self.run_dir.finished_ids(self.name)
        mine = [b for n, b in enumerate(batches(len(ids), self.ctx.opts.batch_size)) if n % d.world == d.rank]
        plan = []
        for idx in mine:
            todo = [i for i in idx if ids[i] not in finished]
            self.bar.skip((len(idx) - len(todo)) * self.cost)
            if todo:
                plan.append((ids[idx[0]], todo))
        return plan

    def fail(self, iid: int, err: str) -> None:
        if self.ctx.opts.on_error == "fail":
            raise RobustsegError(f"image {iid}: {err}")
        tqdm.write(f"skipping image {iid}: {err}", file=sys.stderr)
        self.run_dir.append(self.name, "failed", [{"image_id": iid, "error": err}])
        self.bar.skip(self.cost)

    def run(self, pre_failed: dict[int, str], log_pre_failed: bool = True) -> None:
        finished = self.run_dir.finished_ids(self.name)
        if self.ctx.dist.main:  # known-bad images are logged once, by one rank
            for iid, err in pre_failed.items():
                if iid not in finished:
                    if log_pre_failed:
                        tqdm.write(f"skipping image {iid}: {err}", file=sys.stderr)
                    self.run_dir.append(self.name, "failed", [{"image_id": iid, "error": err}])
        plan = []
        for key, todo in self.plan():
            usable = [i for i in todo if self.source.image_ids[i] not in pre_failed]
            self.bar.skip((len(todo) - len(usable)) * self.cost)
            if usable:
                plan.append((key, usable))
        device = self.ctx.device
        loader = torch.utils.data.DataLoader(_Decoded(self.source), batch_sampler=[t for _, t in plan],
                                             collate_fn=list, num_workers=self.ctx.opts.workers,
                                             pin_memory=device.type == "cuda")
        for (key, _), items in zip(plan, loader):
            loaded = []
            for i, img, tgt, err in items:
                iid = self.source.image_ids[i]
                if err is not None:
                    self.fail(iid, err)
                else:
                    loaded.append((iid, _to(img, device), {k: _to(v, device) for k, v in tgt.items()}))
            if loaded:
                self.batch_or_split([x for _, x, _ in loaded], [t for _, _, t in loaded],
                                    [iid for iid, _, _ in loaded], key)

    def commit(self, images, targets, ids, key) -> None:
        out = self.work(Batch(images, targets, ids, key, None, self.bar.update))
        for point, results in out.predictions.items():
            self.run_dir.append(self.name, point, results)
        for stream, rows in out.rows.items():
            self.run_dir.append(self.name, stream, rows)
        # the batch is committed last: a kill before this line redoes the batch on --resume
        self.run_dir.append(self.name, "done", [{"image_id": i} for i in ids])

    def batch_or_split(self, images, targets, ids, key) -> None:
        """On CUDA out-of-memory, halve the batch and go on (logged), instead of losing the run."""
        try:
            self.commit(images, targets, ids, key)
        except torch.OutOfMemoryError:
            if len(ids) == 1:
                raise
            torch.cuda.empty_cache()
            h = len(ids) // 2
            tqdm.write(f"CUDA out of memory on a batch of {len(ids)}: retrying as {h} + {len(ids) - h}",
                       file=sys.stderr)
            self.batch_or_split(images[:h], targets[:h], ids[:h], f"{key}a")
            self.batch_or_split(images[h:], targets[h:], ids[h:], f"{key}b")
