"""The speed options of an attack run: mixed precision (--amp) and image decoding in worker processes
(--workers). bf16 autocast runs on a CPU too, so its gradients are checked here against float32; fp16 and
channels_last need CUDA (benchmarks/gpu.py checks them on a GPU)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from robustseg.attacks.base import gradients
from robustseg.attacks.objectives import Autocast, DetectorLoss, with_amp
from robustseg.cli import main
from robustseg.data.coco import CocoDataset
from robustseg.data.synth import generate
from robustseg.models import attack_mode
from robustseg import run_suite
from robustseg.suites import parse_suite

from _helpers import load_trained_model, trained_model_path

SUITE = {"attack": [{"type": "fgsm", "eps": ["8/255"]}, {"type": "pgd", "eps": ["8/255"], "steps": 3}]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    return generate(root, 6, seed=53), root / "images"


def test_bf16_input_gradients_agree_with_float32(data):
    lm = load_trained_model()
    ds = CocoDataset(*data, category_ids=lm.category_ids, limit=4)
    images, targets = zip(*(ds[i] for i in range(len(ds))))
    objective = DetectorLoss()
    with attack_mode(lm.model):
        torch.manual_seed(0)
        g32, _ = gradients(lm.model, objective, list(images), list(targets))
        torch.manual_seed(0)  # the same RPN/RoI sampler draws
        g16, _ = gradients(lm.model, with_amp(objective, "bf16", "cpu"), list(images), list(targets))
    # measured on these images: cosine 0.79-0.94, 81-92% of the larger half of the entries with the same sign
    # (float32 repeated: 1.000); bf16 keeps 8 bits of mantissa, so the direction is close, not equal. What must
    # hold is that the attack is as strong: test_amp_run_attacks_as_well_and_workers_change_nothing
    coss = []
    for a, b in zip(g32, g16):
        cos = float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))
        big = a.abs() > a.abs().quantile(0.5)  # the sign of near-zero entries is noise in any precision
        sign_agree = float((a.sign() == b.sign())[big].float().mean())
        assert b.dtype == torch.float32 and cos > 0.7 and sign_agree > 0.75, (cos, sign_agree)
        coss.append(cos)
    assert sum(coss) / len(coss) > 0.8, coss


def test_amp_run_attacks_as_well_and_workers_change_nothing(data, tmp_path, capsys):
    lm = load_trained_model()
    suite = parse_suite(SUITE)
    ref = run_suite(lm, suite, *data, out=tmp_path / "fp32", progress=False, sanity_images=0)
    amp = run_suite(lm, suite, *data, out=tmp_path / "bf16", progress=False, sanity_images=0, amp="bf16")
    par = run_suite(lm, suite, *data, out=tmp_path / "workers", progress=False, sanity_images=0, workers=2)
    assert (par.out / "metrics.csv").read_bytes() == (ref.out / "metrics.csv").read_bytes()
    assert json.loads((amp.out / "run.json").read_text())["amp"] == "bf16"

    def ap(res, point):
        m = res.metrics
        return float(m[(m.point == point) & (m.iou_type == "bbox") & (m.metric == "AP")].value.iloc[0])
    pgd, noise = "pgd-linf-eps0.031373-s3", "random-linf-eps0.031373-s0"
    clean = ap(ref, "clean")
    assert ap(amp, "clean") == clean  # predictions stay float32
    drop32, drop16 = clean - ap(ref, pgd), clean - ap(amp, pgd)
    assert drop16 > clean - ap(amp, noise) + 0.1 and abs(drop16 - drop32) < 0.1, (drop32, drop16)
    per = pd.read_csv(amp.out / "per_image.csv")
    assert (per.linf <= 8 / 255 + 1e-6).all()

    # fp16 needs CUDA: a one-line error before anything is written
    capsys.readouterr()  # what the runs above printed (their checks' plans)
    code = main(["attack", "--model", str(trained_model_path()), "--data", str(data[0]), "--images",
                 str(data[1]), "--attack", "fgsm", "--eps", "8/255", "--amp", "fp16", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "needs --device cuda" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_autocast_keeps_the_objective_name_and_vanish_selection():
    from robustseg.attacks.objectives import make_objective
    a = Autocast(make_objective("vanish"), "cpu", "bf16")
    assert a.name == "vanish" and a.per_image_objective is not None
    assert Autocast(DetectorLoss(), "cpu", "bf16").per_image_objective is None
