"""torchrun: two CPU processes (gloo) train with DistributedDataParallel; rank 0 writes a checkpoint that the
single-process commands load (no "module." prefix) and one log."""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

from robustseg.data.synth import generate
from robustseg.models import load_model
from robustseg.training import distributed

ARCH_CFG = {"min_size": 64, "max_size": 64, "fpn_channels": 32, "box_head_dim": 64, "mask_head_channels": 16,
            "anchor_sizes": [8, 16, 32, 64]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_gloo_two_processes(tmp_path):
    ann = generate(tmp_path / "data", 8, seed=13, size=64)
    out = tmp_path / "ddp" / "model.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "robustseg", "train", "--data", str(ann), "--images", str(tmp_path / "data" / "images"),
           "--out", str(out), "--iters", "3", "--batch-size", "4", "--warmup", "1", "--ckpt-every", "2",
           "--adv", "fgsm-rs"] + [a for k, v in ARCH_CFG.items() for a in ("--arch-opt", f"{k}={v}".replace(" ", ""))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]

    raw = torch.load(out, weights_only=True)
    assert not any(k.startswith("module.") or k.startswith("model.") for k in raw["state_dict"])
    lm = load_model(out)  # the single-process loader, strict
    assert lm.meta["world_size"] == 2 and lm.meta["iteration"] == 3 and lm.arch_cfg == ARCH_CFG
    with open(out.with_suffix(".log.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]  # one log, written by rank 0 only
    assert all(int(r["adv_images"]) == 2 for r in rows)  # half of the global batch of 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.log.csv", "model.pt"]


def test_shard_splits_the_global_batch():
    batch = [5, 1, 7, 3]
    parts = [distributed.shard(batch, distributed.Dist(r, 2)) for r in range(2)]
    assert parts == [[5, 7], [1, 3]]
    with pytest.raises(Exception, match="divisible"):
        distributed.shard([1, 2, 3], distributed.Dist(0, 2))
