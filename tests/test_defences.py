"""Defences are models too (robustseg/models/defence.py): a Mask R-CNN with a preprocessing step, handed to every
kind's Python API; BPDA for a declared non-differentiable step; EOT for a randomised one (attacks/eot.py)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import robustseg as rs
from robustseg.attacks.eot import EOT, with_eot
from robustseg.data.synth import generate
from robustseg.errors import RobustsegError
from robustseg.suites import parse_suite

from _helpers import load_trained_model, metric

PGD = parse_suite({"attack": [{"type": "pgd", "eps": ["8/255"], "steps": 3}]}, "pgd")
FGSM = parse_suite({"attack": [{"type": "fgsm", "eps": ["8/255"]}]}, "fgsm")
KW = dict(limit=4, batch_size=2, progress=False, sanity_images=0, bootstrap=0)


class Quantised(torch.nn.Module):
    """A defence with a non-differentiable step: 4-bit colour quantisation (zero gradient almost everywhere)."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def preprocess(self, x):
        return torch.round(x * 15) / 15


class RandomResize(torch.nn.Module):
    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def preprocess(self, x):
        h, w = x.shape[-2:]
        s = float(torch.empty(()).uniform_(0.7, 1.0))
        small = F.interpolate(x[None], size=(round(h * s), round(w * s)), mode="bilinear")
        return F.interpolate(small, size=(h, w), mode="bilinear")[0]


def test_a_shattering_defence_stops_pgd_and_bpda_breaks_it(tmp_path):
    lm = load_trained_model()
    defended = rs.as_model(Quantised(lm.model), lm.class_names, lm.category_ids, name="quantised")
    bpda = rs.as_model(Quantised(lm.model), lm.class_names, lm.category_ids, bpda=True, name="quantised-bpda")
    key = "pgd-linf-eps0.031373-s3"
    plain = rs.run_suite(defended, PGD, out=tmp_path / "plain", **KW).metrics
    through = rs.run_suite(bpda, PGD, out=tmp_path / "bpda", **KW).metrics
    assert metric(plain, "clean") == metric(through, "clean")  # BPDA changes the backward only
    assert metric(plain, key) > metric(plain, "clean") - 0.1   # the masked gradient: PGD hardly moves AP
    assert metric(through, key) < metric(plain, key) - 0.15    # through the straight-through estimate it does
    assert lm.model.transform.__class__.__name__ == "GeneralizedRCNNTransform"  # the user's model is untouched
    info = json.loads((tmp_path / "bpda" / "run.json").read_text())["model"]
    assert info["arch_cfg"] == {"defence": "Quantised", "preprocess": True, "bpda": True}
    assert info["sha256"] != json.loads((tmp_path / "plain" / "run.json").read_text())["model"]["sha256"]


def test_a_defence_goes_through_every_kind(tmp_path):
    lm = load_trained_model()
    defended = rs.as_model(Quantised(lm.model), lm.class_names, lm.category_ids)
    clean = metric(rs.run_suite(defended, PGD, out=tmp_path / "a", **KW).metrics, "clean")
    opts = dict(limit=2, progress=False, bootstrap=0)
    for run in (lambda: rs.run_corruptions(defended, corruptions="gaussian_noise", severities="3",
                                           out=tmp_path / "c", **opts),
                lambda: rs.run_probes(defended, probes="silhouette", out=tmp_path / "p", **opts),
                lambda: rs.run_gradnorms(defended, out=tmp_path / "g", **opts)):
        m = run().metrics
        assert "clean" in set(m.point)
    assert metric(rs.run_probes(defended, probes="silhouette", out=tmp_path / "p4", limit=4, progress=False,
                                bootstrap=0).metrics, "clean") == clean  # the defended model, every kind alike


def test_eot_averages_the_objective_over_passes():
    calls = []

    def objective(model, images, targets):
        calls.append(1)
        return images[0].sum() * len(calls), {}
    x = torch.ones(1, 2, 2, requires_grad=True)
    loss, _ = EOT(objective, 4)(None, [x], [{}])
    assert len(calls) == 4 and float(loss.detach()) == pytest.approx(4 * (1 + 2 + 3 + 4) / 4)
    (g,) = torch.autograd.grad(loss, [x])
    assert torch.allclose(g, torch.full_like(x, (1 + 2 + 3 + 4) / 4))  # the mean of the four gradients
    assert with_eot(objective, 1) is objective


def test_eot_on_a_randomised_defence_is_recorded_and_costed(tmp_path):
    lm = load_trained_model()
    defended = rs.as_model(RandomResize(lm.model), lm.class_names, lm.category_ids)
    res = rs.run_suite(defended, PGD, out=tmp_path / "eot", eot=3, **KW)
    info = json.loads((res.out / "run.json").read_text())
    assert info["attack"]["eot"] == 3
    from robustseg.kinds.attack import AttackSweep
    from robustseg.run import GRADIENT_COST
    p = next(q for q in PGD.points if q.attack == "pgd")
    assert AttackSweep(PGD, eot=3).point_cost(p) - AttackSweep(PGD).point_cost(p) == 2 * 3 * GRADIENT_COST
    with pytest.raises(RobustsegError, match="eot"):
        rs.run_suite(defended, PGD, out=tmp_path / "bad", eot=0, **KW)


def test_with_enough_eot_passes_a_randomised_defence_passes_the_determinism_check(tmp_path, monkeypatch):
    """--eot N declares the model randomised: the check then asks whether two N-pass gradients agree (cosine 0.9),
    which one pass does not give on a random resize (about 0.7 on this image) and 8 do (about 0.97); the probe's
    gradients take N passes too."""
    from robustseg import sanity
    monkeypatch.setattr(sanity, "PROBE", {**sanity.PROBE, "steps": 1, "ladder": sanity.PROBE["ladder"][:1]})
    lm = load_trained_model()
    defended = rs.as_model(RandomResize(lm.model), lm.class_names, lm.category_ids)
    ann = generate(tmp_path / "d", 2, seed=57, size=64)
    kw = {**KW, "limit": 2, "sanity_images": 1, "checks": "full"}
    checks = {}
    for eot in (1, 8):
        res = rs.run_suite(defended, FGSM, ann, tmp_path / "d" / "images", out=tmp_path / f"eot{eot}", eot=eot, **kw)
        report = json.loads((res.out / "sanity.json").read_text())
        checks[eot] = next(c for c in report["checks"] if c["check"] == "deterministic")
    assert checks[1]["verdict"] == "warn" and checks[1]["eot"] == 1 and checks[1]["gradient_cosine"] < 0.9
    assert checks[8]["verdict"] == "pass" and checks[8]["eot"] == 8 and checks[8]["gradient_cosine"] >= 0.9
    assert checks[8]["prediction_diff"] > 0  # the model is still random: predictions are not what is judged
    assert "--eot 8 passes" in checks[8]["detail"]


def test_a_defence_object_is_a_transfer_target_beside_checkpoints(tmp_path):
    """run_transfer takes the defence itself, as every other kind's API does: PGD crafted on the shipped model
    (a file) against the quantising defence (an object), the white-box row its own, the run named after it."""
    import pandas as pd
    lm = load_trained_model()
    defended = rs.as_model(Quantised(lm.model), lm.class_names, lm.category_ids, name="quantised")
    csv = rs.run_transfer([None, defended], [defended], tmp_path / "t", suite=PGD, limit=2, batch_size=2,
                          progress=False, bootstrap=0)
    df = pd.read_csv(csv)
    assert set(df.target) == {"quantised"} and set(df.source) == {"quantised", "shipped"}
    white = df[df.whitebox & (df.iou_type == "bbox")]
    assert len(white) == 1 and white.source.iloc[0] == "quantised"  # one object as source and target: one model
    assert (tmp_path / "t" / "quantised" / "run.json").is_file()


def test_something_that_is_not_a_detector_is_refused():
    with pytest.raises(RobustsegError, match="MaskRCNN"):
        rs.as_model(torch.nn.Linear(2, 2))
