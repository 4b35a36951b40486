"""Shape-vs-texture probes: transforms stay aligned with the annotations, scramble is seeded and keeps its tiles,
a perfect model on ground-truth silhouettes scores AP 1, cue-conflict decisions count right, and
``robustseg probe`` writes its results directory."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from robustseg.cli import main
from robustseg.data.coco import CocoDataset, coco_from_dict, read_coco_json
from robustseg.data.synth import render_image
from robustseg.eval.coco_eval import evaluate, to_coco_results
from robustseg.probes import DEFAULT_CONFIG, load_config, resolve_probes
from robustseg.probes import shape_bias as sb
from robustseg.probes import transforms as T
from robustseg.probes.config import apply_probe
from robustseg.probes.cue_conflict import cue_conflict_set

ALL_IMAGE_PROBES = [n for n in resolve_probes("all", DEFAULT_CONFIG) if n != "cue-conflict"]


def _image(seed: int = 5, fill: str = "uniform", size: int = 96):
    img, objs = render_image(np.random.default_rng(seed), size, fill=fill)
    return img.astype(np.float32) / 255, np.stack([o["mask"] for o in objs])


@pytest.mark.parametrize("name", ALL_IMAGE_PROBES)
def test_every_probe_keeps_size_and_range(name):
    img, masks = _image(size=100)  # not a multiple of any tile size
    out = apply_probe(name, img, masks, DEFAULT_CONFIG, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1


def test_silhouette_pixels_are_the_masks():
    img, masks = _image()
    sil = T.silhouette(img.shape[:2], masks)
    assert sil.shape == img.shape
    assert np.array_equal(sil[..., 0] == 0, masks.any(0)) and np.array_equal(sil[..., 0] == 1, ~masks.any(0))
    assert (sil == sil[..., :1]).all()


@pytest.mark.parametrize("line", [T.canny_lines, T.xdog])
def test_line_drawings_trace_the_object_outlines(line):
    img, masks = _image()
    ink = line(img)[..., 0] < 0.5
    assert ink.any() and ink.mean() < 0.2                         # dark lines on a mostly white page
    boundary = np.zeros_like(ink)
    for m in masks:
        boundary |= m ^ ndimage.binary_erosion(m)
    near = ndimage.binary_dilation(boundary, iterations=3)
    assert (ink & near).sum() >= 0.9 * ink.sum()                  # the lines are where the outlines are


def test_grayscale_and_invert_controls():
    img, _ = _image(fill="texture")
    g = T.grayscale(img)
    assert np.allclose(g[..., 0], g[..., 1]) and np.allclose(g[..., 0], g[..., 2])
    assert np.allclose(T.invert(T.invert(img)), img)


def _tiles(a: np.ndarray, t: int) -> list[bytes]:
    h, w = a.shape[0] // t * t, a.shape[1] // t * t
    return sorted(a[y:y + t, x:x + t].tobytes() for y in range(0, h, t) for x in range(0, w, t))


def test_scramble_is_seeded_and_keeps_the_tiles():
    img, _ = _image(fill="texture", size=100)
    t = T.tile_size(100, 100, 8)
    assert t == 12 and T.tile_size(128, 128, 16) == 8
    a = T.scramble(img, t, np.random.default_rng(1))
    assert np.array_equal(a, T.scramble(img, t, np.random.default_rng(1)))
    assert not np.array_equal(a, T.scramble(img, t, np.random.default_rng(2)))
    assert not np.array_equal(a, img)
    assert _tiles(a, t) == _tiles(img, t)                          # same multiset of tiles
    assert np.array_equal(a[96:], img[96:]) and np.array_equal(a[:, 96:], img[:, 96:])  # border kept


def test_scramble_probe_depends_only_on_seed_and_image():
    img, masks = _image(fill="texture")
    one = apply_probe("scramble-8x8", img, masks, DEFAULT_CONFIG, np.random.default_rng(3))
    two = apply_probe("scramble-8x8", img, masks, DEFAULT_CONFIG, np.random.default_rng(3))
    assert np.array_equal(one, two)


def test_fill_with_texture_changes_only_the_mask():
    img, masks = _image(seed=1)
    donor_img, donor_masks = _image(seed=2, fill="texture")
    tex, tmask = T.object_texture(donor_img, donor_masks[0])
    out = T.fill_with_texture(img, masks[0], tex, tmask)
    assert out.shape == img.shape
    assert np.array_equal(out[~masks[0]], img[~masks[0]])
    assert not np.allclose(out[masks[0]], img[masks[0]])


def test_perfect_model_on_gt_silhouettes_scores_ap_1(synth_data):
    ds = CocoDataset(*synth_data)
    results = []
    for i in range(len(ds)):
        img, tgt = ds.load_image(i), ds.target(i)
        masks = tgt["masks"].numpy().astype(bool)
        sil = T.silhouette(img.shape[1:], masks)
        # the "model" outputs the ground-truth objects, reading each mask off the silhouette's black pixels
        seen = np.stack([(sil[..., 0] == 0) & m for m in masks])
        out = {"boxes": tgt["boxes"], "labels": tgt["labels"], "scores": torch.ones(len(masks)),
               "masks": torch.from_numpy(seen).float()[:, None]}
        results += to_coco_results(out, tgt["image_id"], ds.category_ids)
    m = evaluate(ds.coco, results)
    assert m["segm"]["AP"] == pytest.approx(1.0) and m["bbox"]["AP"] == pytest.approx(1.0)


def _box_ann(aid, image_id, box, shape, texture):
    return {"id": aid, "image_id": image_id, "category_id": shape, "shape_category_id": shape,
            "texture_category_id": texture, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}


def _det(image_id, box, cat, score):
    return {"image_id": image_id, "bbox": box, "category_id": cat, "score": score}


def test_cue_conflict_decisions_on_a_hand_made_case():
    A, B, C, D, E, F = [0, 0, 20, 20], [40, 0, 20, 20], [0, 40, 20, 20], [40, 40, 20, 20], [70, 70, 20, 20], \
        [70, 0, 20, 20]
    anns = [_box_ann(1, 1, A, 1, 2), _box_ann(2, 1, B, 2, 3), _box_ann(3, 1, C, 3, 1),   # image 1
            _box_ann(4, 2, D, 1, 3), _box_ann(5, 2, E, 2, 1),                           # image 2
            _box_ann(6, 2, F, 3, 3)]                                                    # no conflict: ignored
    gt = coco_from_dict({"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
                         "annotations": anns, "categories": [{"id": k, "name": n} for k, n in
                                                             ((1, "circle"), (2, "square"), (3, "triangle"))]})
    dets = [_det(1, A, 1, 0.9), _det(1, A, 2, 0.8),       # shape; a less confident texture duplicate: not counted
            _det(1, [41, 1, 20, 20], 2, 0.7),             # shape (IoU 0.82)
            _det(1, C, 1, 0.95),                          # texture
            _det(2, D, 2, 0.9),                           # neither
            _det(2, [80, 80, 20, 20], 2, 0.9),            # IoU 0.14 with E: object 5 unmatched
            _det(2, E, 1, 0.3),                           # below the score threshold
            _det(2, F, 1, 0.9)]                           # on the non-conflict object
    rows = sb.decisions(dets, gt)
    assert [r["decision"] for r in rows] == ["shape", "shape", "texture", "neither", "unmatched"]
    s = sb.summarise(rows, {1: "circle", 2: "square", 3: "triangle"})
    assert s["overall"] == {"shape": 2, "texture": 1, "neither": 1, "unmatched": 1, "objects": 5,
                            "shape_bias": pytest.approx(2 / 3)}
    assert s["per_shape_class"]["circle"]["shape_bias"] == 1.0 and s["per_shape_class"]["triangle"]["texture"] == 1
    assert s["per_shape_class"]["square"]["unmatched"] == 1
    assert s["per_texture_class"]["square"]["shape"] == 1 and s["per_texture_class"]["square"]["objects"] == 1
    assert s["predicted_classes"] == {"circle": 2, "square": 2}
    assert "square (dots)" in sb.summarise(rows, {1: "circle", 2: "square", 3: "triangle"},
                                           {2: "dots"})["per_texture_class"]
    csv_rows = sb.summary_rows(s)
    assert csv_rows[0]["group"] == "overall" and len(csv_rows) == 1 + 3 + 3
    # the lower score threshold lets the texture decision on object 5 in
    assert sb.counts(sb.decisions(dets, gt, score=0.25))["texture"] == 2


def test_texture_class_detections_on_no_object_are_counted_beside_the_ratio():
    """The shape-bias ratio only sees the detection matched to an object; a model that also fires on the texture
    elsewhere shows in texture_false_positives (a class that is some object's shape in the image is not counted)."""
    A, B, C, X = [0, 0, 20, 20], [40, 0, 20, 20], [0, 40, 20, 20], [60, 60, 20, 20]
    anns = [_box_ann(1, 1, A, 1, 2),                               # image 1: circle wearing square
            _box_ann(2, 2, B, 2, 1), _box_ann(3, 2, C, 1, 3),      # image 2: shapes {square, circle}, textures {circle, triangle}
            _box_ann(4, 3, A, 3, 2)]                               # image 3: no detections at all
    gt = coco_from_dict({"images": [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3)],
                         "annotations": anns, "categories": [{"id": k, "name": n} for k, n in
                                                             ((1, "circle"), (2, "square"), (3, "triangle"))]})
    dets = [_det(1, A, 1, 0.9),                  # the shape answer: matched, in the ratio
            _det(1, X, 2, 0.8),                  # square (the texture) on no object: counted
            _det(1, A, 2, 0.7),                  # square again on the circle, unmatched (A is taken): counted
            _det(1, X, 2, 0.3),                  # below the score threshold
            _det(2, B, 2, 0.9), _det(2, C, 1, 0.9),
            _det(2, X, 1, 0.9),                  # circle: a texture here, but also an object's shape: not counted
            _det(2, X, 3, 0.6)]                  # triangle: only a texture here: counted
    fp = sb.texture_false_positives(dets, gt)
    assert fp == {"images": 3, "detections": 3, "per_image": 1.0}
    assert sb.counts(sb.decisions(dets, gt))["shape"] == 3  # the ratio alone says 'all shape'
    assert sb.texture_false_positives(dets, gt, image_ids=[3]) == {"images": 1, "detections": 0, "per_image": 0.0}
    assert sb.texture_false_positives(dets, gt, score=0.25)["detections"] == 4


def test_real_data_cue_conflict_set(synth_data, tiny_checkpoint, tmp_path):
    """Without texture ids or the synthetic marker the set is built: each object wears another class's texture."""
    ann, images = synth_data
    d = read_coco_json(ann)
    d.pop("info")
    for a in d["annotations"]:
        a.pop("shape_category_id"), a.pop("texture_category_id")
    (tmp_path / "real.json").write_text(json.dumps(d))
    from robustseg.models import load_model
    lm = load_model(tiny_checkpoint)
    ds = CocoDataset(tmp_path / "real.json", images, category_ids=lm.category_ids)
    cc = cue_conflict_set(ds, lm, tmp_path / "out", load_config(), seed=0, n_images=len(ds))
    assert cc.info["source"] == "built" and cc.info["objects_with_foreign_texture"] > 0
    changed = [a for a in cc.gt.dataset["annotations"] if a["texture_category_id"] != a["shape_category_id"]]
    assert len(changed) == cc.info["objects_with_foreign_texture"]
    i = cc.image_ids.index(changed[0]["image_id"])
    before, after = ds.load_image(i).numpy(), cc.load(i).numpy()
    mask = cc.gt.annToMask(changed[0]).astype(bool)
    assert after.shape == before.shape
    assert not np.allclose(after[:, mask], before[:, mask])
    others = ~np.any([cc.gt.annToMask(a).astype(bool) for a in changed if a["image_id"] == changed[0]["image_id"]],
                     axis=0)
    assert np.array_equal(after[:, others], before[:, others])


def test_resolve_probes_and_config(tmp_path):
    assert resolve_probes("line,scramble", DEFAULT_CONFIG) == ["line-canny", "line-xdog", "scramble-16x16",
                                                                "scramble-8x8", "scramble-4x4"]
    assert resolve_probes("all", DEFAULT_CONFIG)[-1] == "cue-conflict"
    with pytest.raises(Exception, match="unknown probe"):
        resolve_probes("edges", DEFAULT_CONFIG)
    assert load_config() == DEFAULT_CONFIG  # attacks/probes.toml documents the defaults
    (tmp_path / "p.toml").write_text("[scramble]\ngrids = [2]\n")
    assert resolve_probes("scramble", load_config(tmp_path / "p.toml")) == ["scramble-2x2"]
    (tmp_path / "bad.toml").write_text("[scramble]\ntile = 3\n")
    with pytest.raises(Exception, match="unknown options"):
        load_config(tmp_path / "bad.toml")


def test_probe_cli_writes_results(synth_data, tiny_checkpoint, tmp_path, capsys):
    ann, images = synth_data
    out = tmp_path / "probe"
    args = ["probe", "--model", str(tiny_checkpoint), "--data", str(ann), "--images", str(images), "--limit", "4",
            "--out", str(out)]
    assert main(args) == 0
    m = pd.read_csv(out / "metrics.csv")
    probes = [f"probe-{n}" for n in resolve_probes("all", DEFAULT_CONFIG)]
    assert set(m.attack) == {"clean", *probes}
    ap = m[m.metric == "AP"]
    assert len(ap) == 2 * (1 + len(probes)) and set(ap.iou_type) == {"bbox", "segm"}
    p = m[m.kind == "probe"]
    assert set(p.attack) == set(probes) and (m[m.attack == "clean"].kind == "clean").all()
    assert (p.norm == "none").all() and p.eps.isna().all() and (p.steps == 0).all()  # a probe has no eps
    assert set(zip(p.attack, p.probe)) == {(f"probe-{n}", n) for n in resolve_probes("all", DEFAULT_CONFIG)}
    assert {"matched_objects", "shape_bias", "shape_decisions", "texture_false_positives_per_image"} <= set(m.metric)
    sb_json = json.loads((out / "shape_bias.json").read_text())
    assert set(sb_json["overall"]) == {"shape", "texture", "neither", "unmatched", "objects", "shape_bias"}
    assert sb_json["cue_conflict"]["params"]["cue_conflict"] == 1.0
    assert all("(" in k for k in sb_json["per_texture_class"])   # e.g. "circle (stripes)"
    assert (out / "shape_bias.csv").is_file() and (out / "probes.csv").is_file()
    for point in ["clean", *probes]:
        assert sorted(q.name for q in (out / "examples" / point).glob("*.png")) == ["1.png", "2.png", "3.png",
                                                                                   "4.png"]
    assert (out / "examples" / "overview.png").is_file()
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["seed"] == 0 and info["kinds"] == ["probe"]
    assert len(info["model"]["sha256"]) == 64 and len(info["dataset"]["sha256"]) == 64
    assert info["versions"]["torch"] and info["cue_conflict"]["source"] == "generated"
    assert "probe" in info["command"]
    # never overwritten without --force
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
