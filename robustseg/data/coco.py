"""Read a COCO instances dataset into (image, target) pairs in the form torchvision's Mask R-CNN wants.

Targets: ``boxes`` float xyxy, ``labels`` int64 model labels, ``masks`` uint8 (N,H,W), ``image_id``.
Crowd regions are kept in the ground truth used for evaluation but never become training/attack targets.
Category ids map to model labels through the model's ``category_ids`` (label i <-> category_ids[i-1]).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO

from ..errors import DatasetError
from ..fileio import read_json
from .images import image_size, load_image, safe_join


def read_coco_json(path: str | Path) -> dict:
    """A COCO instances file, validated (validate.py); any problem is one DatasetError line naming the file."""
    path = Path(path)
    d = read_json(path, "annotations", error=DatasetError)  # nesting bounded: nothing later can recurse deeply
    if not isinstance(d, dict) or not isinstance(d.get("images"), list):
        raise DatasetError(f"annotations {path}: not a COCO instances file (no 'images' list)")
    d.setdefault("annotations", [])
    d.setdefault("categories", [])
    from .validate import validate_coco
    validate_coco(d, str(path))
    return d


def coco_from_dict(d: dict) -> COCO:
    coco = COCO()
    coco.dataset = d
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


class CocoDataset(torch.utils.data.Dataset):
    """A COCO dataset as (image [0,1] CHW float, target dict) pairs.

    ``category_ids``: the model's label -> category_id list; annotations of other categories are not targets.
    ``None`` uses the dataset's own categories in ascending id order (what training a new model does).
    """

    def __init__(self, ann_file: str | Path, image_root: str | Path, category_ids: Sequence[int] | None = None,
                 limit: int | None = None):
        self.ann_file, self.image_root = Path(ann_file), Path(image_root)
        if not self.image_root.is_dir():
            raise DatasetError(f"image folder {self.image_root}: no such directory")
        self.data = read_coco_json(self.ann_file)
        self.skipped: list[str] = self.data.pop("_robustseg_skipped", [])  # annotations dropped by validation
        self.coco = coco_from_dict(self.data)
        self.dataset_category_ids = sorted(int(c["id"]) for c in self.data["categories"])
        self.category_ids = list(category_ids) if category_ids is not None else self.dataset_category_ids
        self.label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        if self.data["annotations"] and not set(self.label_of) & set(self.dataset_category_ids):
            raise DatasetError(f"none of the dataset's category ids {self.dataset_category_ids[:8]} is among the "
                               f"model's {self.category_ids[:8]}: wrong model for this dataset?")
        self.image_ids = sorted(int(im["id"]) for im in self.data["images"])
        if limit is not None:
            self.image_ids = self.image_ids[:limit]
        self.has_annotations = bool(self.data["annotations"])

    @property
    def class_names(self) -> list[str]:
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in self.data["categories"]}
        return [names.get(cid, str(cid)) for cid in self.category_ids]

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_info(self, idx: int) -> dict:
        return self.coco.imgs[self.image_ids[idx]]

    def image_path(self, idx: int) -> Path:
        return safe_join(self.image_root, self.image_info(idx)["file_name"])

    def check_images(self) -> dict[int, str]:
        """Every image that cannot be used, found up front from file headers: {image_id: problem}.

        Catches names escaping the image folder, missing or non-image files and declared sizes that differ from
        the real (EXIF-rotated) ones; a file corrupt past its header is still caught when it is decoded.
        """
        problems = {}
        for idx, iid in enumerate(self.image_ids):
            info = self.image_info(idx)
            try:
                w, h = image_size(self.image_path(idx))
            except DatasetError as e:
                problems[iid] = str(e)
                continue
            if (h, w) != (int(info["height"]), int(info["width"])):
                problems[iid] = (f"image {info['file_name']}: is {w}x{h} but the annotations declare "
                                 f"{info['width']}x{info['height']}")
        return problems

    def load_image(self, idx: int) -> torch.Tensor:
        info = self.image_info(idx)
        img = load_image(self.image_path(idx))
        h, w = img.shape[1:]
        if (h, w) != (int(info["height"]), int(info["width"])):
            raise DatasetError(f"image {info['file_name']}: is {w}x{h} but the annotations declare "
                               f"{info['width']}x{info['height']}")
        return img

    def target(self, idx: int) -> dict[str, Any]:
        info = self.image_info(idx)
        h, w = int(info["height"]), int(info["width"])
        boxes, labels, masks = [], [], []
        for ann in self.coco.imgToAnns.get(info["id"], []):
            if ann.get("iscrowd", 0) or int(ann["category_id"]) not in self.label_of:
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue  # degenerate after clipping: not a usable target (validation reports it)
            boxes.append([x0, y0, x1, y1])
            labels.append(self.label_of[int(ann["category_id"])])
            masks.append(self.coco.annToMask(ann) if "segmentation" in ann else _box_mask(h, w, x0, y0, x1, y1))
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.uint8),
            "image_id": int(info["id"]),
        }

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.load_image(idx), self.target(idx)


def _box_mask(h: int, w: int, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = 1
    return m


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict]]:
    return [b[0] for b in batch], [b[1] for b in batch]
