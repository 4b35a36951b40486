"""attacks/tap.py: the sanity checks read the input gradient's health from the attack's own first gradient
evaluation. The recorded gradient must be the raw one (non-finite entries kept), at the attack's first point,
with the fp16 loss scale divided out, and zero where no gradient flowed."""
from __future__ import annotations

import torch

from robustseg.attacks import APGD, FGSM, PGD
from robustseg.attacks.base import gradients
from robustseg.attacks.objectives import make_objective
from robustseg.attacks.tap import GradientTap
from robustseg.data import CocoDataset
from robustseg.models.modes import attack_mode

from _helpers import load_trained_model


NOMODEL = torch.nn.Identity()  # the toy objectives below never call a model


def _images(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


def _quadratic(model, xs, targets):  # an objective of the images alone: its gradient is 2 (x - 0.3)
    return sum(((x - 0.3) ** 2).sum() for x in xs), {}


def test_fgsm_records_the_gradient_at_the_clean_image():
    xs = _images()
    tap = GradientTap(_quadratic)
    FGSM()(NOMODEL, xs, [{}, {}], [4 / 255], tap)
    for g, x in zip(tap.gradients(), xs):
        assert torch.allclose(g, 2 * (x - 0.3))


def test_pgd_records_its_first_gradient_only():
    xs = _images()
    tap = GradientTap(_quadratic)
    PGD(steps=3, random_start=False)(NOMODEL, xs, [{}, {}], [8 / 255], tap)
    for g, x in zip(tap.gradients(), xs):  # the later iterates' gradients differ: the first one is kept
        assert torch.allclose(g, 2 * (x - 0.3))


def test_apgd_records_through_image_losses():
    xs = _images(3)
    tap = GradientTap(_quadratic)
    start = torch.Generator().manual_seed(5)
    APGD(steps=3)(NOMODEL, xs, [{}] * 3, [8 / 255], tap, start)
    grads = tap.gradients()
    assert len(grads) == 3  # one per image, although the objective has no batched image_losses of its own
    for g, x in zip(grads, xs):  # at the random start, within eps of the clean image
        assert (g / 2 + 0.3 - x).abs().max() <= 8 / 255 + 1e-6


def test_non_finite_entries_are_kept_and_missing_gradients_are_zero():
    def nan_on_first(model, xs, targets):
        return (xs[0] * torch.tensor(float("nan"))).sum() + 0 * xs[0].sum(), {}

    xs = _images()
    tap = GradientTap(nan_on_first)
    FGSM()(NOMODEL, xs, [{}, {}], [1 / 255], tap)
    first, second = tap.gradients()
    assert torch.isnan(first).all()        # the attack itself zeroed these; the record did not
    assert (second == 0).all()              # nothing depends on the second image


def test_fp16_scale_is_divided_out_and_no_gradient_means_none():
    xs = _images()
    tap = GradientTap(lambda m, xs, t: (1024 * _quadratic(m, xs, t)[0], {}), scale=1024)
    FGSM()(NOMODEL, xs, [{}, {}], [1 / 255], tap)
    assert torch.allclose(tap.gradients()[0], 2 * (xs[0] - 0.3))
    assert GradientTap(_quadratic).gradients() is None  # never called with inputs that need a gradient


def test_detector_gradient_equals_a_separate_measurement(synth_data):
    lm = load_trained_model()
    ds = CocoDataset(*synth_data, category_ids=lm.category_ids, limit=2)
    images, targets = [ds.load_image(i) for i in range(2)], [ds.target(i) for i in range(2)]
    objective = make_objective("gt")
    torch.manual_seed(3)
    tap = GradientTap(objective)
    FGSM()(lm.model, images, targets, [2 / 255], tap)
    torch.manual_seed(3)
    with attack_mode(lm.model):
        reference, _ = gradients(lm.model, objective, images, targets, sanitize=False)
    for g, r in zip(tap.gradients(), reference):
        assert torch.equal(g, r)
