"""Reading COCO datasets: segmentation formats, crowd, image modes, EXIF, category mapping, validation, safety."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from robustseg.data.coco import CocoDataset
from robustseg.data.images import load_image
from robustseg.errors import DatasetError, RobustsegError

W, H = 40, 30
MODEL_CATS = [3, 7]  # label 1 <-> category 3, label 2 <-> category 7; the dataset's category 5 is unknown to it
CATEGORIES = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}, {"id": 5, "name": "five"}]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _rect(y0, y1, x0, x1, h=H, w=W) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _write(root: Path, images: list[dict], anns: list[dict], categories=CATEGORIES) -> Path:
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return ann


def _png(path: Path, w: int = W, h: int = H, colour=(10, 200, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), colour).save(path)
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A hand-made dataset covering segmentation formats, crowd, image modes and EXIF rotation."""
    root = tmp_path_factory.mktemp("zoo")
    imgs = root / "images"
    imgs.mkdir()
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([xx * 6, yy * 8, np.full_like(xx, 100)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(imgs / "rgb.png")
    Image.new("L", (W, H), 128).save(imgs / "gray.png")
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[:, : W // 2] = (255, 0, 0, 255)    # opaque red
    rgba[:, W // 2:] = (0, 0, 255, 0)       # fully transparent: composited on white
    Image.fromarray(rgba, "RGBA").save(imgs / "rgba.png")
    pal = Image.new("P", (W, H), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(1, (0, 0, W // 2, H))          # left half palette index 1 = green
    pal.save(imgs / "pal.png")
    deep = np.full((H, W), 16384, np.uint16)
    deep[:, : W // 2] = 65535
    Image.fromarray(deep).save(imgs / "deep.png")
    assert Image.open(imgs / "deep.png").mode == "I;16"
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(imgs / "cmyk.jpg", quality=95)  # red
    rot = Image.new("RGB", (W, H), (255, 0, 0))
    rot.paste((0, 0, 255), (W // 2, 0, W, H))  # stored: left red, right blue; orientation 6 = rotate 90 cw to show
    exif = Image.Exif()
    exif[0x0112] = 6
    rot.save(imgs / "rot.jpg", exif=exif, quality=95)
    _png(imgs / "empty.png")
    _png(imgs / "sub" / "nested.png")

    m_rle = _rect(16, 26, 22, 36)
    m_raw = _rect(2, 9, 5, 33)
    m_crowd = _rect(12, 28, 0, 12)
    images = [
        {"id": 1, "file_name": "rgb.png", "width": W, "height": H},
        {"id": 2, "file_name": "gray.png", "width": W, "height": H},
        {"id": 3, "file_name": "rgba.png", "width": W, "height": H},
        {"id": 4, "file_name": "pal.png", "width": W, "height": H},
        {"id": 5, "file_name": "deep.png", "width": W, "height": H},
        {"id": 6, "file_name": "cmyk.jpg", "width": W, "height": H},
        {"id": 7, "file_name": "rot.jpg", "width": H, "height": W},  # declared as displayed: rotated
        {"id": 8, "file_name": "empty.png", "width": W, "height": H},
        {"id": 9, "file_name": "sub/nested.png", "width": W, "height": H},
    ]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 4, 16, 10], "area": 160, "iscrowd": 0,
         "segmentation": [[4, 4, 20, 4, 20, 14, 4, 14]]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": _bbox(m_rle), "area": int(m_rle.sum()), "iscrowd": 0,
         "segmentation": _compressed_rle(m_rle)},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": _bbox(m_raw), "area": int(m_raw.sum()), "iscrowd": 0,
         "segmentation": _uncompressed_rle(m_raw)},
        {"id": 4, "image_id": 2, "category_id": 7, "bbox": _bbox(m_crowd), "area": int(m_crowd.sum()),
         "iscrowd": 1, "segmentation": _uncompressed_rle(m_crowd)},
        {"id": 5, "image_id": 3, "category_id": 5, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0,
         "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
        {"id": 6, "image_id": 3, "category_id": 7, "bbox": [3, 3, 0, 5], "area": 0, "iscrowd": 0,
         "segmentation": [[3, 3, 3, 8, 3, 8]]},  # degenerate: zero width
        {"id": 7, "image_id": 3, "category_id": 7, "bbox": [20, 5, 10, 20]},  # box only: no segmentation
        {"id": 8, "image_id": 7, "category_id": 3, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0,
         "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
    ]
    ann = _write(root, images, anns)
    return {"ann": ann, "images": imgs, "masks": {"rle": m_rle, "raw": m_raw, "crowd": m_crowd}, "root": root}


@pytest.fixture(scope="module")
def ds(zoo):
    return CocoDataset(zoo["ann"], zoo["images"], category_ids=MODEL_CATS)


def _idx(ds: CocoDataset, image_id: int) -> int:
    return ds.image_ids.index(image_id)


def test_all_image_modes_decode_to_rgb_float(ds):
    for i in range(len(ds)):
        img = ds.load_image(i)
        info = ds.image_info(i)
        assert img.dtype == torch.float32 and img.shape == (3, info["height"], info["width"]), info["file_name"]
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0


@pytest.mark.parametrize("image_id,yx,rgb,tol", [
    (1, (10, 20), (120 / 255, 80 / 255, 100 / 255), 1e-6),  # RGB png
    (2, (5, 5), (128 / 255,) * 3, 1e-6),                    # L grey
    (3, (5, 5), (1.0, 0.0, 0.0), 1e-6),                     # RGBA opaque red
    (3, (5, 35), (1.0, 1.0, 1.0), 1e-6),                    # RGBA transparent -> white
    (4, (5, 5), (0.0, 1.0, 0.0), 1e-6),                     # P palette index 1
    (4, (5, 35), (0.0, 0.0, 0.0), 1e-6),                    # P palette index 0
    (5, (5, 5), (1.0, 1.0, 1.0), 1e-6),                     # I;16 65535
    (5, (5, 35), (0.25, 0.25, 0.25), 1e-4),                 # I;16 16384 (not clipped to 1 by a 255 scale)
    (6, (15, 20), (1.0, 0.0, 0.0), 0.08),                   # CMYK jpeg red
])
def test_known_pixel_values(ds, image_id, yx, rgb, tol):
    img = ds.load_image(_idx(ds, image_id))
    got = img[:, yx[0], yx[1]]
    assert torch.allclose(got, torch.tensor(rgb), atol=tol), got


def test_exif_rotation_applied(ds):
    img = ds.load_image(_idx(ds, 7))
    assert img.shape == (3, W, H)  # stored 40x30 landscape, shown 30x40 portrait
    top, bottom = img[:, 5, H // 2], img[:, W - 5, H // 2]
    assert torch.allclose(top, torch.tensor([1.0, 0.0, 0.0]), atol=0.1), top       # stored left half: red
    assert torch.allclose(bottom, torch.tensor([0.0, 0.0, 1.0]), atol=0.1), bottom  # stored right half: blue


def test_polygon_and_compressed_rle_targets(ds, zoo):
    img, t = ds[_idx(ds, 1)]
    assert t["image_id"] == 1
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64 and t["masks"].dtype == torch.uint8
    assert t["labels"].tolist() == [2, 1]  # category 7 -> label 2, category 3 -> label 1
    assert t["boxes"][0].tolist() == [4, 4, 20, 14]
    x, y, w, h = _bbox(zoo["masks"]["rle"])
    assert t["boxes"][1].tolist() == [x, y, x + w, y + h]
    assert t["masks"].shape == (2, H, W)
    poly = t["masks"][0].numpy()
    assert 140 <= poly.sum() <= 200 and poly[:4].sum() == 0 and poly[15:].sum() == 0 and poly[:, 21:].sum() == 0
    assert np.array_equal(t["masks"][1].numpy(), zoo["masks"]["rle"])


def test_uncompressed_rle_and_crowd(ds, zoo):
    _, t = ds[_idx(ds, 2)]
    assert t["labels"].tolist() == [1]  # the crowd annotation (category 7) is not a target
    assert np.array_equal(t["masks"][0].numpy(), zoo["masks"]["raw"])
    crowd = ds.coco.anns[4]  # but it stays in the ground truth used for evaluation
    assert crowd["iscrowd"] == 1 and crowd["image_id"] == 2
    assert np.array_equal(ds.coco.annToMask(crowd), zoo["masks"]["crowd"])
    assert 4 in ds.coco.getAnnIds(imgIds=[2], iscrowd=None)


def test_unknown_category_degenerate_box_and_box_only(ds):
    _, t = ds[_idx(ds, 3)]
    # ann 5 (category 5, not the model's) and ann 6 (degenerate) are no targets; ann 7 (box only) is, as a box mask
    assert t["labels"].tolist() == [2]
    assert t["boxes"].tolist() == [[20, 5, 30, 25]]
    assert np.array_equal(t["masks"][0].numpy(), _rect(5, 25, 20, 30))
    assert 5 in ds.coco.anns and 6 not in ds.coco.anns
    assert len(ds.skipped) == 1 and "annotation 6" in ds.skipped[0]


def test_image_without_annotations(ds):
    img, t = ds[_idx(ds, 8)]
    assert t["boxes"].shape == (0, 4) and t["boxes"].dtype == torch.float32
    assert t["labels"].shape == (0,) and t["labels"].dtype == torch.int64
    assert t["masks"].shape == (0, H, W) and t["masks"].dtype == torch.uint8
    assert img.shape == (3, H, W)


def test_nested_file_name_and_len(ds):
    assert len(ds) == 9
    assert ds.load_image(_idx(ds, 9)).shape == (3, H, W)


def test_category_mapping(zoo, ds):
    assert ds.category_ids == MODEL_CATS and ds.label_of == {3: 1, 7: 2}
    assert ds.class_names == ["three", "seven"]
    # another model order: labels follow the model's list
    other = CocoDataset(zoo["ann"], zoo["images"], category_ids=[7, 3])
    assert other[_idx(other, 1)][1]["labels"].tolist() == [1, 2]
    # no model given: the dataset's own categories in ascending id order, so category 5 becomes a target too
    own = CocoDataset(zoo["ann"], zoo["images"])
    assert own.category_ids == [3, 5, 7] and own.class_names == ["three", "five", "seven"]
    assert sorted(own[_idx(own, 3)][1]["labels"].tolist()) == [2, 3]
    # a model sharing no category with the dataset is refused
    with pytest.raises(DatasetError, match="category"):
        CocoDataset(zoo["ann"], zoo["images"], category_ids=[1, 2])


def test_limit(zoo):
    ds = CocoDataset(zoo["ann"], zoo["images"], category_ids=MODEL_CATS, limit=3)
    assert ds.image_ids == [1, 2, 3]


# --------------------------------------------------------------------------------------------------------------
# safety and validation


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink_file", "symlink_dir"])
def test_file_names_escaping_the_root_are_refused(tmp_path, how):
    root = tmp_path / "data" / "images"
    root.mkdir(parents=True)
    outside = _png(tmp_path / "secret" / "outside.png")
    if how == "dotdot":
        name = "../../secret/outside.png"
    elif how == "absolute":
        name = str(outside)
    elif how == "symlink_file":
        os.symlink(outside, root / "link.png")
        name = "link.png"
    else:
        os.symlink(outside.parent, root / "linkdir")
        name = "linkdir/outside.png"
    assert (root / name).is_file()  # the file really is reachable through that name
    ann = _write(tmp_path / "data", [{"id": 1, "file_name": name, "width": W, "height": H}], [])
    ds = CocoDataset(ann, root)
    with pytest.raises(DatasetError, match="outside the image folder"):
        ds[0]


def test_symlink_inside_root_is_fine(tmp_path):
    root = tmp_path / "images"
    _png(root / "real.png")
    os.symlink(root / "real.png", root / "alias.png")
    ann = _write(tmp_path, [{"id": 1, "file_name": "alias.png", "width": W, "height": H}], [])
    assert CocoDataset(ann, root)[0][0].shape == (3, H, W)


def test_invalid_json(tmp_path):
    (tmp_path / "images").mkdir()
    bad = tmp_path / "ann.json"
    bad.write_text('{"images": [ {"id": 1,')
    with pytest.raises(DatasetError, match="invalid JSON"):
        CocoDataset(bad, tmp_path / "images")
    bad.write_text("[1, 2, 3]")
    with pytest.raises(DatasetError):
        CocoDataset(bad, tmp_path / "images")
    with pytest.raises(DatasetError, match="no such file"):
        CocoDataset(tmp_path / "missing.json", tmp_path / "images")
    with pytest.raises(DatasetError, match="no such directory"):
        CocoDataset(bad, tmp_path / "no_images")


def test_validation_reports_all_problems_at_once(tmp_path):
    (tmp_path / "images").mkdir()
    images = [{"id": 1, "file_name": "a.png", "width": W, "height": H},
              {"id": 1, "file_name": "b.png", "width": W, "height": H}]
    anns = [{"id": 1, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]}]
    ann = _write(tmp_path, images, anns)
    with pytest.raises(DatasetError) as e:
        CocoDataset(ann, tmp_path / "images")
    msg = str(e.value)
    assert "duplicate image id 1" in msg and "unknown category_id 99" in msg and "2 problem(s)" in msg
    assert "\n" not in msg and str(ann) in msg


def test_declared_size_mismatch_names_the_file(tmp_path):
    _png(tmp_path / "images" / "wrong_size.png")
    ann = _write(tmp_path, [{"id": 1, "file_name": "wrong_size.png", "width": 50, "height": 50}], [])
    ds = CocoDataset(ann, tmp_path / "images")
    with pytest.raises(DatasetError, match="wrong_size.png"):
        ds[0]


def test_missing_and_corrupt_image_files(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ann = _write(tmp_path, [{"id": 1, "file_name": "gone.png", "width": W, "height": H},
                            {"id": 2, "file_name": "corrupt.png", "width": W, "height": H}], [])
    ds = CocoDataset(ann, tmp_path / "images")
    with pytest.raises(DatasetError, match="gone.png"):
        ds[0]
    with pytest.raises(DatasetError, match="corrupt.png"):
        ds[1]


@pytest.mark.parametrize("size", [(40, 30), (64, 64)])  # 1200 px: PIL warns; 4096 px (> 2x limit): PIL errors
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, size):
    path = _png(tmp_path / "big.png", *size)
    assert load_image(path).shape == (3, size[1], size[0])  # fine under the normal limit
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DatasetError, match="decompression bomb") as e:
        load_image(path)
    assert isinstance(e.value, RobustsegError)
