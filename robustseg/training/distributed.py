"""torchrun support: process group, per-rank share of a batch, averaging logged values over ranks.

Under ``torchrun --nproc-per-node N -m robustseg train ...`` the environment carries RANK/WORLD_SIZE; without it
everything here is a no-op, so single-process training runs the same code.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import RobustsegError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Only this process writes checkpoints, logs and evaluations."""
        return self.rank == 0


def setup(device: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); each rank on its own GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), torch.device(device)
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    return d, dev


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def held(device: str):
    """The process group joined for a block that makes several runs (each execute then leaves it alone), left at
    the end if the block joined it; a plain process without torchrun: nothing."""
    owned = dist.is_available() and not dist.is_initialized()
    d, _ = setup(device)
    try:
        yield d
    finally:
        if owned:
            teardown(d)


def shard(indices: list[int], d: Dist) -> list[int]:
    """Rank r's share of one iteration's (global) batch: every world-th index from position r."""
    if len(indices) % d.world:
        raise RobustsegError(f"--batch-size {len(indices)} is not divisible by the {d.world} processes; "
                             f"each process must get the same number of images")
    return indices[d.rank::d.world]


def mean_over_ranks(row: dict[str, float], d: Dist, device: torch.device) -> dict[str, float]:
    """Average logged values over ranks, ignoring NaN (a rank whose share had no adversarial image)."""
    if not d.enabled:
        return row
    keys = list(row)
    v = torch.tensor([row[k] for k in keys], dtype=torch.float64, device=device)
    ok = torch.isfinite(v)
    both = torch.stack([torch.where(ok, v, torch.zeros_like(v)), ok.double()])
    dist.all_reduce(both)
    mean = both[0] / both[1]  # 0/0 -> NaN where no rank had the value
    return dict(zip(keys, mean.tolist()))


def gather_objects(obj, d: Dist) -> list:
    """Every rank's ``obj`` (e.g. RNG states, so a resumed DDP run continues each rank exactly)."""
    if not d.enabled:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out
