"""Per-object attack outcomes (robustseg/eval/object_outcomes.py) on hand-made detections, and in a run."""
from __future__ import annotations

import numpy as np
import pandas as pd
from pycocotools.coco import COCO

from robustseg.eval.object_outcomes import outcome_rows, per_object


def _gt() -> COCO:
    anns = [{"id": k + 1, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for k, (c, b) in enumerate([(1, [0, 0, 10, 10]), (2, [50, 50, 10, 10]), (1, [100, 100, 40, 40]),
                                        (2, [200, 200, 120, 120])])]
    anns.append({"id": 9, "image_id": 1, "category_id": 1, "bbox": [300, 0, 5, 5], "area": 25, "iscrowd": 1})
    anns.append({"id": 10, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "width": 400, "height": 400}, {"id": 2, "width": 64, "height": 64}],
                    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": anns}
    coco.createIndex()
    return coco


def test_each_object_gets_the_outcome_of_its_best_match():
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},       # found
            {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.8},     # mislabelled (b as a)
            {"image_id": 1, "category_id": 1, "bbox": [110, 110, 40, 40], "score": 0.7},   # IoU 0.39: mislocalised
            {"image_id": 1, "category_id": 2, "bbox": [200, 200, 120, 120], "score": 0.3},  # below score 0.5
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.95}]
    objs = per_object(_gt(), dets, [1, 2])
    assert [o["outcome"] for o in objs] == ["found", "mislabelled", "mislocalised", "vanished", "found"]
    assert [o["size"] for o in objs] == ["small", "small", "medium", "large", "small"]  # the crowd object is out
    rows = {(r["category"], r["size"]): r for r in outcome_rows("p", objs, [1, 2], {1: "a", 2: "b"}, None)}
    top = rows[("all", "all")]
    assert (top["objects"], top["found"], top["vanished"]) == (5, 2, 1) and top["found_rate"] == 0.4
    assert rows[("b", "all")]["mislabelled"] == 1 and rows[("a", "medium")]["mislocalised"] == 1
    # resampling image 2 only: every object found; image 1 only: 1 of 4
    boot = outcome_rows("p", objs, [1, 2], {1: "a", 2: "b"}, np.array([[1, 1], [0, 0]]))
    top = next(r for r in boot if (r["category"], r["size"]) == ("all", "all"))
    assert top["found_ci_lo"] == np.quantile([1.0, 0.25], 0.025) and top["found_ci_hi"] <= 1.0


def test_an_attack_run_writes_them_and_an_attack_loses_objects(tmp_path):
    from robustseg.data.synth import generate
    from robustseg.kinds.attack import run_suite
    from robustseg.suites import single_attack_suite

    from _helpers import load_trained_model
    ann = generate(tmp_path / "d", 6, seed=57, size=96)
    res = run_suite(load_trained_model(), single_attack_suite("pgd", "8/255", "5", "linf", None), ann,
                    tmp_path / "d" / "images", out=tmp_path / "run", sanity_images=0, progress=False)
    df = pd.read_csv(res.out / "object_outcomes.csv")
    top = df[(df.category == "all") & (df["size"] == "all")].set_index("point")
    pgd = top.loc["pgd-linf-eps0.031373-s5"]
    assert pgd.found_rate < top.loc["clean", "found_rate"] - 0.2  # PGD at 8/255 costs objects, noise does not
    assert top.loc["random-linf-eps0.031373-s0", "found_rate"] >= top.loc["clean", "found_rate"] - 0.1
    assert (df.found + df.mislabelled + df.mislocalised + df.vanished == df.objects).all()
    assert "What happened to the objects" in (res.out / "report.html").read_text()


def test_a_wrong_class_duplicate_does_not_hide_a_right_class_match():
    dets = [{"image_id": 2, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.99},   # wrong class, higher score
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 9], "score": 0.9}]     # right class
    assert [o["outcome"] for o in per_object(_gt(), dets, [2])] == ["found"]
    bad = _gt()
    bad.imgToAnns[2][0]["area"] = float("nan")  # a hostile area: sized from the box, never a crash
    assert per_object(bad, dets, [2])[0]["size"] == "small"
