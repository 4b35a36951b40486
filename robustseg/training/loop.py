"""Train or fine-tune a Mask R-CNN on a COCO dataset: AdamW, linear warm-up, step decay, gradient clipping.

Resumable exactly: the batch order is a pure function of (seed, iteration), flips and adversarial examples are
seeded per iteration, and checkpoints hold the optimizer, scheduler, grad-scaler and RNG state (every rank's).
Checkpoints are written atomically. Optional: adversarial fine-tuning (adversarial.py), periodic clean + PGD
evaluation (periodic_eval.py), AMP and channels_last on CUDA, and torchrun/DDP (distributed.py). Where a run
starts from is start.py; its CSV logs are logs.py.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..amp import AMP_DTYPES
from ..attacks.objectives import LOSS_NAMES
from ..data.coco import collate
from ..errors import RobustsegError
from ..fileio import sha256_file
from ..models import save_checkpoint
from . import distributed
from .adversarial import Adversary
from .config import TrainConfig, check_options, default_bn, lr_factor
from .logs import append_rows, keep_rows, log_paths
from .start import build_start, restore, resume_state, resumed_meta, run_meta

__all__ = ["TrainConfig", "batch_indices", "log_paths", "lr_factor", "train"]


def batch_indices(n: int, batch_size: int, it: int, seed: int) -> list[int]:
    """Dataset indices of iteration ``it``: a fresh seeded permutation per epoch, so resuming needs no state."""
    out = []
    for pos in range(it * batch_size, (it + 1) * batch_size):
        epoch, k = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        out.append(int(perm[k]))
    return out


class _IterBatches(torch.utils.data.Sampler):
    """This process's share of each iteration's batch (all of it without torchrun)."""

    def __init__(self, n: int, batch_size: int, start: int, stop: int, seed: int, d: distributed.Dist):
        self.n, self.batch_size, self.seed, self.d = n, batch_size, seed, d
        self.start, self.stop = start, stop

    def __iter__(self):
        for it in range(self.start, self.stop):
            yield distributed.shard(batch_indices(self.n, self.batch_size, it, self.seed), self.d)

    def __len__(self):
        return self.stop - self.start


class _GroupLosses(nn.Module):
    """The loss dicts of the clean and the adversarial sub-batch in one forward call: DDP then sees exactly one
    forward per backward, and each group keeps its own loss components for the log."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, groups: list[tuple[list[torch.Tensor], list[dict]]]) -> list[dict]:
        return [self.model(images, targets) for images, targets in groups]


def _hflip(images: list[torch.Tensor], targets: list[dict], gen: torch.Generator):
    """Flip each image (with its boxes and masks) left-right with probability 1/2, drawn from ``gen``."""
    out_i, out_t = [], []
    for img, t in zip(images, targets):
        if torch.rand((), generator=gen) < 0.5:
            w = img.shape[-1]
            img = img.flip(-1)
            t = dict(t, boxes=torch.stack([w - t["boxes"][:, 2], t["boxes"][:, 1], w - t["boxes"][:, 0],
                                           t["boxes"][:, 3]], 1) if len(t["boxes"]) else t["boxes"],
                     masks=t["masks"].flip(-1))
        out_i.append(img)
        out_t.append(t)
    return out_i, out_t


def _target_to(t: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()}


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, adversary: Any = None) -> Path:
    """Run (or resume) training; returns the final checkpoint path.

    ``adversary(model, images, targets, it) -> (images, is_adv)`` replaces some images of the batch by
    adversarial versions (built from ``cfg.adv`` when not given; see adversarial.py). The loop computes and logs
    the clean and the adversarial images' losses separately and trains on their size-weighted mean.
    """
    cfg = replace(cfg, bn=default_bn(cfg))  # recorded resolved, so a resume compares what was actually used
    out = Path(cfg.out)
    d, device = distributed.setup(cfg.device)
    try:
        return _Trainer(cfg, out, d, device, resume, adversary).run(progress and d.main)
    finally:
        distributed.teardown(d)


class _Trainer:
    """One training run. Building it does everything before the first iteration, in an order that matters for
    an exact resume (seed, build the model, restore the RNG); ``run`` then trains to ``cfg.iters``."""

    def __init__(self, cfg: TrainConfig, out: Path, d: distributed.Dist, device: torch.device, resume: bool,
                 adversary: Any):
        check_options(cfg, device)
        self.cfg, self.out, self.d, self.device = cfg, out, d, device
        torch.manual_seed(cfg.seed)  # the model's random init
        state = resume_state(out, resume)
        self.origin = build_start(cfg, state)
        self.model = self.origin.model
        self._prepare_optimisation()
        if d.rank:  # the same weights on every rank (DDP broadcasts rank 0's) but different sampler draws
            torch.manual_seed(cfg.seed * 1_000_003 + d.rank)
        self.first_it = restore(state, self.model, self.opt, self.sched, self.scaler, d) if state else 0
        if adversary is None and cfg.adv:
            adversary = Adversary(cfg.adv, cfg.eps, cfg.steps, cfg.adv_ratio, cfg.seed, d.rank)
        self.adversary = adversary
        self.log_prefixes = ("", "adv_") if adversary is not None else ("",)
        self.log_path, self.eval_path = log_paths(out)
        self.meta = self._meta_and_logs(state)
        self.evaluator = self._evaluator()
        self.net = self._net()
        self.pending_rows: list[dict] = []  # log rows not yet on disk: written at each checkpoint

    def _prepare_optimisation(self) -> None:
        cfg = self.cfg
        self.model.to(self.device).train()
        if self.device.type == "cuda":  # faster convolutions with tensor cores; weights are saved layout-independent
            self.model.to(memory_format=torch.channels_last)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda it: lr_factor(it, cfg))
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")

    def _meta_and_logs(self, state: dict | None) -> dict:
        """The checkpoint's meta; the logs trimmed to the resumed checkpoint, or removed for a fresh run."""
        data_hash = sha256_file(self.cfg.data)
        meta = run_meta(self.cfg, self.d, self.adversary, data_hash)
        if state:
            meta = resumed_meta(meta, state, self.cfg, data_hash, self.first_it)
            if self.d.main:  # rows written after the checkpoint by the killed process are redone now
                start = self.first_it
                keep_rows(self.log_path, lambda it: it < start)
                keep_rows(self.eval_path, lambda it: it <= start)
        elif self.d.main:  # a fresh run: no stale rows of an earlier run with this --out (e.g. after --force)
            self.log_path.unlink(missing_ok=True)
            self.eval_path.unlink(missing_ok=True)
        return meta

    def _evaluator(self):
        cfg = self.cfg
        if not (cfg.eval_every and self.d.main):
            return None
        from .periodic_eval import PeriodicEval  # only when asked: it pulls in the evaluation stack
        return PeriodicEval(cfg.eval_data, cfg.eval_images, self.origin.category_ids, cfg.eval_limit, cfg.eps,
                            cfg.eval_steps, seed=cfg.seed)

    def _net(self) -> nn.Module:
        net: nn.Module = _GroupLosses(self.model)
        if self.d.enabled:
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device] if self.device.type == "cuda" else None)
        return net

    def _autocast(self):
        return torch.autocast("cuda", dtype=AMP_DTYPES[self.cfg.amp]) if self.cfg.amp else contextlib.nullcontext()

    def _loader(self) -> torch.utils.data.DataLoader:
        cfg = self.cfg
        sampler = _IterBatches(len(self.origin.dataset), cfg.batch_size, self.first_it, cfg.iters, cfg.seed, self.d)
        # own generator: iter(loader) must not draw from the global RNG, which was just restored for an exact resume
        return torch.utils.data.DataLoader(self.origin.dataset, batch_sampler=sampler, collate_fn=collate,
                                           num_workers=cfg.workers, generator=torch.Generator().manual_seed(cfg.seed))

    def run(self, progress: bool) -> Path:
        from tqdm import tqdm
        cfg = self.cfg
        bar = tqdm(total=cfg.iters, initial=self.first_it, desc="train", unit="it", disable=not progress,
                   dynamic_ncols=True)
        t0 = t_last = time.time()
        for it, (images, targets) in enumerate(self._loader(), start=self.first_it):
            row = self._step(it, images, targets)
            row["images_per_s"] = cfg.batch_size / max(time.time() - t_last, 1e-9)
            self.pending_rows.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{self.sched.get_last_lr()[0]:.1e}")
            self._evaluate_or_checkpoint(it + 1, bar)
            t_last = time.time()
        bar.close()
        self._write_log()
        self._checkpoint(cfg.iters, final=True)
        if progress:
            print(f"trained {cfg.iters - self.first_it} iterations in {time.time() - t0:.0f}s -> {self.out}",
                  file=sys.stderr)
        return self.out

    def _step(self, it: int, images: list[torch.Tensor], targets: list[dict]) -> dict:
        """One optimiser step on iteration ``it``'s batch; returns its log row."""
        if self.cfg.bn == "frozen":  # every step: a periodic evaluation restores train mode
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        if self.cfg.hflip:
            images, targets = _hflip(images, targets, torch.Generator().manual_seed(self.cfg.seed * 7919 + it))
        images = [i.to(self.device) for i in images]
        targets = [_target_to(t, self.device) for t in targets]
        is_adv = [False] * len(images)
        if self.adversary is not None:
            with self._autocast():
                images, is_adv = self.adversary(self.model, images, targets, it)
        groups = {p: [i for i, a in enumerate(is_adv) if a == bool(p)] for p in self.log_prefixes}
        groups = {p: idx for p, idx in groups.items() if idx}
        with self._autocast():
            parts = self.net([([images[i] for i in idx], [targets[i] for i in idx]) for idx in groups.values()])
        # the batch mean over all images: each group's mean loss weighted by its share of the batch
        loss = sum(len(idx) / len(images) * sum(p.values()) for idx, p in zip(groups.values(), parts))
        if not math.isfinite(loss.detach().item()):
            raise RobustsegError(f"training diverged at iteration {it}: loss is {loss.detach().item()}; "
                                 f"lower --lr")
        lr = self.sched.get_last_lr()[0]
        self._optimise(loss)
        return {"iteration": it, **self._logged_values(loss, dict(zip(groups, parts)), is_adv), "lr": lr}

    def _optimise(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)  # clip the true gradient, not the fp16-scaled one
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()

    def _logged_values(self, loss: torch.Tensor, parts_of: dict[str, dict], is_adv: list[bool]) -> dict:
        """The loss and each group's loss components (NaN for a group absent from this batch), over all ranks."""
        values = {"loss": loss.detach().item()}
        for prefix in self.log_prefixes:
            p = parts_of.get(prefix)
            values.update({prefix + k: p[k].detach().item() if p is not None else math.nan for k in LOSS_NAMES})
        values["adv_images"] = float(sum(is_adv))
        values = distributed.mean_over_ranks(values, self.d, self.device)
        values["adv_images"] = round(values["adv_images"] * self.d.world)  # over the whole (global) batch
        return values

    def _evaluate_or_checkpoint(self, done: int, bar) -> None:
        """After ``done`` iterations: a periodic evaluation and/or a checkpoint, when one is due."""
        cfg = self.cfg
        if self.evaluator is not None and done % cfg.eval_every == 0:
            row = self.evaluator(self.model, done, self.device)
            append_rows(self.eval_path, [row])
            bar.write(f"eval @{done}: bbox AP clean {row['clean_bbox_AP']:.3f}, PGD {row['pgd_bbox_AP']:.3f}")
        if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.iters:
            # log first: a process killed between the two leaves rows a resume drops, never a gap
            self._write_log()
            self._checkpoint(done, final=False)

    def _write_log(self) -> None:
        if self.d.main:
            append_rows(self.log_path, self.pending_rows)
        self.pending_rows = []

    def _checkpoint(self, it: int, final: bool) -> None:
        extra = {}
        if not final:  # collective: every rank's RNG state, so each continues exactly
            rngs = distributed.gather_objects(torch.get_rng_state(), self.d)
            extra = {"train_state": {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                                     "scaler": self.scaler.state_dict(), "iteration": it, "torch_rng": rngs[0],
                                     "torch_rng_per_rank": rngs}}
        if self.d.main:  # the bare model's state_dict: no "module." prefix, loadable by single-process commands
            o = self.origin
            save_checkpoint(self.out, self.model, arch=o.arch, arch_cfg=o.arch_cfg, class_names=o.class_names,
                            category_ids=o.category_ids, meta={**self.meta, "iteration": it},
                            half=final and self.cfg.half, extra=extra)
