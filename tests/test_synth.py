"""Synthetic shapes: determinism, the shape/texture cue options, valid COCO annotations, the cached default split."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from robustseg.data.synth import DEFAULT_SPLIT, default_split, generate

N, SIZE = 12, 48


def _load(ann: Path) -> dict:
    return json.loads(Path(ann).read_text())


def _mask(a: dict) -> np.ndarray:
    seg = dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())
    return mask_utils.decode(seg).astype(bool)


def _image(root: Path, im: dict) -> np.ndarray:
    return np.asarray(Image.open(root / "images" / im["file_name"]))


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_default")
    return root, _load(generate(root, N, seed=7, size=SIZE))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_is_byte_identical(tmp_path, default_set):
    root, _ = default_set
    again = tmp_path / "again"
    generate(again, N, seed=7, size=SIZE)
    a, b = _files(root), _files(again)
    assert a.keys() == b.keys() and len(a) == N + 1
    assert all(a[k] == b[k] for k in a)


def test_different_seed_differs(tmp_path, default_set):
    root, coco = default_set
    other = tmp_path / "other"
    d = _load(generate(other, N, seed=8, size=SIZE))
    assert d["annotations"] != coco["annotations"]
    a, b = _files(root), _files(other)
    assert sum(a[k] != b[k] for k in a if k.endswith(".png")) >= N - 1


def test_structure_and_default_cues(default_set):
    root, coco = default_set
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "circle"), (2, "square"), (3, "triangle")]
    assert len(coco["images"]) == N and len({im["id"] for im in coco["images"]}) == N
    per_image = Counter(a["image_id"] for a in coco["annotations"])
    assert all(1 <= per_image[im["id"]] <= 4 for im in coco["images"])
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for a in coco["annotations"]:
        assert a["category_id"] in (1, 2, 3) and a["iscrowd"] == 0
        assert a["texture_category_id"] == a["shape_category_id"] == a["category_id"]
    for im in coco["images"]:
        assert _image(root, im).shape == (im["height"], im["width"], 3) == (SIZE, SIZE, 3)
    assert coco["info"]["params"]["seed"] == 7


def test_masks_and_boxes_are_consistent(default_set):
    _, coco = default_set
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    for a in coco["annotations"]:
        m = _mask(a)
        assert m.shape == sizes[a["image_id"]]
        ys, xs = np.nonzero(m)
        assert len(ys) >= 1 and a["area"] == m.sum()
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        assert np.allclose(a["bbox"], [x0, y0, x1 - x0, y1 - y0])


def test_visible_masks_do_not_overlap(default_set):
    _, coco = default_set
    by_image: dict[int, list[np.ndarray]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(_mask(a))
    for masks in by_image.values():
        assert np.max(np.sum(masks, axis=0)) <= 1  # masks are the visible parts: occluded pixels removed


def test_cue_conflict_one(tmp_path):
    coco = _load(generate(tmp_path, N, seed=1, size=SIZE, cue_conflict=1.0))
    anns = coco["annotations"]
    assert anns
    for a in anns:
        assert a["texture_category_id"] != a["shape_category_id"]
        assert a["category_id"] == a["shape_category_id"]
    assert len({a["texture_category_id"] for a in anns}) > 1


def _colour_spread(root: Path, coco: dict) -> list[float]:
    images = {im["id"]: _image(root, im).astype(float) for im in coco["images"]}
    return [float(images[a["image_id"]][_mask(a)].std(axis=0).max()) for a in coco["annotations"]]


def test_uniform_fill_is_one_colour(tmp_path, default_set):
    coco = _load(generate(tmp_path, N, seed=2, size=SIZE, fill="uniform"))
    spreads = _colour_spread(tmp_path, coco)
    assert spreads and max(spreads) < 1e-6  # every visible object pixel has exactly the object's colour
    root, default = default_set
    assert min(_colour_spread(root, default)) > 5  # textured objects are not flat (so the check above can fail)


def test_random_shape_mode_class_is_texture(tmp_path):
    coco = _load(generate(tmp_path, 20, seed=3, size=SIZE, shape_mode="random"))
    anns = coco["annotations"]
    assert all(a["category_id"] == a["texture_category_id"] for a in anns)
    assert any(a["shape_category_id"] != a["category_id"] for a in anns)


@pytest.mark.parametrize("kw", [{"fill": "plaid"}, {"shape_mode": "x"}, {"cue_conflict": 1.5}, {"n": 0},
                                {"size": 16}])
def test_invalid_options(tmp_path, kw):
    args = {"n": 2, "size": SIZE, **kw}
    with pytest.raises(ValueError):
        generate(tmp_path, args.pop("n"), **args)


def test_default_split_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTSEG_CACHE", str(tmp_path / "cache"))
    ann, images = default_split(n=4, size=SIZE)
    assert ann.is_file() and images.is_dir()
    assert (tmp_path / "cache") in ann.parents
    coco = _load(ann)
    assert len(coco["images"]) == 4 and coco["info"]["params"]["seed"] == DEFAULT_SPLIT["seed"]
    stamps = {p: p.stat().st_mtime_ns for p in [ann, *images.iterdir()]}
    assert len(stamps) == 5
    ann2, images2 = default_split(n=4, size=SIZE)
    assert (ann2, images2) == (ann, images)
    assert {p: p.stat().st_mtime_ns for p in [ann2, *images2.iterdir()]} == stamps
    assert not [p for p in ann.parent.parent.iterdir() if ".tmp" in p.name]  # no temp dir left behind
    # other parameters: another cache entry
    ann3, _ = default_split(n=3, size=SIZE)
    assert ann3 != ann and len(_load(ann3)["images"]) == 3


def test_default_split_honours_every_override(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTSEG_CACHE", str(tmp_path / "cache"))
    ann, images = default_split(n=3, size=SIZE, fill="uniform", cue_conflict=1.0)
    coco = _load(ann)
    assert coco["info"]["params"]["fill"] == "uniform" and coco["info"]["params"]["cue_conflict"] == 1.0
    assert max(_colour_spread(ann.parent, coco)) < 1e-6
    assert all(a["texture_category_id"] != a["shape_category_id"] for a in coco["annotations"])
