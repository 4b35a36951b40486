"""Square Attack (robustseg/attacks/square.py) on the shipped model: the budget in queries and in eps, the random
search keeping only improvements, reproducibility, the paper's square-size schedule, and the suite type."""
from __future__ import annotations

import pytest
import torch
from _helpers import ATTACK_DATA_SEED, load_trained_model

from robustseg.attacks import Square
from robustseg.attacks.square import scores, square_fraction
from robustseg.data import CocoDataset
from robustseg.data.synth import generate
from robustseg.errors import RobustsegError, SuiteError
from robustseg.suites import parse_suite

EPS = 8 / 255


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("square-data")
    lm = load_trained_model()
    ds = CocoDataset(generate(root, 2, seed=ATTACK_DATA_SEED), root / "images", category_ids=lm.category_ids)
    return lm.model, [ds.load_image(i) for i in range(2)], [ds.target(i) for i in range(2)]


def _square(model, images, targets, steps: int, seed: int = 5):
    return Square(steps=steps)(model, images, targets, [EPS], None, torch.Generator().manual_seed(seed))[0]


def test_square_stays_in_budget_counts_queries_and_keeps_only_improvements(batch):
    model, images, targets = batch
    queried = []
    hook = model.register_forward_pre_hook(lambda m, args: queried.append(len(args[0])))
    try:
        adv = _square(model, images, targets, steps=12)
    finally:
        hook.remove()
    assert sum(queried) <= 12 * len(images) and max(queried) <= len(images)  # a query = one image predicted
    for x, a in zip(images, adv):
        assert (a - x).abs().max() <= EPS + 1e-6 and a.min() >= 0 and a.max() <= 1
    stripes = _square(model, images, targets, steps=1)  # the same first draws: the starting point alone
    after, start = scores(model, adv, targets), scores(model, stripes, targets)
    assert all(a <= s for a, s in zip(after, start)) and sum(after) < sum(start)
    assert sum(start) <= sum(scores(model, images, targets)) + 1.0  # stripes are noise, not a collapse
    again = _square(model, images, targets, steps=12)
    assert all(torch.equal(a, b) for a, b in zip(adv, again))  # seeded: the same search


def test_square_refuses_l2(batch):
    model, images, targets = batch
    with pytest.raises(RobustsegError, match="linf"):
        Square(norm="l2", steps=2)(model, images, targets, [0.5])


def test_square_size_follows_the_papers_schedule():
    assert square_fraction(0.05, 0, 10000) == 0.05
    assert square_fraction(0.05, 11, 10000) == 0.025 and square_fraction(0.05, 201, 10000) == 0.05 / 8
    assert square_fraction(0.05, 1, 100) == 0.05 / 4  # the query index is rescaled to the paper's 10,000
    assert square_fraction(0.05, 99, 100) == 0.05 / 512


def test_square_in_a_suite():
    (point,) = [p for p in parse_suite({"attack": [{"type": "square", "eps": ["8/255"], "steps": 50,
                                                   "p_init": 0.1}]}).points if p.attack == "square"]
    assert point.steps == 50 and dict(point.params) == {"p_init": 0.1}
    for bad, words in (({"norm": "l2"}, "linf"), ({"objective": "mislabel"}, "objective"),
                       ({"p_init": 2}, "p_init"), ({"losses": "mask"}, "unknown parameter")):
        with pytest.raises(SuiteError, match=words):
            parse_suite({"attack": [{"type": "square", "eps": ["8/255"], **bad}]})
