"""Detector objectives, their figures, the sanity checks and foolbox on objects (issue: objectives & sanity)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from robustseg.attacks import PGD
from robustseg.attacks.foolbox_bridge import object_robust_accuracy, object_robust_accuracy_native
from robustseg.cli import main
from robustseg.data import CocoDataset
from robustseg.data.synth import generate
from robustseg.errors import SuiteError
from robustseg import run_suite
from robustseg.suites import parse_suite

from _helpers import load_trained_model

DATA_SEED = 31


def _pgd(objective: str, eps: str = "8/255", steps: int = 5, **extra) -> dict:
    return {"type": "pgd", "eps": [eps], "steps": steps, "objective": objective, **extra}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("objdata")
    return generate(root, 6, seed=DATA_SEED), root / "images"


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    suite = parse_suite({"attack": [_pgd("gt"), _pgd("gt", eps="4/255"), _pgd("vanish", steps=10),
                                    _pgd("fabricate"), _pgd("mislabel", target_class="next"), _pgd("mask"),
                                    {"type": "fgsm", "eps": ["8/255"]}]}, name="objectives-test")
    out = tmp_path_factory.mktemp("objrun") / "run"
    run_suite(load_trained_model(), suite, *data, out=out, progress=False, checks="full")  # every image measured
    stats = pd.read_csv(out / "detection_stats.csv").set_index("point")
    return out, pd.read_csv(out / "metrics.csv"), pd.read_csv(out / "per_image.csv"), stats


def _key(objective: str, eps="0.031373", steps=5) -> str:
    suffix = "" if objective == "gt" else f"-{objective}"
    return f"pgd-linf-eps{eps}-s{steps}{suffix}"


def _ap(df, point, iou="bbox"):
    return float(df[(df.point == point) & (df.iou_type == iou) & (df.metric == "AP")].value.iloc[0])


def test_vanish_leaves_clearly_fewer_detections_than_gt(run):
    _, _, per_image, stats = run
    dets = per_image.groupby("point").detections_adv.sum()
    clean = per_image[per_image.point == _key("gt")].detections_clean.sum()
    assert dets[_key("vanish", steps=10)] < 0.75 * dets[_key("gt")]
    assert dets[_key("vanish", steps=10)] < clean
    assert stats.loc[_key("vanish", steps=10), "fp_per_image"] < stats.loc[_key("gt"), "fp_per_image"]


def test_fabricate_adds_false_positives(run):
    _, _, _, stats = run
    assert stats.loc[_key("fabricate"), "fp_per_image"] > stats.loc["clean", "fp_per_image"] + 0.5


def test_mislabel_pushes_objects_to_the_next_class(run):
    _, _, _, stats = run
    assert stats.loc[_key("mislabel"), "targeted_success"] > 0.3
    assert pd.isna(stats.loc[_key("gt"), "targeted_success"])  # only targeted objectives report it


def test_mask_objective_hurts_masks_more_than_boxes(run):
    _, metrics, _, stats = run
    k = _key("mask")
    drop_segm = _ap(metrics, "clean", "segm") - _ap(metrics, k, "segm")
    drop_bbox = _ap(metrics, "clean", "bbox") - _ap(metrics, k, "bbox")
    assert drop_segm > drop_bbox
    assert stats.loc[k, "mask_iou"] < stats.loc["clean", "mask_iou"] - 0.05


def test_trained_model_passes_the_sanity_checks(run):
    """Every check passes except, at most, the two that the second edition's margins find on the weak objectives
    of this suite (issue #16): vanish (PGD-10 at 8/255) lowers bbox AP less than the interval of its difference with
    same-norm noise (about 0.015: the near-saturated scores barely move), and PGD-5 fabricate, from its random
    start, may end one image of six below its clean objective (95% of 6 is all of them)."""
    out = run[0]
    sanity = json.loads((out / "sanity.json").read_text())
    failing = {(c["check"], c.get("point")) for c in sanity["checks"] if c["verdict"] != "pass"}
    assert failing <= {("beats_random", _key("vanish", steps=10)), ("loss_increased", _key("fabricate"))}, failing
    names = {c["check"] for c in sanity["checks"]}
    assert {"beats_random", "monotone_eps", "pgd_vs_fgsm", "moderate_eps", "deterministic", "loss_increased",
            "gradients", "saturated_scores"} <= names


def test_masked_model_makes_sanity_checks_warn(data, tmp_path):
    lm = load_trained_model()
    normalize = lm.model.transform.normalize
    # a non-differentiable quantising input layer: round() has zero gradient everywhere
    lm.model.transform.normalize = lambda x: normalize(torch.round(x * 255) / 255)
    suite = parse_suite({"attack": [{"type": "fgsm", "eps": ["8/255"]}, _pgd("gt", steps=2)]}, name="masked")
    run_suite(lm, suite, *data, out=tmp_path / "run", limit=4, progress=False, checks="full")
    checks = {c["check"]: c for c in json.loads((tmp_path / "run" / "sanity.json").read_text())["checks"]}
    assert json.loads((tmp_path / "run" / "sanity.json").read_text())["verdict"] == "warn"
    assert checks["gradients"]["verdict"] == "warn" and checks["gradients"]["zero"] > 0
    assert checks["moderate_eps"]["verdict"] == "warn"
    loss_checks = [c for c in json.loads((tmp_path / "run" / "sanity.json").read_text())["checks"]
                   if c["check"] == "loss_increased"]
    assert any(c["verdict"] == "warn" for c in loss_checks)


def test_foolbox_linfpgd_matches_robustseg_pgd_on_objects(data):
    lm = load_trained_model()
    ds = CocoDataset(*data, category_ids=lm.category_ids)
    eps, steps, alpha = 2 / 255, 5, 0.5 / 255
    fb_correct, own_correct = [], []
    for i in range(len(ds)):
        img, t = ds[i]
        if not len(t["boxes"]):
            continue
        _, fb = object_robust_accuracy(lm.model, img, t["boxes"], t["labels"], "LinfPGD",
                                       {"steps": steps, "abs_stepsize": alpha, "random_start": False}, [eps])
        own = object_robust_accuracy_native(lm.model, img, t["boxes"], t["labels"],
                                            PGD(steps=steps, abs_stepsize=alpha, random_start=False), [eps])
        fb_correct += fb[0].tolist()
        own_correct += own[0].tolist()
    n = len(fb_correct)
    assert n >= 8
    fb_acc, own_acc = sum(fb_correct) / n, sum(own_correct) / n
    assert abs(fb_acc - own_acc) <= 0.1, (fb_acc, own_acc)
    # the attack does something on this wrapper: robust accuracy below the clean accuracy of a trained model
    assert own_acc < 0.9


def test_unknown_foolbox_attack_fails_clearly(capsys, tmp_path):
    with pytest.raises(SuiteError, match="NoSuchAttack"):
        parse_suite({"attack": [{"type": "foolbox", "attack": "NoSuchAttack", "eps": ["8/255"]}]})
    with pytest.raises(SuiteError, match="bad options"):
        parse_suite({"attack": [{"type": "foolbox", "attack": "LinfPGD", "eps": ["8/255"],
                                 "options": {"stepz": 3}}]})
    suite = tmp_path / "fb.toml"
    suite.write_text('[[attack]]\ntype = "foolbox"\nattack = "NoSuchAttack"\neps = ["8/255"]\n')
    assert main(["attack", "--suite", str(suite), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "NoSuchAttack" in err and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_unknown_objective_and_misplaced_target_class_fail():
    with pytest.raises(SuiteError, match="objective"):
        parse_suite({"attack": [_pgd("explode")]})
    with pytest.raises(SuiteError, match="target_class"):
        parse_suite({"attack": [_pgd("gt", target_class="circle")]})
