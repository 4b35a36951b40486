"""Training: the loss goes down, checkpoints load, resuming after a kill reproduces an uninterrupted run."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import robustseg.training.loop as loop
from robustseg.data.synth import generate
from robustseg.errors import RobustsegError
from robustseg.models import load_model
from robustseg.training import TrainConfig, train
from robustseg.training.loop import batch_indices

# an even tinier "tiny": 64 px inputs, narrow FPN and heads; 30 iterations take a few seconds on one core
ARCH_CFG = {"min_size": 64, "max_size": 64, "fpn_channels": 32, "box_head_dim": 64, "mask_head_channels": 16,
            "anchor_sizes": [8, 16, 32, 64]}


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train_data")
    ann = generate(root, 16, seed=0, size=64)
    return Path(ann), root / "images"


def _cfg(train_data, out: Path, **kw) -> TrainConfig:
    ann, images = train_data
    base = dict(data=str(ann), images=str(images), out=str(out), arch="tiny", arch_cfg=dict(ARCH_CFG), iters=30,
                batch_size=2, lr=1e-3, warmup=5, seed=0, ckpt_every=0, command="pytest")
    return TrainConfig(**{**base, **kw})


def _log(out: Path) -> list[dict]:
    with open(out.with_suffix(".log.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _raw(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def trained(train_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "model.pt"
    assert train(_cfg(train_data, out), progress=False) == out
    return out


def test_loss_goes_down(trained):
    rows = _log(trained)
    assert [int(r["iteration"]) for r in rows] == list(range(30))
    losses = [float(r["loss"]) for r in rows]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    parts = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
    assert all(set(parts) <= set(r) for r in rows)
    assert all(abs(float(r["loss"]) - sum(float(r[p]) for p in parts)) < 1e-3 for r in rows)


def test_final_checkpoint_loads(trained, train_data):
    raw = _raw(trained)
    assert "train_state" not in raw  # a finished run keeps only what inference needs
    assert raw["meta"]["iteration"] == 30 and raw["meta"]["train_config"]["iters"] == 30
    assert raw["meta"]["trained_on"]["annotations"] == str(train_data[0])
    lm = load_model(trained)
    assert lm.arch == "tiny" and lm.arch_cfg == ARCH_CFG
    assert lm.class_names == ["circle", "square", "triangle"] and lm.category_ids == [1, 2, 3]
    assert lm.meta["iteration"] == 30
    sd = raw["state_dict"]
    assert all(torch.equal(sd[k].float() if sd[k].is_floating_point() else sd[k], v)
               for k, v in lm.model.state_dict().items())
    with torch.no_grad():
        out = lm.model([torch.rand(3, 64, 64)])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"}


def test_half_final_checkpoint(train_data, tmp_path):
    out = tmp_path / "half.pt"
    train(_cfg(train_data, out, iters=2, half=True), progress=False)
    sd = _raw(out)["state_dict"]
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    assert all(p.dtype == torch.float32 for p in load_model(out).model.parameters())


class _Killed(Exception):
    pass


def _kill_at(monkeypatch, kill_it: int) -> None:
    """Make the run die when it asks for the batch of iteration ``kill_it`` (as a SIGKILL between checkpoints)."""
    real = loop.batch_indices

    def dying(n, bs, it, seed):
        if it == kill_it:
            raise _Killed(f"killed at iteration {it}")
        return real(n, bs, it, seed)

    monkeypatch.setattr(loop, "batch_indices", dying)


def test_resume_after_kill_matches_uninterrupted_run(train_data, tmp_path, monkeypatch):
    n_iters, every = 8, 4
    ref_out, out = tmp_path / "ref" / "model.pt", tmp_path / "resumed" / "model.pt"
    train(_cfg(train_data, ref_out, iters=n_iters, ckpt_every=every), progress=False)

    cfg = _cfg(train_data, out, iters=n_iters, ckpt_every=every)
    _kill_at(monkeypatch, every + 2)
    with pytest.raises(_Killed):
        train(cfg, progress=False)
    monkeypatch.undo()
    raw = _raw(out)
    assert raw["meta"]["iteration"] == every and raw["train_state"]["iteration"] == every
    assert [int(r["iteration"]) for r in _log(out)] == list(range(every))  # rows of a checkpointed stretch only

    with pytest.raises(RobustsegError, match="--resume"):
        train(cfg, progress=False)  # the run's output exists: refuse to start over silently
    train(cfg, resume=True, progress=False)

    rows = _log(out)
    assert [int(r["iteration"]) for r in rows] == list(range(n_iters))  # resumed rows start at the checkpoint
    ref_rows = _log(ref_out)
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]
    final, ref = _raw(out), _raw(ref_out)
    assert final["meta"]["iteration"] == n_iters and "train_state" not in final
    differ = [k for k in ref["state_dict"] if not torch.equal(ref["state_dict"][k], final["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"


def test_resume_needs_a_resumable_checkpoint(train_data, trained, tmp_path):
    with pytest.raises(RobustsegError, match="no checkpoint"):
        train(_cfg(train_data, tmp_path / "none.pt"), resume=True, progress=False)
    with pytest.raises(RobustsegError, match="no training state"):
        train(_cfg(train_data, trained), resume=True, progress=False)  # finished run: nothing to resume


def test_existing_output_without_resume_is_refused(train_data, trained):
    before = trained.read_bytes()
    with pytest.raises(RobustsegError, match="exists"):
        train(_cfg(train_data, trained), progress=False)
    assert trained.read_bytes() == before


@pytest.mark.parametrize("n,bs,seed", [(10, 3, 0), (16, 2, 5), (7, 4, 1)])
def test_batch_indices_cover_each_index_once_per_epoch(n, bs, seed):
    epochs = 3
    iters = epochs * n // bs + 1
    flat = [i for it in range(iters) for i in batch_indices(n, bs, it, seed)]
    assert all(len(batch_indices(n, bs, it, seed)) == bs for it in range(3))
    for e in range(epochs):
        assert sorted(flat[e * n:(e + 1) * n]) == list(range(n))
    assert [batch_indices(n, bs, it, seed) for it in range(iters)] == [
        batch_indices(n, bs, it, seed) for it in range(iters)]  # a pure function of (n, bs, it, seed)
    assert flat[:n] != flat[n:2 * n] or flat[n:2 * n] != flat[2 * n:3 * n]  # reshuffled per epoch
    other = [i for it in range(iters) for i in batch_indices(n, bs, it, seed + 1)]
    assert other != flat


def test_cli_train_and_resume_flags(train_data, tmp_path, capsys):
    from robustseg.cli import main as cli_main
    ann, images = train_data
    out = tmp_path / "cli.pt"
    args = ["train", "--data", str(ann), "--images", str(images), "--out", str(out), "--iters", "2",
            "--batch-size", "1", "--warmup", "1", "--ckpt-every", "0"] + [
        a for k, v in ARCH_CFG.items() for a in ("--arch-opt", f"{k}={v}".replace(" ", ""))]
    assert cli_main(args) == 0
    assert load_model(out).arch_cfg == ARCH_CFG
    assert cli_main(args) == 2 and "exists" in capsys.readouterr().err
    assert cli_main(args + ["--force"]) == 0
    # --force starts over: the log holds the new run only, not the old run's rows followed by the new ones
    assert [int(r["iteration"]) for r in _log(out)] == [0, 1]


def test_resume_fine_tuning_run(train_data, trained, tmp_path, monkeypatch):
    """A fine-tuning run (--init) whose model differs from the config's arch/arch_cfg resumes as that model."""
    ref_out, out = tmp_path / "ref" / "ft.pt", tmp_path / "resumed" / "ft.pt"
    kw = dict(init=str(trained), arch_cfg={}, iters=4, ckpt_every=2, lr=1e-4, warmup=1)
    train(_cfg(train_data, ref_out, **kw), progress=False)
    assert load_model(ref_out).arch_cfg == ARCH_CFG  # the init model's architecture, not the default tiny

    cfg = _cfg(train_data, out, **kw)
    _kill_at(monkeypatch, 3)
    with pytest.raises(_Killed):
        train(cfg, progress=False)
    monkeypatch.undo()
    assert _raw(out)["meta"]["iteration"] == 2
    train(cfg, resume=True, progress=False)
    final, ref = _raw(out), _raw(ref_out)
    assert final["arch_cfg"] == ARCH_CFG and final["category_ids"] == ref["category_ids"]
    assert all(torch.equal(ref["state_dict"][k], final["state_dict"][k]) for k in ref["state_dict"])
