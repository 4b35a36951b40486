"""The attack engine (robustseg.attacks) on a trained model: budgets, valid range, eps 0, untouched model state,
determinism and per-image budgets. Two 128 px synthetic images and at most two gradient steps per attack."""
from __future__ import annotations

import pytest
import torch
from _helpers import ATTACK_DATA_SEED, load_trained_model

from robustseg.attacks import ATTACKS, FGSM, MIFGSM, PGD, DetectorLoss, RandomNoise, attack
from robustseg.data.coco import CocoDataset
from robustseg.data.synth import generate

EPS_LINF = 8 / 255
EPS_L2 = 3.0  # large enough that the ball reaches past 0 and 1 for the pixels forced there below


@pytest.fixture(scope="module")
def lm():
    return load_trained_model()


@pytest.fixture(scope="module")
def batch(lm, tmp_path_factory):
    """Two images with their targets; image 0 gets pixels at and right beside 0 and 1."""
    root = tmp_path_factory.mktemp("attack_data")
    ann = generate(root, 2, seed=ATTACK_DATA_SEED)
    ds = CocoDataset(ann, root / "images", category_ids=lm.category_ids)
    images = [ds.load_image(i) for i in range(2)]
    targets = [ds.target(i) for i in range(2)]
    assert all(len(t["boxes"]) for t in targets)
    x = images[0]
    x[:, :8, :8] = 0.0
    x[:, :8, 8:16] = 1e-4
    x[:, 8:16, :8] = 1.0
    x[:, 8:16, 8:16] = 1 - 1e-4
    return images, targets


def _copy(images):
    return [x.clone() for x in images]


CASES = [  # (kind, norm, params)
    ("fgsm", "linf", {}),
    ("fgsm", "l2", {}),
    ("pgd", "linf", {"steps": 2}),
    ("pgd", "l2", {"steps": 2}),
    ("mifgsm", "linf", {"steps": 2}),
    ("mifgsm", "l2", {"steps": 2}),
    ("random", "linf", {}),
    ("random", "l2", {}),
]


@pytest.mark.parametrize("kind,norm,params", CASES, ids=[f"{k}-{n}" for k, n, _ in CASES])
def test_adversarial_images_within_budget_and_range(lm, batch, kind, norm, params):
    images, targets = batch
    before = _copy(images)
    eps = EPS_LINF if norm == "linf" else EPS_L2
    adv = attack(lm, images, targets, kind=kind, eps=eps, norm=norm, seed=1, **params)
    assert len(adv) == len(images)
    for x, a, x0 in zip(images, adv, before):
        assert torch.equal(x, x0), "the attack modified its input images"
        assert a.shape == x.shape and a.dtype == x.dtype and bool(torch.isfinite(a).all())
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
        d = a - x
        assert float(d.abs().max()) > 0, "the attack did not perturb the image at all"
        if norm == "linf":
            assert float(d.abs().max()) <= eps + 1e-6
        else:
            assert float(d.flatten().norm(p=2)) <= eps + 1e-4
    corner = adv[0][:, :16, :16]  # the pixels forced to 0, 1e-4, 1 and 1-1e-4: still valid
    assert float(corner.min()) >= 0.0 and float(corner.max()) <= 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_noise_has_exactly_the_budget(batch, norm):
    """The baseline is not weaker than its name: Linf moves every unclipped pixel by exactly eps; L2 noise has
    norm eps before clipping, so at most eps after it (and close to eps on a mid-grey image)."""
    images, targets = batch
    gen = torch.Generator().manual_seed(4)
    grey = [torch.full_like(images[1], 0.5)]
    eps = EPS_LINF if norm == "linf" else EPS_L2
    (adv,), = RandomNoise(norm=norm)(None, grey, targets[1:], [eps], None, gen)
    d = adv - grey[0]
    if norm == "linf":
        assert torch.allclose(d.abs(), torch.full_like(d, eps), atol=1e-6)
        assert 0.3 < float((d > 0).float().mean()) < 0.7  # random signs
    else:
        assert abs(float(d.flatten().norm()) - eps) < 1e-4


@pytest.mark.parametrize("kind", sorted(ATTACKS))
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_the_input(lm, batch, kind, norm):
    images, targets = batch
    adv = attack(lm, images, targets, kind=kind, eps=0.0, norm=norm, steps=3, seed=2)
    assert all(torch.equal(a, x) for a, x in zip(adv, images))


def test_sweep_returns_one_list_per_eps(lm, batch):
    images, targets = batch
    gen = torch.Generator().manual_seed(0)
    out = FGSM()(lm.model, images, targets, [0.0, 2 / 255, 8 / 255], DetectorLoss(), gen)
    assert len(out) == 3 and all(len(o) == 2 for o in out)
    assert all(torch.equal(a, x) for a, x in zip(out[0], images))
    for eps, adv in zip([2 / 255, 8 / 255], out[1:]):
        linf = max(float((a - x).abs().max()) for a, x in zip(adv, images))
        assert eps - 1e-6 <= linf <= eps + 1e-6  # one signed step of size eps reaches the budget exactly


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("start_training", [False, True])
def test_attack_leaves_model_state_and_modes_untouched(lm, batch, start_training):
    """Attacks run the loss branches in train mode, yet weights, BatchNorm running stats (and
    num_batches_tracked), every module's training flag and requires_grad are exactly as before."""
    images, targets = batch
    model = lm.model
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns, "expected a model with (non-frozen) BatchNorm layers, whose running stats could drift"
    model.train(start_training)
    if start_training:
        bns[0].eval()  # a mixed-mode model (BatchNorm frozen while fine-tuning) must stay mixed
    modes = {name: m.training for name, m in model.named_modules()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    before = _state(model)
    try:
        gen = torch.Generator().manual_seed(0)
        for atk in (PGD(steps=2), MIFGSM(steps=1)):
            atk(model, images, targets, [8 / 255], DetectorLoss(), gen)
        after = model.state_dict()
        assert before.keys() == after.keys()
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert not changed, f"attack changed {changed[:5]}"
        assert model.training == start_training
        assert {name: m.training for name, m in model.named_modules()} == modes
        assert {name: p.requires_grad for name, p in model.named_parameters()} == grads
    finally:
        model.eval()


def test_same_seed_same_images_different_seed_differs(lm, batch):
    images, targets = batch
    kw = dict(kind="pgd", eps=8 / 255, steps=2, rel_stepsize=0.5)  # small steps: the random start still shows
    a1 = attack(lm, images, targets, seed=5, **kw)
    a2 = attack(lm, images, targets, seed=5, **kw)
    a3 = attack(lm, images, targets, seed=6, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a1, a2))
    for x, y in zip(a1, a3):
        assert float((x != y).float().mean()) > 0.5


def test_perturbations_are_per_image(lm, batch):
    """Each image of a batch gets its own perturbation with its own full budget: an L2 budget shared over the
    batch would leave each of the two images about eps/sqrt(2)."""
    images, targets = batch
    eps = 1.0
    adv = attack(lm, images, targets, kind="pgd", norm="l2", eps=eps, steps=2, seed=3)
    deltas = [(a - x).flatten() for a, x in zip(adv, images)]
    norms = [float(d.norm()) for d in deltas]
    for n in norms:
        assert 0.9 * eps <= n <= eps + 1e-4, norms
    cos = float(torch.nn.functional.cosine_similarity(deltas[0], deltas[1], dim=0))
    assert abs(cos) < 0.5, f"the two images' perturbations are alike (cosine {cos:.3f})"
    linf = attack(lm, images, targets, kind="fgsm", eps=4 / 255, seed=3)
    for a, x in zip(linf, images):  # Linf: each image reaches its own budget
        assert abs(float((a - x).abs().max()) - 4 / 255) < 1e-6


def test_attack_raises_the_loss(lm, batch):
    """PGD maximises the detector's loss: the adversarial loss exceeds the clean one."""
    images, targets = batch
    objective = DetectorLoss()
    adv = attack(lm, images, targets, kind="pgd", eps=8 / 255, steps=2, seed=0)
    from robustseg.models import attack_mode
    with torch.no_grad(), attack_mode(lm.model):
        torch.manual_seed(0)
        clean = float(objective(lm.model, images, targets)[0])
        torch.manual_seed(0)
        attacked = float(objective(lm.model, adv, targets)[0])
    assert attacked > clean


def test_pgd_walk_is_the_attack_step_by_step(lm, batch):
    """PGD.iterates (the masking probe stops it early) is the walk run() takes: its start, one entry per step, and
    the last is the attack's output to the bit."""
    from robustseg.models.modes import attack_mode
    images, targets = batch
    pgd, eps = PGD(steps=3), 4 / 255
    torch.manual_seed(0)
    ref = pgd(lm.model, images, targets, [eps], generator=torch.Generator().manual_seed(1))[0]
    torch.manual_seed(0)
    with attack_mode(lm.model):
        walk = [[a.detach() for a in step] for step in
                pgd.iterates(lm.model, images, targets, eps, DetectorLoss(), torch.Generator().manual_seed(1))]
    assert len(walk) == 4
    assert all(torch.equal(a, b) for a, b in zip(walk[-1], ref))
    assert not any(torch.equal(a, b) for a, b in zip(walk[1], walk[-1]))  # each step moves
    assert all(float((a - x).abs().max()) <= eps + 1e-6 for step in walk for a, x in zip(step, images))
