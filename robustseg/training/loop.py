"""Train or fine-tune a Mask R-CNN on a COCO dataset: AdamW, linear warm-up, step decay, gradient clipping.

Resumable exactly: the batch order is a pure function of (seed, iteration), flips are seeded per iteration, and
checkpoints hold the optimizer, scheduler and RNG state. Checkpoints are written atomically.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.coco import CocoDataset, collate
from ..errors import RobustsegError
from ..fileio import sha256_file
from ..models import build_model, save_checkpoint
from ..models.checkpoint import load_model, _torch_load


@dataclass
class TrainConfig:
    data: str
    images: str
    out: str = "runs/train/model.pt"
    arch: str = "tiny"
    arch_cfg: dict = field(default_factory=dict)
    init: str | None = None            # start from these weights (fine-tuning) instead of random init
    iters: int = 3000
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    decay_at: float = 0.8              # LR x0.1 for the last (1 - decay_at) of the run
    clip: float = 10.0
    seed: int = 0
    ckpt_every: int = 500
    hflip: bool = True
    half: bool = False                 # store the final checkpoint in fp16 (half the size)
    device: str = "cpu"
    workers: int = 0
    command: str = ""


def batch_indices(n: int, batch_size: int, it: int, seed: int) -> list[int]:
    """Dataset indices of iteration ``it``: a fresh seeded permutation per epoch, so resuming needs no state."""
    out = []
    for pos in range(it * batch_size, (it + 1) * batch_size):
        epoch, k = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        out.append(int(perm[k]))
    return out


class _IterBatches(torch.utils.data.Sampler):
    def __init__(self, n: int, batch_size: int, start: int, stop: int, seed: int):
        self.n, self.bs, self.start, self.stop, self.seed = n, batch_size, start, stop, seed

    def __iter__(self):
        for it in range(self.start, self.stop):
            yield batch_indices(self.n, self.bs, it, self.seed)

    def __len__(self):
        return self.stop - self.start


def _hflip(images: list[torch.Tensor], targets: list[dict], gen: torch.Generator):
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


def lr_factor(it: int, cfg: TrainConfig) -> float:
    if it < cfg.warmup:
        return 0.001 + (1 - 0.001) * it / max(cfg.warmup, 1)
    return 0.1 if it >= cfg.decay_at * cfg.iters else 1.0


def _to(t: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()}


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, adversary: Any = None) -> Path:
    """Run (or resume) training; returns the final checkpoint path. ``adversary`` hooks adversarial training."""
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    state = None
    if resume:
        if not out.is_file():
            raise RobustsegError(f"--resume: no checkpoint at {out} to resume from")
        state = _torch_load(out)
        if "train_state" not in state:
            raise RobustsegError(f"--resume: {out} has no training state (already finished or not a run)")
    elif out.exists():
        raise RobustsegError(f"{out} exists; use --resume to continue it or --force to start over")

    if cfg.init and not state:
        loaded = load_model(cfg.init)
        model, arch, arch_cfg = loaded.model, loaded.arch, loaded.arch_cfg
        category_ids, class_names = loaded.category_ids, loaded.class_names
        ds = CocoDataset(cfg.data, cfg.images, category_ids=category_ids)
    else:
        ds = CocoDataset(cfg.data, cfg.images)
        category_ids, class_names = ds.category_ids, ds.class_names
        arch, arch_cfg = cfg.arch, dict(cfg.arch_cfg)
        model = build_model(arch, len(category_ids) + 1, **arch_cfg)
    if len(ds) == 0:
        raise RobustsegError(f"{cfg.data}: no images to train on")
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, cfg))
    start = 0
    if state:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["state_dict"].items()})
        ts = state["train_state"]
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        start = int(ts["iteration"])
        torch.set_rng_state(ts["torch_rng"])

    data_hash = sha256_file(cfg.data)
    meta = {"trained_on": {"annotations": str(cfg.data), "sha256": data_hash, "images": str(cfg.images)},
            "train_config": asdict(cfg), "command": cfg.command or " ".join(sys.argv),
            "torch": str(torch.__version__)}
    if state:  # keep the command that started the run; resuming is exact, so it still reproduces the weights
        old = state.get("meta", {})
        if old.get("trained_on", {}).get("sha256") != data_hash:
            raise RobustsegError(f"--resume: {cfg.data} is not the dataset this run was started on")
        meta["command"] = old.get("command", meta["command"])
        meta["resumed_at"] = list(old.get("resumed_at", [])) + [start]

    def checkpoint(it: int, final: bool) -> None:
        extra = {} if final else {"train_state": {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                                  "iteration": it, "torch_rng": torch.get_rng_state()}}
        save_checkpoint(out, model, arch=arch, arch_cfg=arch_cfg, class_names=class_names,
                        category_ids=category_ids, meta={**meta, "iteration": it}, half=final and cfg.half,
                        extra=extra)

    loader = torch.utils.data.DataLoader(ds, batch_sampler=_IterBatches(len(ds), cfg.batch_size, start, cfg.iters,
                                                                        cfg.seed),
                                         collate_fn=collate, num_workers=cfg.workers,
                                         # own generator: iter(loader) must not draw from the global RNG,
                                         # which was just restored for an exact resume
                                         generator=torch.Generator().manual_seed(cfg.seed))
    from tqdm import tqdm
    bar = tqdm(total=cfg.iters, initial=start, desc="train", unit="it", disable=not progress, dynamic_ncols=True)
    t0, it = time.time(), start
    log_rows = []
    for it, (images, targets) in enumerate(loader, start=start):
        images, targets = _hflip(images, targets, torch.Generator().manual_seed(cfg.seed * 7919 + it)) \
            if cfg.hflip else (images, targets)
        images = [i.to(device) for i in images]
        targets = [_to(t, device) for t in targets]
        if adversary is not None:
            images, extra_losses = adversary(model, images, targets, it)
        losses = model(images, targets)
        loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            raise RobustsegError(f"training diverged at iteration {it}: loss is {float(loss)}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        sched.step()
        log_rows.append({"iteration": it, "loss": float(loss), **{k: float(v) for k, v in losses.items()}})
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        if cfg.ckpt_every and (it + 1) % cfg.ckpt_every == 0 and it + 1 < cfg.iters:
            checkpoint(it + 1, final=False)
            _append_log(out.with_suffix(".log.csv"), log_rows)
            log_rows = []
    bar.close()
    checkpoint(cfg.iters, final=True)
    _append_log(out.with_suffix(".log.csv"), log_rows)
    if progress:
        print(f"trained {cfg.iters - start} iterations in {time.time() - t0:.0f}s -> {out}", file=sys.stderr)
    return out


def _append_log(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    import csv
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)
