"""Train or fine-tune a Mask R-CNN on a COCO dataset: AdamW, linear warm-up, step decay, gradient clipping.

Resumable exactly: the batch order is a pure function of (seed, iteration), flips and adversarial examples are
seeded per iteration, and checkpoints hold the optimizer, scheduler, grad-scaler and RNG state (every rank's).
Checkpoints are written atomically. Optional: adversarial fine-tuning (adversarial.py), periodic clean + PGD
evaluation (periodic_eval.py), AMP and channels_last on CUDA, and torchrun/DDP (distributed.py).
"""
from __future__ import annotations

import contextlib
import csv
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.coco import CocoDataset, collate
from ..errors import RobustsegError
from ..fileio import atomic_write, sha256_file
from ..models import build_model, save_checkpoint
from ..models.checkpoint import load_model, _torch_load
from . import distributed
from .adversarial import Adversary

LOSS_PARTS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# settings a resumed run must share with the run it continues (anything else may change, e.g. --eval-every)
_RESUME_MUST_MATCH = ("batch_size", "seed", "adv", "eps", "steps", "adv_ratio", "amp")


@dataclass
class TrainConfig:
    data: str
    images: str
    out: str = "runs/train/model.pt"
    arch: str = "tiny"
    arch_cfg: dict = field(default_factory=dict)
    init: str | None = None            # start from these weights (fine-tuning) instead of random init
    iters: int = 3000
    batch_size: int = 4                # global: split over the processes under torchrun
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
    adv: str | None = None             # pgd | fgsm-rs: adversarial fine-tuning (adversarial.py)
    eps: float = 4 / 255               # Linf budget of the training (and periodic-eval) attack
    steps: int = 3                     # PGD steps when making training examples
    adv_ratio: float = 0.5             # fraction of each batch replaced by adversarial versions
    amp: str | None = None             # bf16 | fp16 autocast (CUDA only)
    eval_every: int = 0                # clean + PGD AP every N iterations on eval_data (0: never)
    eval_data: str | None = None
    eval_images: str | None = None
    eval_limit: int = 16
    eval_steps: int = 10


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
        self.n, self.bs, self.start, self.stop, self.seed, self.d = n, batch_size, start, stop, seed, d

    def __iter__(self):
        for it in range(self.start, self.stop):
            yield distributed.shard(batch_indices(self.n, self.bs, it, self.seed), self.d)

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


def _check_options(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.amp is not None:
        if cfg.amp not in AMP_DTYPES:
            raise RobustsegError(f"--amp must be bf16 or fp16, not {cfg.amp!r}")
        if device.type != "cuda":
            raise RobustsegError(f"--amp {cfg.amp} needs a CUDA device (this run is on {device}); drop --amp on CPU")
    if cfg.eval_every and not (cfg.eval_data and cfg.eval_images):
        raise RobustsegError("--eval-every needs --eval-data ANN.json and --eval-images DIR")


def log_paths(out: Path) -> tuple[Path, Path]:
    """(per-iteration log, periodic evaluation log) of a run writing checkpoint ``out``."""
    return out.with_suffix(".log.csv"), out.with_suffix(".eval.csv")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, adversary: Any = None) -> Path:
    """Run (or resume) training; returns the final checkpoint path.

    ``adversary(model, images, targets, it) -> (images, is_adv)`` replaces some images of the batch by
    adversarial versions (built from ``cfg.adv`` when not given; see adversarial.py). The loop computes and logs
    the clean and the adversarial images' losses separately and trains on their size-weighted mean.
    """
    out = Path(cfg.out)
    d, device = distributed.setup(cfg.device)
    try:
        return _train(cfg, out, d, device, resume, progress and d.main, adversary)
    finally:
        distributed.teardown(d)


def _train(cfg: TrainConfig, out: Path, d: distributed.Dist, device: torch.device, resume: bool, progress: bool,
           adversary: Any) -> Path:
    _check_options(cfg, device)
    torch.manual_seed(cfg.seed)
    state = None
    if resume:
        if not out.is_file():
            raise RobustsegError(f"--resume: no checkpoint at {out} to resume from")
        state = _torch_load(out)
        if "train_state" not in state:
            raise RobustsegError(f"--resume: {out} has no training state (already finished or not a run)")
    elif out.exists():
        raise RobustsegError(f"{out} exists; use --resume to continue it or --force to start over")

    if state:  # the checkpoint's own model (a fine-tune's may differ from --arch/--arch-opt); weights come below
        arch, arch_cfg = state["arch"], dict(state.get("arch_cfg") or {})
        category_ids, class_names = list(state["category_ids"]), list(state["class_names"])
        ds = CocoDataset(cfg.data, cfg.images, category_ids=category_ids)
        model = build_model(arch, len(category_ids) + 1, **arch_cfg)
    elif cfg.init:
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
    if device.type == "cuda":  # faster convolutions with tensor cores; weights are saved layout-independent
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, cfg))
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    if d.rank:  # the same weights on every rank (DDP broadcasts rank 0's) but different sampler draws
        torch.manual_seed(cfg.seed * 1_000_003 + d.rank)
    start = 0
    if state:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["state_dict"].items()})
        ts = state["train_state"]
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        if "scaler" in ts:
            scaler.load_state_dict(ts["scaler"])
        start = int(ts["iteration"])
        per_rank = ts.get("torch_rng_per_rank") or []
        torch.set_rng_state(per_rank[d.rank] if len(per_rank) == d.world else ts["torch_rng"])

    if adversary is None and cfg.adv:
        adversary = Adversary(cfg.adv, cfg.eps, cfg.steps, cfg.adv_ratio, cfg.seed, d.rank)
    data_hash = sha256_file(cfg.data)
    meta = {"trained_on": {"annotations": str(cfg.data), "sha256": data_hash, "images": str(cfg.images)},
            "train_config": asdict(cfg), "command": cfg.command or " ".join(sys.argv),
            "torch": str(torch.__version__), "world_size": d.world,
            "adversarial": adversary.describe() if hasattr(adversary, "describe") else None}
    log_path, eval_path = log_paths(out)
    if state:  # keep the command that started the run; resuming is exact, so it still reproduces the weights
        old = state.get("meta", {})
        if old.get("trained_on", {}).get("sha256") != data_hash:
            raise RobustsegError(f"--resume: {cfg.data} is not the dataset this run was started on")
        old_cfg, defaults = old.get("train_config", {}), asdict(TrainConfig("", ""))
        differs = [k for k in _RESUME_MUST_MATCH if old_cfg.get(k, defaults[k]) != getattr(cfg, k)]
        if differs:
            raise RobustsegError(f"--resume: this run was started with different {', '.join(differs)} "
                                 f"({', '.join(f'{k}={old_cfg.get(k, defaults[k])!r}' for k in differs)})")
        meta["command"] = old.get("command", meta["command"])
        meta["resumed_at"] = list(old.get("resumed_at", [])) + [start]
        if d.main:  # rows written after the checkpoint by the killed process are redone now
            _keep_rows(log_path, lambda it: it < start)
            _keep_rows(eval_path, lambda it: it <= start)
    elif d.main:  # a fresh run: no stale rows of an earlier run with this --out (e.g. after --force)
        log_path.unlink(missing_ok=True)
        eval_path.unlink(missing_ok=True)

    def checkpoint(it: int, final: bool) -> None:
        extra = {}
        if not final:  # collective: every rank's RNG state, so each continues exactly
            rngs = distributed.gather_objects(torch.get_rng_state(), d)
            extra = {"train_state": {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                     "scaler": scaler.state_dict(), "iteration": it, "torch_rng": rngs[0],
                                     "torch_rng_per_rank": rngs}}
        if d.main:  # the bare model's state_dict: no "module." prefix, loadable by single-process commands
            save_checkpoint(out, model, arch=arch, arch_cfg=arch_cfg, class_names=class_names,
                            category_ids=category_ids, meta={**meta, "iteration": it}, half=final and cfg.half,
                            extra=extra)

    evaluator = None
    if cfg.eval_every and d.main:
        from .periodic_eval import PeriodicEval
        evaluator = PeriodicEval(cfg.eval_data, cfg.eval_images, category_ids, cfg.eval_limit, cfg.eps,
                                 cfg.eval_steps, seed=cfg.seed)

    net: nn.Module = _GroupLosses(model)
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    autocast = (lambda: torch.autocast("cuda", dtype=AMP_DTYPES[cfg.amp])) if cfg.amp else contextlib.nullcontext
    loader = torch.utils.data.DataLoader(ds, batch_sampler=_IterBatches(len(ds), cfg.batch_size, start, cfg.iters,
                                                                        cfg.seed, d),
                                         collate_fn=collate, num_workers=cfg.workers,
                                         # own generator: iter(loader) must not draw from the global RNG,
                                         # which was just restored for an exact resume
                                         generator=torch.Generator().manual_seed(cfg.seed))
    from tqdm import tqdm
    bar = tqdm(total=cfg.iters, initial=start, desc="train", unit="it", disable=not progress, dynamic_ncols=True)
    t0 = t_last = time.time()
    log_rows: list[dict] = []
    prefixes = ("", "adv_") if adversary is not None else ("",)
    for it, (images, targets) in enumerate(loader, start=start):
        images, targets = _hflip(images, targets, torch.Generator().manual_seed(cfg.seed * 7919 + it)) \
            if cfg.hflip else (images, targets)
        images = [i.to(device) for i in images]
        targets = [_to(t, device) for t in targets]
        is_adv = [False] * len(images)
        if adversary is not None:
            with autocast():
                images, is_adv = adversary(model, images, targets, it)
        groups = {p: [i for i, a in enumerate(is_adv) if a == bool(p)] for p in prefixes}
        groups = {p: idx for p, idx in groups.items() if idx}
        with autocast():
            parts = net([([images[i] for i in idx], [targets[i] for i in idx]) for idx in groups.values()])
        # the batch mean over all images: each group's mean loss weighted by its share of the batch
        loss = sum(len(idx) / len(images) * sum(p.values()) for idx, p in zip(groups.values(), parts))
        if not math.isfinite(loss.detach().item()):
            raise RobustsegError(f"training diverged at iteration {it}: loss is {loss.detach().item()}; "
                                 f"lower --lr")
        lr = sched.get_last_lr()[0]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        scaler.step(opt)
        scaler.update()
        sched.step()

        values = {"loss": loss.detach().item()}
        for prefix in prefixes:
            p = dict(zip(groups, parts)).get(prefix)
            values.update({prefix + k: p[k].detach().item() if p is not None else math.nan for k in LOSS_PARTS})
        values["adv_images"] = float(sum(is_adv))
        values = distributed.mean_over_ranks(values, d, device)
        values["adv_images"] = round(values["adv_images"] * d.world)  # over the whole (global) batch
        now = time.time()
        log_rows.append({"iteration": it, **values, "lr": lr, "images_per_s": cfg.batch_size / max(now - t_last, 1e-9)})
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        if evaluator is not None and (it + 1) % cfg.eval_every == 0:
            row = evaluator(model, it + 1, device)
            _append_rows(eval_path, [row])
            bar.write(f"eval @{it + 1}: bbox AP clean {row['clean_bbox_AP']:.3f}, PGD {row['pgd_bbox_AP']:.3f}")
        if cfg.ckpt_every and (it + 1) % cfg.ckpt_every == 0 and it + 1 < cfg.iters:
            # log first: a process killed between the two leaves rows a resume drops, never a gap
            if d.main:
                _append_rows(log_path, log_rows)
            log_rows = []
            checkpoint(it + 1, final=False)
        t_last = time.time()
    bar.close()
    if d.main:
        _append_rows(log_path, log_rows)
    checkpoint(cfg.iters, final=True)
    if progress:
        print(f"trained {cfg.iters - start} iterations in {time.time() - t0:.0f}s -> {out}", file=sys.stderr)
    return out


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    if not path.exists():
        return [], []
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames or []), list(r)


def _write_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    def w(f):
        wr = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        wr.writeheader()
        wr.writerows(rows)
    atomic_write(path, w)


def _append_rows(path: Path, rows: list[dict]) -> None:
    """Append to a CSV log; a row with new columns (e.g. a run resumed by a newer version) rewrites the header."""
    if not rows:
        return
    fields, old = _read_rows(path)
    new_fields = fields + [k for r in rows for k in r if k not in fields]
    new_fields = list(dict.fromkeys(new_fields))
    if fields and new_fields == fields:
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=fields, extrasaction="ignore").writerows(rows)
    else:
        _write_rows(path, new_fields, old + rows)


def _keep_rows(path: Path, keep) -> None:
    fields, rows = _read_rows(path)
    if fields:
        _write_rows(path, fields, [r for r in rows if keep(int(r["iteration"]))])
