"""robustseg transfer: attacks crafted on each source, evaluated on each target (kinds/transfer.py,
robustseg/transfer.py): the matrix, its white-box diagonal, the check that a transfer attack must not beat the
white-box one, resume and torchrun."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from robustseg import run_suite
from robustseg.cli import main
from robustseg.kinds.transfer import Transfer
from robustseg.models import save_checkpoint
from robustseg.run import RunOptions, execute
from robustseg.suites import parse_suite, single_attack_suite
from robustseg.transfer import run_transfer

from _helpers import load_trained_model, trained_model_path

SUITE = {"attack": [{"type": "pgd", "eps": ["8/255"], "steps": 2}]}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> list[str]:
    """The shipped model, and a copy with its input layer scaled: another model, other gradients."""
    lm = load_trained_model()
    with torch.no_grad():
        lm.model.backbone.body.stem[0].weight.mul_(0.8)
    path = tmp_path_factory.mktemp("ckpt_b") / "scaled.pt"
    save_checkpoint(path, lm.model, arch=lm.arch, arch_cfg=lm.arch_cfg, class_names=lm.class_names,
                    category_ids=lm.category_ids)
    return [str(trained_model_path()), str(path)]


KW = dict(limit=4, batch_size=2, progress=False)
NAMES = {"shipped": trained_model_path().stem, "scaled": "scaled"}


@pytest.fixture(scope="module")
def matrix(ckpts, tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer") / "run"
    return run_transfer(ckpts, ckpts, out, suite=parse_suite(SUITE, "t"), **KW)


def test_matrix_has_every_pair_and_a_whitebox_diagonal(matrix, tmp_path):
    df = pd.read_csv(matrix)
    a, b = NAMES["shipped"], NAMES["scaled"]
    assert set(zip(df.source, df.target)) == {(a, a), (a, b), (b, a), (b, b)}
    assert len(df) == 4 * 2 and set(df.iou_type) == {"bbox", "segm"}
    assert (df.whitebox == (df.source == df.target)).all()
    assert (df.ci_lo <= df.ap + 1e-9).all() and (df.ap <= df.ci_hi + 1e-9).all()
    # the white-box cell is the attack sweep's point on that target: same seeds, same images
    sweep = run_suite(load_trained_model(), parse_suite(SUITE, "t"), out=tmp_path / "sweep", sanity_images=0, **KW)
    m = sweep.metrics
    for t in ("bbox", "segm"):
        want = m[(m.point == "pgd-linf-eps0.031373-s2") & (m.iou_type == t) & (m.metric == "AP")].value.iloc[0]
        got = df[(df.source == a) & (df.target == a) & (df.iou_type == t)].ap.iloc[0]
        assert got == pytest.approx(want, abs=1e-6)
    off = df[~df.whitebox]
    assert not off.ap.equals(df[df.whitebox].ap)  # other gradients, other images
    html = (matrix.parent / "report" / "report.html").read_text()
    assert 'id="transfer"' in html and f'data-source="{b}"' in html and "(white-box)" in html


def test_interrupted_transfer_resumes_to_the_same_matrix(matrix, ckpts, tmp_path, monkeypatch):
    kw = dict(suite=parse_suite(SUITE, "t"), **KW)
    real, calls = Transfer.work, []

    def dies_in_the_second_target(self, ctx, batch):
        calls.append(1)
        if len(calls) == 3:  # two batches per target: the second target's first batch
            raise KeyboardInterrupt
        return real(self, ctx, batch)
    monkeypatch.setattr(Transfer, "work", dies_in_the_second_target)
    with pytest.raises(KeyboardInterrupt):
        run_transfer(ckpts, ckpts, tmp_path / "run", **kw)
    monkeypatch.setattr(Transfer, "work", real)
    assert json.loads((tmp_path / "run" / NAMES["shipped"] / "run.json").read_text())["status"] == "complete"
    path = run_transfer(ckpts, ckpts, tmp_path / "run", resume=True, **kw)
    assert path.read_bytes() == matrix.read_bytes()


def test_a_transfer_attack_beating_the_whitebox_one_warns(tmp_path):
    """A target whose input gradient is pure noise (predictions exact): PGD through its own gradient does little,
    the same PGD crafted on the unmasked model does a lot: the check warns and names the source. The shipped
    model attacked through a weaker surrogate passes."""
    class Noise(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, g):
            return g.norm() / math.sqrt(g.numel()) * torch.randn_like(g)

    masked = load_trained_model()
    normalize = masked.model.transform.normalize
    masked.model.transform.normalize = lambda x: normalize(Noise.apply(x))
    suite = parse_suite(SUITE, "t")
    opts = dict(limit=4, batch_size=2, progress=False, bootstrap=100)
    res = execute([Transfer(suite, [("shipped", load_trained_model())], "masked")], masked,
                  opts=RunOptions(**opts), out=tmp_path / "masked")
    checks = json.loads((res.out / "run.json").read_text())["transfer_checks"]
    assert checks["verdict"] == "warn" and checks["checks"][0]["source"] == "shipped"
    assert checks["checks"][0]["ci_hi"] < 0
    assert "transfer check: warn: shipped at " in res.summary()  # the run's last word names the transfer
    weak = load_trained_model()
    with torch.no_grad():  # a surrogate far from the target: its attack transfers worse than the white-box one
        weak.model.backbone.body.stem[0].weight.mul_(0.2)
    res = execute([Transfer(suite, [("weak", weak)], "shipped")], load_trained_model(), opts=RunOptions(**opts),
                  out=tmp_path / "shipped")
    assert json.loads((res.out / "run.json").read_text())["transfer_checks"]["verdict"] == "pass"
    assert res.summary().endswith("transfer check: pass (no attack crafted on another model beat the white-box one)")


@pytest.mark.slow
def test_torchrun_two_processes_give_the_matrix_of_one(matrix, ckpts, tmp_path):
    suite = tmp_path / "t.toml"
    suite.write_text('[[attack]]\ntype = "pgd"\neps = ["8/255"]\nsteps = 2\n')
    args = ["transfer", "--source", *ckpts, "--target", *ckpts, "--suite", str(suite), "--limit", "4",
            "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        "29547", "-m", "robustseg", *args, "--out", str(tmp_path / "two")], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "two" / "transfer.csv").read_bytes() == matrix.read_bytes()
    assert json.loads((tmp_path / "two" / NAMES["shipped"] / "run.json").read_text())["world_size"] == 2


def test_bad_transfer_input_is_one_line(capsys, tmp_path):
    assert main(["transfer", "--source", str(tmp_path / "nope.pt"), "--target", "shipped",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.pt" in err
    with pytest.raises(Exception, match="gradient attack"):
        Transfer(single_attack_suite("random", "8/255"), [], "x")
