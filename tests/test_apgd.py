"""APGD (robustseg/attacks/apgd.py): the paper's schedule, the budget in gradient evaluations, per-image state and
bests, restarts; then on the shipped model, and in suites. The mechanics run on toy objectives (no detector)."""
from __future__ import annotations

import math

import pytest
import torch
from _helpers import ATTACK_DATA_SEED, load_trained_model

from robustseg.attacks import APGD, ATTACKS, attack
from robustseg.attacks.apgd import _Walk, checkpoints
from robustseg.attacks.judge import damage_judge
from robustseg.attacks.objectives import Autocast, attack_targets, image_losses, make_objective
from robustseg.data.coco import CocoDataset
from robustseg.data.synth import generate
from robustseg.errors import SuiteError
from robustseg.eval.coco_eval import evaluate, predict, to_coco_results
from robustseg.models import attack_mode
from robustseg.suites import parse_suite

EPS = 8 / 255


class Toy:
    """A per-image objective of the image alone; counts its forward passes with and without a gradient."""
    name = "toy"

    def __init__(self, value):
        self.value, self.with_grad, self.without_grad, self.seen = value, 0, 0, []

    def image_losses(self, model, images, targets):
        if torch.is_grad_enabled():
            self.with_grad += 1
        else:
            self.without_grad += 1
        values = torch.stack([self.value(i, x) for i, x in enumerate(images)])
        self.seen.append(values.detach().clone())
        return values

    def __call__(self, model, images, targets):
        return self.image_losses(model, images, targets).sum(), {}


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand((3, 16, 16), generator=g) * 0.8 + 0.1 for _ in range(n)]


def _run(atk, images, objective, seed=0, eps=EPS):
    return atk(torch.nn.Identity(), images, [{} for _ in images], [eps], objective,
               torch.Generator().manual_seed(seed))[0]


def test_checkpoints_follow_the_paper():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99: w_j = ceil(p_j * N), those before the last update
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9]
    assert checkpoints(1) == [0]


def test_budget_is_steps_gradient_evaluations_per_restart():
    toy = Toy(lambda i, x: -(x ** 2).sum())
    atk = APGD(steps=5, restarts=3)
    _run(atk, _images(), toy)
    assert atk.grad_evals == 15 and toy.with_grad == 15  # one batched forward+backward per step
    assert atk.forward_passes == 18 and toy.without_grad == 3  # plus the last iterate's score, per restart


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", 0.5)])
def test_climbs_a_concave_objective_to_its_top_inside_the_ball(norm, eps):
    images = _images()
    direction = [torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(i)))
                 for i, x in enumerate(images)]
    if norm == "l2":
        direction = [d / d.norm() for d in direction]
    centres = [x + 0.5 * eps * d for x, d in zip(images, direction)]
    toy = Toy(lambda i, x: -((x - centres[i]) ** 2).sum())
    adv = _run(APGD(norm=norm, steps=30), images, toy, eps=eps)
    start = [float(((x - c) ** 2).sum()) for x, c in zip(images, centres)]
    for a, x, c, s in zip(adv, images, centres, start):
        assert float(((a - c) ** 2).sum()) < 0.01 * s
        d = a - x
        assert (float(d.abs().max()) if norm == "linf" else float(d.norm())) <= eps + 1e-6


def test_returns_each_images_best_iterate_of_a_bumpy_objective():
    images = _images()
    toy = Toy(lambda i, x: torch.sin(40 * (x - images[i]).sum()) + 0.01 * (x - images[i]).sum())
    adv = _run(APGD(steps=12, restarts=2), images, toy)
    best_seen = torch.stack(toy.seen).amax(0)
    for i, a in enumerate(adv):
        assert float(toy.value(i, a)) == pytest.approx(float(best_seen[i]), abs=1e-5)


class ToyJudge:
    """Damage of each image by a rule other than the objective's; records every batch of iterates it judges."""

    def __init__(self, damage):
        self.damage, self.seen = damage, []

    def __call__(self, model, images):
        d = torch.tensor([float(self.damage(i, x)) for i, x in enumerate(images)], dtype=torch.float64)
        self.seen.append(([x.clone() for x in images], d))
        return d


def test_a_judge_chooses_the_returned_iterate_not_the_objective():
    """Of the iterates that raised the objective above the clean image's, the judge's most damaging one."""
    images = _images()
    toy = Toy(lambda i, x: (x - images[i]).sum())  # climbs one way...
    judge = ToyJudge(lambda i, x: -(x - images[i]).sum())  # ...the judge prefers the other way
    atk = APGD(steps=8, restarts=2)
    adv = atk(torch.nn.Identity(), images, [{}, {}], [EPS], toy, torch.Generator().manual_seed(0), judge=judge)[0]
    assert len(judge.seen) == atk.predictions == 18  # every iterate, each restart's start included
    assert toy.without_grad == 2 + 1  # each restart's last iterate, and the clean images once (the floor)
    plain = _run(atk, images, Toy(toy.value))
    for i, a in enumerate(adv):
        rose = [k for k in range(len(judge.seen)) if float(toy.value(i, judge.seen[k][0][i])) > 0]  # clean: 0
        assert rose, "the toy objective rises from some start"
        best = max(rose, key=lambda k: float(judge.seen[k][1][i]))
        assert torch.equal(a, judge.seen[best][0][i])
        assert 0 < float(toy.value(i, a)) <= float(toy.value(i, plain[i]))
    assert any(float(toy.value(i, a)) < float(toy.value(i, plain[i])) for i, a in enumerate(adv))


def test_a_judge_never_returns_an_iterate_below_the_clean_objective_when_one_rose():
    # the judge's favourite is the random start, whose objective lies below the clean image's; the walk rises
    images = _images(1)
    toy = Toy(lambda i, x: (x - images[i]).sum())
    calls = []
    judge = ToyJudge(lambda i, x: 1.0 if not calls else 0.5)  # the first batch it judges is the start

    def judged(model, xs):
        out = judge(model, xs)
        calls.append(1)
        return out
    seed = next(s for s in range(50) if float(toy.value(0, images[0] + _start(images[0], s))) < 0)
    adv = APGD(steps=6)(torch.nn.Identity(), images, [{}], [EPS], toy, torch.Generator().manual_seed(seed),
                        judge=judged)[0]
    start_value = float(toy.value(0, judge.seen[0][0][0]))
    assert start_value < 0 and float(toy.value(0, adv[0])) > 0


def _start(x, seed):
    from robustseg.attacks.steps import random_in_ball
    return random_in_ball(x, EPS, "linf", torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("verdict", [0.5, float("nan")])
def test_a_judge_without_a_preference_leaves_the_objective_to_decide(verdict):
    # equal damage everywhere, or none to judge by (an image without ground truth): the highest objective wins
    images = _images()
    value = lambda i, x: torch.sin(40 * (x - images[i]).sum())  # noqa: E731
    plain = _run(APGD(steps=8), images, Toy(value), seed=1)
    judged = APGD(steps=8)(torch.nn.Identity(), images, [{}, {}], [EPS], Toy(value), torch.Generator().manual_seed(1),
                           judge=ToyJudge(lambda i, x: verdict))[0]
    assert all(torch.equal(a, b) for a, b in zip(plain, judged))


def test_a_flat_objective_halves_the_step_at_every_checkpoint():
    toy = Toy(lambda i, x: x.sum() * 0.0)
    images = _images(1)
    walk = _Walk(APGD(steps=20), torch.nn.Identity(), images, [{}], EPS, toy, torch.Generator().manual_seed(0))
    walk.run()
    halvings = len(checkpoints(20)) - 1
    assert float(walk.step[0]) == pytest.approx(2 * EPS / 2 ** halvings)


def test_state_is_per_image_and_restarts_only_improve():
    images = _images(2)
    value = lambda i, x: torch.sin(25 * (x - images[i]).sum())  # noqa: E731
    alone = _run(APGD(steps=6), images[:1], Toy(value), seed=3)
    both = _run(APGD(steps=6), images, Toy(value), seed=3)
    assert torch.equal(alone[0], both[0])  # image 0's walk does not see image 1's values or steps
    one = _run(APGD(steps=6), images, Toy(value), seed=3)
    three = _run(APGD(steps=6, restarts=3), images, Toy(value), seed=3)
    for i in range(2):
        assert float(value(i, three[i])) >= float(value(i, one[i]))


def test_autocast_gives_float32_per_image_values():
    images = _images()
    wrapped = Autocast(Toy(lambda i, x: (x ** 2).sum()), "cpu", "bf16")
    v = image_losses(wrapped, None, images, [{}, {}])
    assert v.dtype == torch.float32 and v.shape == (2,)


@pytest.fixture(scope="module")
def detector_batch(tmp_path_factory):
    lm = load_trained_model()
    root = tmp_path_factory.mktemp("apgd_data")
    ann = generate(root, 2, seed=ATTACK_DATA_SEED)
    ds = CocoDataset(ann, root / "images", category_ids=lm.category_ids)
    return lm, [ds.load_image(i) for i in range(2)], [ds.target(i) for i in range(2)]


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", 1.0)])
def test_on_the_detector_within_budget_and_raises_the_loss(detector_batch, norm, eps):
    lm, images, targets = detector_batch
    assert ATTACKS["apgd"] is APGD
    adv = attack(lm, images, targets, kind="apgd", norm=norm, eps=eps, steps=3, seed=0)
    for a, x in zip(adv, images):
        d = a - x
        assert float(a.min()) >= 0 and float(a.max()) <= 1
        assert (float(d.abs().max()) if norm == "linf" else float(d.norm())) <= eps + 1e-5
    objective = make_objective("gt")
    with torch.no_grad(), attack_mode(lm.model):
        torch.manual_seed(0)
        clean = float(objective(lm.model, images, targets)[0])
        torch.manual_seed(0)
        attacked = float(objective(lm.model, adv, targets)[0])
    assert attacked > clean


def test_the_damage_judge_is_one_minus_each_images_own_coco_ap(detector_batch, tmp_path):
    lm, images, _ = detector_batch
    ann = generate(tmp_path, 2, seed=ATTACK_DATA_SEED)
    ds = CocoDataset(ann, tmp_path / "images", category_ids=lm.category_ids)
    ids = list(ds.image_ids)
    empty = ds.coco.getAnnIds(imgIds=[ids[1]])
    for a in empty:  # image 1 loses its objects: nothing to judge by
        ds.coco.imgToAnns[ids[1]] = []
        ds.coco.anns.pop(a)
    ds.coco.dataset["annotations"] = [a for a in ds.coco.dataset["annotations"] if a["image_id"] != ids[1]]
    damage = damage_judge(ds, ids, lm.category_ids)(lm.model, images)
    outputs = predict(lm.model, images[:1])
    own = evaluate(ds.coco, to_coco_results(outputs[0], ids[0], lm.category_ids), [ids[0]], ("bbox",),
                   per_class=False)["bbox"]["AP"]
    assert 0 <= own < 1 and float(damage[0]) == pytest.approx(1 - own)
    assert math.isnan(float(damage[1]))


def test_on_the_detector_with_a_logit_objective(detector_batch):
    lm, images, targets = detector_batch
    objective = make_objective("vanish-logit")
    empty = attack_targets("vanish-logit", targets, None, lm.num_classes)
    adv = APGD(steps=3)(lm.model, images, empty, [EPS], objective, torch.Generator().manual_seed(0))[0]
    with torch.no_grad(), attack_mode(lm.model):
        before = image_losses(objective, lm.model, images, empty)
        after = image_losses(objective, lm.model, adv, empty)
    assert bool((after > before).all()), (before, after)  # the objective is maximised: the excess went down


def test_suites_accept_apgd_and_check_its_parameters():
    suite = parse_suite({"attack": [{"type": "apgd", "eps": ["8/255"], "steps": [10, 50], "restarts": 2,
                                     "rho": 0.75, "objective": "margin"}]})
    points = [p for p in suite.points if p.attack == "apgd"]
    assert [p.steps for p in points] == [10, 50]
    assert dict(points[0].params) == {"restarts": 2, "rho": 0.75}
    assert "restarts2" in points[0].key
    for bad in ({"restarts": 0}, {"restarts": 1.5}, {"restarts": True}, {"rho": 0}, {"rho": 2.0}, {"steps": 0},
                {"decay": 1.0}):
        with pytest.raises(SuiteError):
            parse_suite({"attack": [{"type": "apgd", "eps": ["8/255"], **bad}]})


def test_grad_evals_match_pgd_at_the_same_steps():
    assert APGD(steps=10).grad_evals == 10
    assert APGD(steps=10, restarts=5).grad_evals == 50
    assert math.isclose(APGD().rho, 0.75) and math.isclose(APGD().momentum, 0.75)
