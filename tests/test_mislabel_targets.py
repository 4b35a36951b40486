"""The attack sweep aims a mislabel attack only at real classes of the checkpoint: with a placeholder ("N/A") label
in the model's label space, "next" skips it, asking for it is refused naming the real classes, and the targeted
success of the margin objective is measured."""
from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

import robustseg.kinds.attack as attack_kind
from robustseg.attacks import objectives
from robustseg.data.synth import generate
from robustseg.errors import RobustsegError
from robustseg.kinds.attack import run_suite
from robustseg.suites import parse_suite

from _helpers import load_trained_model


def _suite(objective: str, target: str) -> object:
    return parse_suite({"name": "t", "attack": [{"type": "pgd", "eps": ["8/255"], "steps": 2, "objective": objective,
                                                  "target_class": target}]}, "t")


def test_next_class_skips_placeholders_and_asking_for_one_is_refused(tmp_path, monkeypatch):
    real = load_trained_model()
    lm = dataclasses.replace(real, class_names=[real.class_names[0], "N/A", real.class_names[2]])
    ann = generate(tmp_path / "d", 6, seed=59, size=64)
    coco = json.loads(ann.read_text())  # a dataset without the class that became the placeholder
    coco["categories"] = [c for c in coco["categories"] if c["id"] != 2]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != 2]
    ann.write_text(json.dumps(coco))
    seen = []
    real_targets = objectives.attack_targets

    def spy(name, gt, clean, num_classes, target_label=None, class_names=None):
        out = real_targets(name, gt, clean, num_classes, target_label, class_names)
        seen.extend(int(v) for t in out for v in t["labels"])
        return out
    monkeypatch.setattr(attack_kind, "attack_targets", spy)
    res = run_suite(lm, _suite("mislabel-margin", "next"), ann, tmp_path / "d" / "images", out=tmp_path / "run",
                    sanity_images=0, bootstrap=0, progress=False)
    assert seen and 2 not in seen  # never the placeholder label
    stats = pd.read_csv(res.out / "detection_stats.csv")
    assert stats[stats.objective == "mislabel-margin"].targeted_success.notna().all()
    with pytest.raises(RobustsegError, match="placeholder"):
        _suite("mislabel", "N/A")
    with pytest.raises(RobustsegError, match="not a real class") as err:
        run_suite(lm, _suite("mislabel", "hexagon"), ann, tmp_path / "d" / "images", out=tmp_path / "run2",
                  sanity_images=0, progress=False)
    assert str(err.value).endswith(f"choose from {real.class_names[0]}, {real.class_names[2]}")
    assert not (tmp_path / "run2").exists()
