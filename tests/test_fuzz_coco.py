"""Property-based tests: whatever a COCO file holds, the reader either works or raises one DatasetError."""
from __future__ import annotations

import json

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from robustseg.data import CocoDataset
from robustseg.data.validate import rle_counts
from robustseg.errors import DatasetError

W, H = 16, 12
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 40), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=6))
numbers = st.one_of(st.integers(-50, 50), st.floats(-1e6, 1e6), st.just(float("nan")), st.just(float("inf")))
bbox = st.one_of(st.lists(numbers, min_size=4, max_size=4), st.lists(numbers, max_size=6), scalars)
polygon = st.lists(st.lists(numbers, max_size=12), max_size=3)
rle = st.fixed_dictionaries({"size": st.one_of(st.just([H, W]), st.lists(st.integers(0, 30), max_size=3)),
                             "counts": st.one_of(st.text(max_size=20), st.lists(st.integers(-3, 200), max_size=8))})
annotation = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(1, 6), scalars), "image_id": st.one_of(st.integers(1, 3), scalars),
     "category_id": st.one_of(st.integers(1, 3), scalars), "bbox": bbox},
    optional={"segmentation": st.one_of(polygon, rle, scalars), "iscrowd": st.sampled_from([0, 1])})
image = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(1, 3), scalars),
     "file_name": st.one_of(st.just("a.png"), st.just("../a.png"), st.just("/etc/passwd"), st.text(max_size=8)),
     "width": st.one_of(st.just(W), scalars), "height": st.one_of(st.just(H), scalars)})
coco = st.fixed_dictionaries({"images": st.lists(image, max_size=3), "annotations": st.lists(annotation, max_size=5),
                              "categories": st.lists(st.fixed_dictionaries({"id": st.one_of(st.integers(1, 3), scalars),
                                                                            "name": scalars}), max_size=3)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(d=st.one_of(coco, st.lists(scalars), scalars, st.dictionaries(st.text(max_size=5), scalars)))
def test_reader_works_or_raises_dataset_error(tmp_path, d):
    (tmp_path / "img").mkdir(exist_ok=True)
    Image.new("RGB", (W, H), (10, 20, 30)).save(tmp_path / "img" / "a.png")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(d))
    try:
        ds = CocoDataset(ann, tmp_path / "img")
    except DatasetError:
        return
    problems = ds.check_images()
    for i, iid in enumerate(ds.image_ids):
        try:
            img, t = ds[i]
        except DatasetError:
            assert iid in problems
            continue
        assert iid not in problems
        assert img.shape == (3, H, W) and 0 <= float(img.min()) and float(img.max()) <= 1
        assert t["masks"].shape[1:] == (H, W) and len(t["masks"]) == len(t["boxes"]) == len(t["labels"])
        assert torch.isfinite(t["boxes"]).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_rle_counts_reads_what_pycocotools_writes(bits):
    m = np.asfortranarray(np.array(bits, dtype=np.uint8).reshape(-1, 1))
    rle = mask_utils.encode(m)
    counts = rle_counts(rle["counts"].decode())
    assert counts is not None and sum(counts) == len(bits) and all(c >= 0 for c in counts)


@given(st.text(max_size=30))
def test_rle_counts_never_crashes(s):
    counts = rle_counts(s)
    assert counts is None or all(isinstance(c, int) for c in counts)
