"""The sanity checks on models masked on purpose (issue #16): each masking mechanism must end the run "warn" with
the check that caught it named, and the shipped model, run the same way, must pass every check.

Each variant is the shipped model with one change at its input or its scores:
- noise gradient: the forward is exact, the input gradient is Gaussian noise;
- partly corrupted gradient: the forward is exact, the backward adds three times the true gradient's size in noise,
  drawn from the input itself so that the same input always gets the same gradient (white-box attacks weaken but
  still beat noise and raise the loss, and nothing is random for the determinism check to see);
- shattered gradient: pixels quantised with round() before the normalisation (zero gradient almost everywhere);
- randomised transform: a random resize of every input (a randomised defence, which needs EOT);
- saturating scores: class and objectness logits multiplied by 1000, so their softmax saturates.

One small configuration for all (4 images, FGSM and PGD-5 at 8/255, Square with 10 queries, the masking probe at
5 steps), so that a check cannot pass on the shipped model by being given more work than the masked ones.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from _helpers import ATTACK_DATA_SEED, load_trained_model

from robustseg import run_suite, sanity
from robustseg.data.synth import generate
from robustseg.suites import parse_suite

N_IMAGES = 4
SUITE = parse_suite({"attack": [{"type": "fgsm", "eps": ["8/255"]}, {"type": "pgd", "eps": ["8/255"], "steps": 5},
                                {"type": "square", "eps": ["8/255"], "steps": 10}]}, name="masked-test")


class _Noise(torch.autograd.Function):
    """Identity forward; backward: ``keep`` x the true gradient + Gaussian noise of ``noise`` x its size, drawn from
    the global RNG or, with ``fixed``, from a generator seeded by the input (the same input, the same noise)."""

    @staticmethod
    def forward(ctx, x, keep: float, noise: float, fixed: bool):
        ctx.keep, ctx.noise = keep, noise
        ctx.gen = torch.Generator().manual_seed(int(x.double().sum() * 1e6) % 2**31) if fixed else None
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        size = g.norm() / math.sqrt(g.numel())
        noise = torch.randn(g.shape, generator=ctx.gen) if ctx.gen is not None else torch.randn_like(g)
        return ctx.keep * g + ctx.noise * size * noise.to(g), None, None, None


def _before_normalisation(lm, fn):
    normalize = lm.model.transform.normalize
    lm.model.transform.normalize = lambda x: normalize(fn(x))
    return lm


def noise_gradient(lm):
    return _before_normalisation(lm, lambda x: _Noise.apply(x, 0.0, 1.0, False))


def partly_corrupted_gradient(lm):
    return _before_normalisation(lm, lambda x: _Noise.apply(x, 1.0, 3.0, True))


def shattered_gradient(lm):
    return _before_normalisation(lm, lambda x: torch.round(x * 255) / 255)


def randomised_transform(lm):
    def resize(x):
        h, w = x.shape[-2:]
        s = float(torch.empty(()).uniform_(0.75, 1.0))
        small = F.interpolate(x[None], size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear")
        return F.interpolate(small, size=(h, w), mode="bilinear")[0]
    return _before_normalisation(lm, resize)


class _Scaled(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, factor: float):
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x):
        return self.inner(x) * self.factor


def saturating_scores(lm):
    m = lm.model
    m.roi_heads.box_predictor.cls_score = _Scaled(m.roi_heads.box_predictor.cls_score, 1000.0)
    m.rpn.head.cls_logits = _Scaled(m.rpn.head.cls_logits, 1000.0)
    return lm


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("masked-data")
    return generate(root, N_IMAGES, seed=ATTACK_DATA_SEED), root / "images"


def _checks(lm, data, out) -> tuple[str, dict[str, list[dict]]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sanity, "PROBE", {**sanity.PROBE, "steps": 5})
        result = run_suite(lm, SUITE, *data, out=out, progress=False, checks="full", bootstrap=100)
    report = json.loads((out / "sanity.json").read_text())
    assert sanity.verdict_line(report) in result.summary()  # the run's last line names the checks that warned
    by_name: dict[str, list[dict]] = {}
    for c in report["checks"]:
        by_name.setdefault(c["check"], []).append(c)
    for c in by_name.get("moderate_eps", []):  # the probe stops early only on a pass; a warn took every step
        assert c["steps_taken"] == c["steps"] or c["verdict"] == "pass", c
    return report["verdict"], by_name


def test_the_shipped_model_passes_every_check(data, tmp_path):
    verdict, checks = _checks(load_trained_model(), data, tmp_path / "run")
    failing = [c["detail"] for cs in checks.values() for c in cs if c["verdict"] != "pass"]
    assert verdict == "pass" and not failing, failing
    assert {"beats_random", "pgd_vs_fgsm", "black_box", "loss_increased", "gradients",
            "moderate_eps", "deterministic", "gradient_fidelity", "saturated_scores"} <= set(checks)
    probe = checks["moderate_eps"][0]  # it had its answer before the last step, and stopped there
    assert probe["steps_taken"] < probe["steps"] and "stopped after" in probe["detail"], probe


@pytest.mark.parametrize("mask, caught_by", [
    (noise_gradient, "deterministic"),
    (partly_corrupted_gradient, "gradient_fidelity"),
    (shattered_gradient, "gradients"),
    (randomised_transform, "deterministic"),
    (saturating_scores, "saturated_scores"),
])
def test_a_masked_model_warns_and_names_the_check_that_caught_it(mask, caught_by, data, tmp_path):
    verdict, checks = _checks(mask(load_trained_model()), data, tmp_path / "run")
    warned = sorted({name for name, cs in checks.items() if any(c["verdict"] == "warn" for c in cs)})
    print(mask.__name__, warned, [c["detail"] for cs in checks.values() for c in cs if c["verdict"] == "warn"])
    assert verdict == "warn" and caught_by in warned, warned
