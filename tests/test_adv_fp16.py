"""The training adversary under fp16 autocast (robustseg/training/adversarial.py): its loss is scaled before the
half-precision backward and the gradient divided back, so tiny input gradients do not underflow to exact zeros.
CPU autocast supports float16 on recent torch, which is enough to show the underflow and its fix."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustseg.amp import FP16_LOSS_SCALE
from robustseg.attacks.base import gradients
from robustseg.attacks.objectives import DetectorLoss
from robustseg.data.coco import CocoDataset
from robustseg.models import load_model
from robustseg.models.modes import attack_mode
from robustseg.training import Adversary
from robustseg.training.adversarial import Fp16LossScaled, training_objective


def _cpu_fp16_autocast_works() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return nn.Conv2d(1, 1, 1)(torch.ones(1, 1, 2, 2)).dtype == torch.float16
    except (RuntimeError, AssertionError):
        return False


pytestmark = pytest.mark.skipif(not _cpu_fp16_autocast_works(), reason="this torch has no CPU float16 autocast")


class _SmallLoss:
    """A loss ~1e-6 spread over every output pixel: its input gradient (~2e-8) is below fp16's smallest number."""
    name = "small"

    def __call__(self, model, images, targets):
        return model(torch.stack(images)).float().mean() * 1e-4, {}


def test_scaling_keeps_gradients_that_fp16_flushes_to_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
    x = [torch.rand(3, 32, 32)]
    g32 = gradients(model, _SmallLoss(), x, [{}])[0][0]
    with torch.autocast("cpu", dtype=torch.float16):
        plain, plain_loss = gradients(model, _SmallLoss(), x, [{}])
        scaled, scaled_loss = gradients(model, Fp16LossScaled(_SmallLoss()), x, [{}])
    plain, scaled = plain[0], scaled[0]
    assert (g32 != 0).all()
    assert (plain == 0).all()                      # unscaled: every input gradient underflowed
    assert (scaled != 0).all()                     # scaled: none did
    assert scaled.dtype == torch.float32
    assert torch.equal(scaled.sign(), g32.sign())
    # divided back: the true size, not FP16_LOSS_SCALE x (to half precision's few digits)
    assert (scaled - g32).abs().max() < 1e-2 * g32.abs().max()
    assert scaled_loss == plain_loss               # the loss value itself is not scaled


def test_shipped_model_gradient_has_no_underflow_zeros_when_scaled(synth_data):
    lm = load_model(None)
    ds = CocoDataset(*synth_data, category_ids=lm.category_ids)
    x, t = ds[0]
    grads = {}
    with attack_mode(lm.model), torch.autocast("cpu", dtype=torch.float16):
        for name, objective in (("plain", DetectorLoss()), ("scaled", Fp16LossScaled(DetectorLoss()))):
            torch.manual_seed(0)  # the same RPN / RoI samples for both
            grads[name] = gradients(lm.model, objective, [x], [t])[0][0]
    assert (grads["plain"] == 0).sum() > 0, "no underflow to show on this torch/CPU"
    assert (grads["scaled"] == 0).sum() < (grads["plain"] == 0).sum()


def test_adversary_scales_only_under_fp16_autocast(synth_data):
    assert not isinstance(training_objective("cpu"), Fp16LossScaled)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not isinstance(training_objective("cpu"), Fp16LossScaled)  # bf16 has float32's range
    with torch.autocast("cpu", dtype=torch.float16):
        assert training_objective("cpu").scale == FP16_LOSS_SCALE
    lm = load_model(None)
    ds = CocoDataset(*synth_data, category_ids=lm.category_ids)
    images, targets = [ds.load_image(i) for i in range(2)], [ds.target(i) for i in range(2)]
    lm.model.train()
    with torch.autocast("cpu", dtype=torch.float16):
        adv, is_adv = Adversary("pgd", 4 / 255, 2, ratio=1.0)(lm.model, images, targets, it=0)
    assert is_adv == [True, True]
    assert all(0 < (a - x).abs().max() <= 4 / 255 + 1e-6 for a, x in zip(adv, images))
