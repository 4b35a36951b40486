"""The run's progress bar (robustseg/run/progress.py): weighted by cost, naming the point being worked on, with an
ETA that holds. Driven by a fake clock that charges the model's real calls what they would cost (a prediction 1 s
per image, a forward pass with input gradients 2.5 s per image: deliberately not the bar's own weight of 3), over a
mixed suite whose points differ tenfold in cost."""
from __future__ import annotations

import pytest
import torch

from robustseg.data.synth import generate
from robustseg.kinds.attack import run_suite
from robustseg.run import progress as progress_mod
from robustseg.suites import parse_suite

from _helpers import load_trained_model

SUITE = {"name": "mixed", "attack": [{"type": "fgsm", "eps": ["2/255"]},
                                     {"type": "pgd", "eps": ["4/255"], "steps": 10}]}  # + clean and random


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_eta_is_within_a_quarter_of_the_true_remaining_time_after_a_tenth_of_the_work(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("tqdm.std.time", clock)  # every bar made from now on reads the fake clock
    lm = load_trained_model()

    def charge(module, args):
        images = args[0]
        grad = torch.is_grad_enabled() and any(x.requires_grad for x in images)
        clock.now += len(images) * (2.5 if grad else 1.0)
    handle = lm.model.register_forward_pre_hook(charge)
    samples, shown = [], set()
    real_call = progress_mod.Progress.__call__

    def record(self, units, point=None):
        real_call(self, units, point)
        if point:
            shown.add(point)
        samples.append((self.bar.n / self.bar.total, clock.now, self.eta()))
    monkeypatch.setattr(progress_mod.Progress, "__call__", record)
    monkeypatch.setattr(progress_mod.Progress, "update", record)
    try:
        ann = generate(tmp_path / "d", 8, seed=51, size=64)
        run_suite(lm, parse_suite(SUITE, "mixed"), ann, tmp_path / "d" / "images", out=tmp_path / "run",
                  batch_size=2, sanity_images=0, bootstrap=0, progress=True)
    finally:
        handle.remove()
    end = samples[-1][1]
    assert samples[-1][0] == pytest.approx(1.0)
    checked = [(f, (eta - (end - t)) / (end - t)) for f, t, eta in samples if 0.1 <= f < 0.95 and end > t]
    assert len(checked) >= 10
    worst = max(abs(e) for _, e in checked)
    assert worst <= 0.25, f"ETA off by {worst:.0%} of the true remaining time"
    assert {"clean", "fgsm-linf-eps0.007843-s1", "pgd-linf-eps0.015686-s10"} <= shown


def test_resumed_work_moves_the_bar_but_not_the_rate(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("tqdm.std.time", clock)
    p = progress_mod.Progress(100, "t", enabled=True)
    p.skip(50)            # found done: no time passed
    clock.now += 10
    p(10)                 # 10 units in 10 s: 40 left take 40 s
    assert p.eta() == pytest.approx(40.0)
    p.close()
