"""Adversarial fine-tuning (robustseg/training/adversarial.py) and the job behaviour of the training loop:
clean + adversarial loss logging, frozen normalisation during example generation, kill-and-resume, AMP refusal.
"""
from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import robustseg.training.loop as loop
from robustseg.data.coco import CocoDataset
from robustseg.data.synth import generate
from robustseg.errors import RobustsegError
from robustseg.models import build_model, load_model
from robustseg.training import Adversary, TrainConfig, train

# the shrunken "tiny" of test_training.py: 64 px inputs, narrow FPN and heads
ARCH_CFG = {"min_size": 64, "max_size": 64, "fpn_channels": 32, "box_head_dim": 64, "mask_head_channels": 16,
            "anchor_sizes": [8, 16, 32, 64]}
PARTS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


@pytest.fixture(scope="module")
def data8(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adv_data")
    ann = generate(root, 8, seed=11, size=64)
    return Path(ann), root / "images"


def _cfg(data, out: Path, **kw) -> TrainConfig:
    ann, images = data
    base = dict(data=str(ann), images=str(images), out=str(out), arch="tiny", arch_cfg=dict(ARCH_CFG), iters=3,
                batch_size=2, lr=1e-3, warmup=1, seed=0, ckpt_every=0, command="pytest", adv="pgd", eps=4 / 255,
                steps=2, adv_ratio=0.5)
    return TrainConfig(**{**base, **kw})


def _log(out: Path) -> list[dict]:
    with open(out.with_suffix(".log.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _batch(data, n=2):
    ds = CocoDataset(*data)
    return [ds.load_image(i) for i in range(n)], [ds.target(i) for i in range(n)]


def test_pgd_training_logs_clean_and_adversarial_losses(data8, tmp_path):
    out = tmp_path / "adv.pt"
    train(_cfg(data8, out), progress=False)
    rows = _log(out)
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    for r in rows:
        assert int(r["adv_images"]) == 1  # half of a batch of 2
        clean, adv = [float(r[p]) for p in PARTS], [float(r["adv_" + p]) for p in PARTS]
        assert all(math.isfinite(v) and v >= 0 for v in clean + adv)
        # the trained loss is the batch mean: each group's losses weighted by its share of the batch
        assert float(r["loss"]) == pytest.approx(0.5 * sum(clean) + 0.5 * sum(adv), rel=1e-4)
        assert float(r["images_per_s"]) > 0 and float(r["lr"]) > 0
    lm = load_model(out)
    adv = lm.meta["adversarial"]
    assert adv["kind"] == "pgd" and adv["steps"] == 2 and adv["ratio"] == 0.5
    assert adv["eps"] == pytest.approx(4 / 255) and adv["step_size"] == pytest.approx(2.5 * 4 / 255 / 2)
    assert lm.meta["train_config"]["adv"] == "pgd" and lm.meta["trained_on"]["sha256"]


def test_fgsm_rs_all_adversarial(data8, tmp_path):
    out = tmp_path / "fgsm.pt"
    train(_cfg(data8, out, adv="fgsm-rs", adv_ratio=1.0, iters=2), progress=False)
    rows = _log(out)
    assert all(int(r["adv_images"]) == 2 for r in rows)
    assert all(r["loss_mask"] == "nan" and math.isfinite(float(r["adv_loss_mask"])) for r in rows)
    assert load_model(out).meta["adversarial"]["step_size"] == pytest.approx(1.25 * 4 / 255)


def test_example_generation_leaves_the_model_untouched(data8):
    torch.manual_seed(0)
    model = build_model("tiny", 4, **ARCH_CFG).train()
    model.backbone.body.layer1.eval()  # a mixed-mode model: each module's own flag must come back
    images, targets = _batch(data8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    adv, is_adv = Adversary("pgd", eps=4 / 255, steps=2, ratio=0.5, seed=0)(model, images, targets, it=0)

    assert sum(is_adv) == 1
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert not changed, f"example generation changed {changed[:3]} (BN running stats must stay frozen)"
    assert [m.training for m in model.modules()] == flags
    assert all(p.requires_grad for p in model.parameters())
    for x, a, flag in zip(images, adv, is_adv):
        d = (a - x).abs().max().item()
        assert (0 < d <= 4 / 255 + 1e-6) if flag else d == 0
    # the check means something: a train-mode forward does move the running statistics
    model(images, targets)
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items() if "running_mean" in k)


def test_adversary_is_seeded_per_iteration(data8):
    model = build_model("tiny", 4, **ARCH_CFG).train()
    images, targets = _batch(data8)
    a = Adversary("fgsm-rs", ratio=1.0, seed=3)
    torch.manual_seed(1)
    x1, _ = a(model, images, targets, it=5)
    torch.manual_seed(1)
    x2, _ = a(model, images, targets, it=5)
    assert all(torch.equal(u, v) for u, v in zip(x1, x2))
    assert Adversary(ratio=0.5).choose(4, 0).count(True) == 2


def test_resume_adversarial_run_is_exact(data8, tmp_path, monkeypatch):
    ref_out, out = tmp_path / "ref" / "m.pt", tmp_path / "run" / "m.pt"
    train(_cfg(data8, ref_out, iters=4, ckpt_every=2), progress=False)
    real = loop.batch_indices

    def dying(n, bs, it, seed):  # dies after the checkpoint at 2, mid-way to the next one
        if it == 3:
            raise KeyboardInterrupt
        return real(n, bs, it, seed)

    monkeypatch.setattr(loop, "batch_indices", dying)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data8, out, iters=4, ckpt_every=2), progress=False)
    monkeypatch.undo()
    with pytest.raises(RobustsegError, match="different adv_ratio"):
        train(_cfg(data8, out, iters=4, ckpt_every=2, adv_ratio=1.0), resume=True, progress=False)
    train(_cfg(data8, out, iters=4, ckpt_every=2), resume=True, progress=False)
    assert [r["loss"] for r in _log(out)] == [r["loss"] for r in _log(ref_out)]
    ref, got = (torch.load(p, weights_only=True)["state_dict"] for p in (ref_out, out))
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_kill_and_resume_real_process(data8, tmp_path):
    """SIGKILL a CLI training process once it has written a checkpoint; --resume finishes the run."""
    ann, images = data8
    out, iters = tmp_path / "killed.pt", 8
    args = ["train", "--data", str(ann), "--images", str(images), "--out", str(out), "--iters", str(iters),
            "--batch-size", "2", "--warmup", "1", "--ckpt-every", "2", "--adv", "pgd", "--steps", "2"] + [
        a for k, v in ARCH_CFG.items() for a in ("--arch-opt", f"{k}={v}".replace(" ", ""))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "robustseg", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while not out.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert out.exists(), "no checkpoint was written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    at = torch.load(out, weights_only=True)["train_state"]["iteration"]
    assert 2 <= at < iters

    from robustseg.cli import main as cli_main
    assert cli_main(args + ["--resume"]) == 0
    lm = load_model(out)
    assert lm.meta["iteration"] == iters and lm.meta["resumed_at"] == [at]
    assert [int(r["iteration"]) for r in _log(out)] == list(range(iters))  # no gaps, no duplicates


def test_amp_is_refused_on_cpu(data8, tmp_path):
    with pytest.raises(RobustsegError, match="needs a CUDA device"):
        train(_cfg(data8, tmp_path / "amp.pt", amp="bf16"), progress=False)
    assert not (tmp_path / "amp.pt").exists()


def test_periodic_evaluation_rows(data8, tmp_path):
    ann, images = data8
    out = tmp_path / "ev.pt"
    train(_cfg(data8, out, iters=2, adv=None, eval_every=1, eval_data=str(ann), eval_images=str(images),
               eval_limit=2, eval_steps=1), progress=False)
    with open(out.with_suffix(".eval.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert all(0 <= float(r[k]) <= 1 for r in rows for k in ("clean_bbox_AP", "pgd_bbox_AP", "pgd_segm_AP"))


@pytest.mark.parametrize("bn", ["batch", "frozen"])
def test_bn_policy_decides_whether_training_moves_the_running_statistics(data8, tmp_path, bn):
    """--bn frozen: the running statistics the examples are crafted with are the ones trained with, and stay put
    (affine weights still learn); --bn batch: every sub-batch updates them."""
    torch.manual_seed(0)
    init = tmp_path / "init.pt"
    from robustseg.models import save_checkpoint
    save_checkpoint(init, build_model("tiny", 4, **ARCH_CFG), arch="tiny", arch_cfg=dict(ARCH_CFG),
                    class_names=["a", "b", "c"], category_ids=[1, 2, 3])
    out = tmp_path / f"{bn}.pt"
    train(_cfg(data8, out, init=str(init), bn=bn, iters=2), progress=False)
    before, after = load_model(init).model.state_dict(), load_model(out).model.state_dict()
    stats = [k for k in before if k.endswith("running_mean")]
    moved = [k for k in stats if not torch.equal(before[k], after[k])]
    affine = [k for k in before if k.endswith("bn1.weight")]
    assert stats and (moved == [] if bn == "frozen" else len(moved) == len(stats))
    assert any(not torch.equal(before[k], after[k]) for k in affine)
    assert load_model(out).meta["train_config"]["bn"] == bn


def test_unknown_bn_policy_is_refused(data8, tmp_path):
    with pytest.raises(RobustsegError, match="--bn"):
        train(_cfg(data8, tmp_path / "x.pt", bn="group"), progress=False)


def test_default_bn_policy_is_frozen_for_fine_tuning_and_recorded_resolved(data8, tmp_path):
    """The measured default (docs/adversarial-training.md): frozen with --init, batch statistics from scratch; the
    checkpoint records the policy used, not None."""
    from robustseg.training.config import default_bn
    assert default_bn(_cfg(data8, tmp_path / "a.pt")) == "batch"
    assert default_bn(_cfg(data8, tmp_path / "a.pt", init="x.pt")) == "frozen"
    assert default_bn(_cfg(data8, tmp_path / "a.pt", init="x.pt", bn="batch")) == "batch"
    out = tmp_path / "scratch.pt"
    train(_cfg(data8, out, iters=1), progress=False)
    assert load_model(out).meta["train_config"]["bn"] == "batch"


def test_resume_of_a_checkpoint_from_before_bn_takes_it_as_batch(data8, tmp_path):
    """A checkpoint written before --bn existed was trained with batch statistics: resuming it under today's
    fine-tuning default (frozen) is refused, with --bn batch it continues."""
    from dataclasses import asdict, replace

    from robustseg.training.start import resumed_meta
    cfg = _cfg(data8, tmp_path / "a.pt", init="x.pt")
    old_cfg = {k: v for k, v in asdict(cfg).items() if k != "bn"}
    state = {"meta": {"trained_on": {"sha256": "h"}, "train_config": old_cfg, "command": "old"}}
    with pytest.raises(RobustsegError, match="bn='batch'"):
        resumed_meta({"command": "new"}, state, replace(cfg, bn="frozen"), "h", 2)
    assert resumed_meta({"command": "new"}, state, replace(cfg, bn="batch"), "h", 2)["resumed_at"] == [2]
