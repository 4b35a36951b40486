"""The documented recipe, shortened (docs/adversarial-training.md): a short adversarial fine-tune of the trained
model loses less *robust* AP (the worst case over an ensemble of attacks, docs/robust.md) than the model it
started from and than the same fine-tune without adversarial examples, and has a smaller median input-gradient L1.

The recipe judges with benchmarks/adv_eval.toml (four APGD members, transfer, Square, the sanity checks; many
minutes per checkpoint). To stay near a minute this test runs a two-member ensemble (APGD on the training losses
and on the box margin, 5 gradient evaluations each) through ``run_suite`` on 12 small images, and gradnorm.py.
Needs the trained model (tests/_helpers.py: the shipped one, or $ROBUSTSEG_TEST_MODEL).
"""
from __future__ import annotations

import numpy as np
import pytest

from robustseg import run_suite
from robustseg.data.coco import CocoDataset
from robustseg.data.synth import generate
from robustseg.gradnorm import image_rows
from robustseg.models import load_model
from robustseg.suites import parse_suite
from robustseg.training import TrainConfig, train

from _helpers import metric, trained_model_path

TRAIN_SEED, EVAL_SEED = 31, 37  # neither the shipped model's training split (0) nor the default eval split
ITERS, EVAL_IMAGES, GRAD_IMAGES = 30, 12, 6
ENSEMBLE = parse_suite({"name": "direction", "ensemble": True, "attack": [
    {"type": "apgd", "eps": ["4/255"], "steps": 5, "objective": "gt"},
    {"type": "apgd", "eps": ["4/255"], "steps": 5, "objective": "margin"}]}, "direction")
ROBUST = "robust-linf-eps0.015686"
MEMBERS = ("apgd-linf-eps0.015686-s5", "apgd-linf-eps0.015686-s5-margin")


def _measure(path, ann, images, out):
    """(clean bbox AP, robust bbox AP, members' bbox AP, median total-loss input-gradient L1) of one checkpoint."""
    lm = load_model(path)
    m = run_suite(lm, ENSEMBLE, ann, images, out=out, limit=EVAL_IMAGES, batch_size=4, seed=0, progress=False,
                  checks="off", bootstrap=0).metrics
    ds = CocoDataset(ann, images, category_ids=lm.category_ids, limit=GRAD_IMAGES)
    rows = [r for i in range(len(ds)) for r in image_rows(lm, ds.load_image(i), ds.target(i), ds.image_ids[i],
                                                          name="m")]
    l1 = float(np.median([r["l1"] for r in rows if r["component"] == "total"]))
    return metric(m, "clean"), metric(m, ROBUST), [metric(m, k) for k in MEMBERS], l1


@pytest.mark.slow
def test_adversarial_fine_tuning_shrinks_the_ensemble_drop_and_gradients(tmp_path):
    base = trained_model_path()
    train_ann = generate(tmp_path / "train", 40, seed=TRAIN_SEED, size=128)
    eval_ann = generate(tmp_path / "eval", EVAL_IMAGES, seed=EVAL_SEED, size=128)
    cfg = dict(data=str(train_ann), images=str(tmp_path / "train" / "images"), init=str(base), iters=ITERS,
               batch_size=4, lr=1e-3, warmup=3, ckpt_every=0, command="pytest")
    adv, control = tmp_path / "adv.pt", tmp_path / "control.pt"
    train(TrainConfig(out=str(adv), adv="fgsm-rs", eps=4 / 255, adv_ratio=1.0, **cfg), progress=False)
    train(TrainConfig(out=str(control), **cfg), progress=False)  # the same schedule, no adversarial examples
    figures = {name: _measure(path, eval_ann, tmp_path / "eval" / "images", tmp_path / name)
               for name, path in (("base", base), ("adv", adv), ("control", control))}
    drop = {name: clean - robust for name, (clean, robust, _, _) in figures.items()}
    for name, (clean, robust, members, l1) in figures.items():
        print(f"{name}: clean {clean:.3f} robust {robust:.3f} (members {members}) drop {drop[name]:.3f} "
              f"median total-loss L1 {l1:.3g}")
    for clean, robust, members, _ in figures.values():
        assert robust <= min(members) + 1e-9  # the worst case: never above a member
    assert drop["base"] > 0.1, "the ensemble must hurt the reference model for the comparison to mean anything"
    # the examples, not the extra training, shrink the drop: the control fine-tune does not (measured, 2 CPUs,
    # before APGD returned its judged iterate:
    # drop base 0.363, adversarial 0.187, control 0.307; median L1 15.6, 9.77, 14.4)
    assert drop["adv"] < drop["base"] - 0.05, drop
    assert drop["adv"] < drop["control"] - 0.05, drop
    assert figures["adv"][3] < figures["base"][3], figures
