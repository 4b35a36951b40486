"""The worst-case ensemble ("robust AP", docs/robust.md): the per-image selection (eval/worst_case.py) and the
`robust` suite on the run engine."""
from __future__ import annotations

import random

import pytest

from robustseg.api import predict_dataset
from robustseg.data import CocoDataset
from robustseg.data.synth import default_split
from robustseg.eval import evaluate
from robustseg.eval.worst_case import select

from _helpers import load_trained_model


@pytest.fixture(scope="module")
def preds():
    lm = load_trained_model()
    ds = CocoDataset(*default_split(), category_ids=lm.category_ids, limit=16)
    return ds.coco, predict_dataset(lm, ds, progress=False), list(ds.image_ids)


def _without(results, ids):
    """The results with every detection of images ``ids`` removed (an attack that emptied them)."""
    return [r for r in results if r["image_id"] not in set(ids)]


def _ap(gt, results, ids, iou_type):
    return evaluate(gt, results, ids, iou_types=(iou_type,), per_class=False)[iou_type]["AP"]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_complementary_members_combine_below_both(preds, iou_type):
    """Member A empties the even images, B the odd ones: the worst case takes each where it did its damage."""
    gt, results, ids = preds
    members = {"a": _without(results, ids[0::2]), "b": _without(results, ids[1::2])}
    sel = select(gt, members, ids, iou_type)
    assert sel.member_ap == pytest.approx({k: _ap(gt, v, ids, iou_type) for k, v in members.items()}, abs=1e-12)
    assert sel.ap < min(sel.member_ap.values()) - 0.2
    assert sel.ap == pytest.approx(_ap(gt, sel.results(members), ids, iou_type), abs=1e-12)  # pycocotools agrees
    assert sel.ap == pytest.approx(0.0, abs=1e-12)  # every image emptied by one member or the other
    assert [w for i, w in zip(sel.image_ids, sel.winners) if i in ids[0::2]] == ["a"] * len(ids[0::2])


def test_never_above_any_member_on_random_members(preds):
    """Members that each drop, shift and rescore detections at random, with crowd objects and score ties: the
    selected set's AP (by pycocotools on the mixed results) is at most every member's."""
    gt, results, ids = preds
    rng = random.Random(3)
    for trial in range(3):
        members = {}
        for m in range(3):
            rs = [dict(r) for r in results if rng.random() > 0.3]
            for r in rs:
                if rng.random() < 0.3:
                    r["bbox"] = [v + rng.uniform(-6, 6) for v in r["bbox"]]
                r["score"] = round(rng.random(), 1)  # ties across images and members
            members[f"m{m}"] = rs
        for iou_type in ("bbox", "segm"):
            sel = select(gt, members, ids, iou_type)
            robust = _ap(gt, sel.results(members), ids, iou_type)
            assert robust == pytest.approx(sel.ap, abs=1e-12)
            assert all(robust <= ap + 1e-12 for ap in sel.member_ap.values()), (trial, iou_type)


def test_one_member_is_itself(preds):
    gt, results, ids = preds
    sel = select(gt, {"only": results}, ids, "bbox")
    assert sel.winners == ["only"] * len(ids) and sel.ap == pytest.approx(_ap(gt, results, ids, "bbox"))


# --- the robust suite on the run engine ----------------------------------------------------------------------

ENSEMBLE = {"name": "mini-robust", "ensemble": True, "attack": [
    {"type": "apgd", "eps": ["8/255"], "steps": 2, "objective": "vanish-logit"},
    {"type": "apgd", "eps": ["8/255"], "steps": 2, "objective": "gt"}]}
MEMBERS = ["apgd-linf-eps0.031373-s2-vanish-logit", "apgd-linf-eps0.031373-s2"]
ROBUST = "robust-linf-eps0.031373"


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory):
    from robustseg import run_suite
    from robustseg.suites import parse_suite
    out = tmp_path_factory.mktemp("robust") / "run"
    return run_suite(load_trained_model(), parse_suite(ENSEMBLE, "mini-robust"), limit=6, batch_size=3,
                     out=out, progress=False, sanity_images=0, bootstrap=100)


def test_robust_point_is_at_most_every_member_with_intervals(robust_run):
    import json

    import pandas as pd
    m = robust_run.metrics
    ap = m[m.metric == "AP"].set_index(["point", "iou_type"])
    for t in ("bbox", "segm"):
        r = ap.loc[(ROBUST, t)]
        assert r.attack == "robust" and r.kind == "attack" and r.steps == 4  # the members' gradient budget
        assert all(r.value <= ap.loc[(k, t)].value + 1e-12 for k in MEMBERS)
        assert r.ci_lo <= r.value <= r.ci_hi and r.drop_ci_lo <= r.drop_abs <= r.drop_ci_hi
    winners = pd.read_csv(robust_run.out / "ensemble_winners.csv")
    assert len(winners) == 6 * 2 and set(winners.winner) <= set(MEMBERS)
    assert (winners.members_run == 2).all()
    # the box selection is the point's predictions file: pycocotools on it gives the metrics row
    from robustseg.data import CocoDataset
    from robustseg.data.synth import default_split
    ds = CocoDataset(*default_split(), limit=6)
    preds = json.loads((robust_run.out / "predictions" / f"{ROBUST}.json").read_text())
    assert _ap(ds.coco, preds, ds.image_ids, "bbox") == pytest.approx(ap.loc[(ROBUST, "bbox")].value, abs=1e-6)
    by_image = dict(zip(winners[winners.iou_type == "bbox"].image_id, winners[winners.iou_type == "bbox"].winner))
    for k in MEMBERS:
        mine = json.loads((robust_run.out / "predictions" / f"{k}.json").read_text())
        assert [r for r in preds if by_image[r["image_id"]] == k] == [r for r in mine if by_image[r["image_id"]] == k]
    info = json.loads((robust_run.out / "run.json").read_text())
    assert info["ensemble"] == {"gradient_evaluations": 6 * 4, "gradient_evaluations_saved": 0}
    assert info["attack"]["suite"]["ensemble"] is True


def test_robust_section_in_the_report(robust_run):
    html = (robust_run.out / "report.html").read_text()
    assert 'id="robust"' in html and (robust_run.out / "plots" / "robust-ap.png").is_file()
    assert f'data-point="{ROBUST}"' in html and "ensemble_winners.csv" in html


def test_an_image_a_member_emptied_is_not_attacked_again(tmp_path, monkeypatch):
    """The first member leaves two images with no detection: the second member attacks only the other four,
    those two keep the first member's image and outputs, and the saved gradient evaluations are counted. Each
    member's APGD is judged (attacks/judge.py) on exactly the images it attacks."""
    import json

    import pandas as pd

    from robustseg.kinds import attack as sweep_module
    from robustseg.kinds.attack import AttackSweep
    from robustseg.run import RunOptions, execute
    from robustseg.suites import parse_suite

    calls, judged, judge_of = [], [], sweep_module.damage_judge
    monkeypatch.setattr(sweep_module, "damage_judge",
                        lambda ds, ids, cats: judged.append(list(ids)) or judge_of(ds, ids, cats))

    class EmptyingFirstMember(AttackSweep):
        def attacked(self, ctx, point, objective, imgs, targets, seed, ids):
            calls.append((point.key, len(imgs)))
            adv, outs = super().attacked(ctx, point, objective, imgs, targets, seed, ids)
            if point.key == MEMBERS[0]:  # as if the attack had removed every detection of the batch's first image
                outs[0] = {k: v[:0] for k, v in outs[0].items()}
            return adv, outs

    sweep = EmptyingFirstMember(parse_suite(ENSEMBLE, "mini-robust"), sanity_images=0, checks_mode="off")
    res = execute([sweep], load_trained_model(), out=tmp_path / "run",
                  opts=RunOptions(limit=6, batch_size=3, progress=False, bootstrap=0))
    assert [c for c in calls if c[0] in MEMBERS] == [(MEMBERS[0], 3), (MEMBERS[1], 2)] * 2  # two batches of 3
    assert judged == [[1, 2, 3], [2, 3], [4, 5, 6], [5, 6]], (judged, calls)
    per_image = pd.read_csv(res.out / "per_image.csv")
    skipped = per_image[~per_image.attacked]
    assert list(skipped.point) == [MEMBERS[1]] * 2 and list(skipped.image_id) == [1, 4]
    assert (skipped.detections_adv == 0).all()
    info = json.loads((res.out / "run.json").read_text())["ensemble"]
    assert info == {"gradient_evaluations": 6 * 2 + 4 * 2, "gradient_evaluations_saved": 2 * 2}
    winners = pd.read_csv(res.out / "ensemble_winners.csv")
    assert set(winners[winners.image_id.isin([1, 4])].members_run) == {1}


def test_seeds_repeat_every_attack_and_report_the_spread(tmp_path):
    """--seeds 3: each point twice more with its own draws; seed 0 is exactly the run without --seeds, and the
    checks and the report's tables read seed 0 (the spread beside them)."""
    import json

    from robustseg import run_suite
    from robustseg.suites import parse_suite
    suite = parse_suite({"attack": [{"type": "pgd", "eps": ["4/255"], "steps": 1}]}, "one")
    kw = dict(limit=4, batch_size=2, progress=False, sanity_images=0, bootstrap=50)
    one = run_suite(load_trained_model(), suite, out=tmp_path / "one", **kw)
    three = run_suite(load_trained_model(), suite, out=tmp_path / "three", seeds=3, **kw)
    m = three.metrics
    pgd = m[(m.attack == "pgd") & (m.metric == "AP") & (m.iou_type == "bbox")]
    assert sorted(pgd.seed) == [0, 1, 2] and list(pgd.point) == [
        "pgd-linf-eps0.015686-s1", "pgd-linf-eps0.015686-s1-seed1", "pgd-linf-eps0.015686-s1-seed2"]
    assert sorted(m[(m.attack == "random") & (m.metric == "AP") & (m.iou_type == "bbox")].seed) == [0, 1, 2]
    base = one.metrics.drop(columns="seed")
    first = m[m.seed.fillna(0) == 0].drop(columns="seed").reset_index(drop=True)
    assert first.equals(base.reset_index(drop=True))  # seed 0 is the run without --seeds, to the last digit
    preds = [json.loads((three.out / "predictions" / f"{k}.json").read_text()) for k in pgd.point]
    assert preds[0] != preds[1] and preds[1] != preds[2]  # every seed its own draws
    assert (one.out / "sanity.json").read_text() == (three.out / "sanity.json").read_text()
    assert "over 3 seeds" in three.summary()
    html = (three.out / "report.html").read_text()
    assert 'id="seeds"' in html and 'data-point="pgd-linf-eps0.015686-s1"' in html
    assert json.loads((three.out / "run.json").read_text())["attack"]["seeds"] == 3
