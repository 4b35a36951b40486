"""The cue-conflict set: objects whose shape says one class and whose texture another (Geirhos et al. 2019).
The dataset's own such objects, a generated set for robustseg synthetic data, or one built from a real
dataset's objects."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.coco import CocoDataset, coco_from_dict
from ..errors import RobustsegError
from ..fileio import sha256_file, write_json
from ..models.checkpoint import LoadedModel
from ..utils import derived_seed
from . import transforms as T
from .config import chw as _chw, hwc as _hwc

SYNTH_DESCRIPTION = "robustseg synthetic shapes"


@dataclass
class CueConflictSet:
    gt: object                              # pycocotools COCO with shape_category_id / texture_category_id
    image_ids: list[int]
    load: Callable[[int], torch.Tensor]     # position -> [0,1] CHW image
    info: dict                              # how it was made (recorded in run.json and shape_bias.json)


def _conflicting(anns: list[dict]) -> bool:
    return any(a.get("texture_category_id") not in (None, a.get("shape_category_id")) for a in anns)


def cue_conflict_set(ds: CocoDataset, lm: LoadedModel, out: Path, cfg: dict, seed: int,
                     n_images: int, skip: frozenset[int] = frozenset()) -> CueConflictSet:
    """The dataset itself if it holds cue-conflict objects; a generated one for robustseg synthetic data; else
    one built from the dataset's own objects (each mask filled with another class's object texture)."""
    c = cfg["cue-conflict"]
    n = int(c["images"]) or n_images
    s = derived_seed(seed, "cue-conflict") % 2**31
    anns = ds.data["annotations"]
    if _conflicting(anns):
        info = {"source": "dataset", "note": "the dataset's own objects whose texture_category_id differs from "
                                              "their shape_category_id"}
        return CueConflictSet(ds.coco, ds.image_ids, ds.load_image, info)
    params = ds.data.get("info", {}).get("params") if isinstance(ds.data.get("info"), dict) else None
    if ds.data.get("info", {}).get("description") == SYNTH_DESCRIPTION and params:
        from ..data.synth import generate
        size = int(params.get("size", ds.image_info(0)["width"]))
        gen = {"n": n, "seed": s, "size": size, "fill": "texture", "cue_conflict": 1.0, "shape_mode": "class"}
        ann = out / "cue_conflict" / "annotations.json"
        if not _generated_with(ann, gen):  # made once: by the main rank, or before an interruption
            ann = generate(out / "cue_conflict", **gen)
        cc = CocoDataset(ann, out / "cue_conflict" / "images", category_ids=lm.category_ids)
        info = {"source": "generated", "generator": "robustseg.data.synth.generate", "params": gen,
                "annotations": str(ann), "sha256": sha256_file(ann)}
        return CueConflictSet(cc.coco, cc.image_ids, cc.load_image, info)
    return _real_cue_conflict(ds, out, c, s, n, skip)


def _generated_with(ann: Path, gen: dict) -> bool:
    import json
    try:
        params = json.loads(ann.read_text())["info"]["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(params.get(k) == v for k, v in gen.items())


def _real_cue_conflict(ds: CocoDataset, out: Path, c: dict, seed: int, n: int,
                       skip: frozenset[int] = frozenset()) -> CueConflictSet:
    """Shape from each object's mask, texture from an object of another class in another image (seeded).
    Images in ``skip`` (unreadable) are neither probed nor texture donors."""
    rng = np.random.default_rng(seed)
    usable = [iid for iid in ds.image_ids if iid not in skip]
    ids = usable[:n]
    pos = {iid: i for i, iid in enumerate(ds.image_ids)}
    objs = [a for iid in usable for a in ds.coco.imgToAnns.get(iid, [])
            if not a.get("iscrowd", 0) and int(a["category_id"]) in ds.label_of and a.get("area", 0) >= c["min_area"]]
    if len({a["category_id"] for a in objs}) < 2:
        raise RobustsegError("cue-conflict on real data needs objects of at least two classes "
                             f"(area >= {c['min_area']} px); leave it out with --probes")
    new_anns, donor_of = [], {}
    for iid in ids:
        for a in ds.coco.imgToAnns.get(iid, []):
            a2 = {**a, "shape_category_id": a["category_id"], "texture_category_id": a["category_id"]}
            pool = [d for d in objs if d["category_id"] != a["category_id"] and d["image_id"] != iid] or \
                   [d for d in objs if d["category_id"] != a["category_id"]]
            if a in objs and pool:
                d = pool[int(rng.integers(len(pool)))]
                a2.update(texture_category_id=d["category_id"], texture_donor={"image_id": d["image_id"],
                                                                              "annotation_id": d["id"]})
                donor_of[a["id"]] = d
            new_anns.append(a2)
    data = {"info": {"description": "robustseg cue-conflict set (real data)", "seed": seed},
            "images": [ds.coco.imgs[i] for i in ids], "annotations": new_anns, "categories": ds.data["categories"]}
    ann_path = write_json(out / "cue_conflict" / "annotations.json", data)
    gt = coco_from_dict(data)
    cache: dict[int, np.ndarray] = {}

    def image(iid: int) -> np.ndarray:
        if iid not in cache:
            if len(cache) > 32:
                cache.clear()
            cache[iid] = _hwc(ds.load_image(pos[iid]))
        return cache[iid]

    def load(i: int) -> torch.Tensor:
        iid = ids[i]
        img = image(iid).copy()
        for a in sorted(gt.imgToAnns.get(iid, []), key=lambda a: -a["area"]):  # small objects stay on top
            d = donor_of.get(a["id"])
            if d is not None:
                tex, tmask = T.object_texture(image(d["image_id"]), ds.coco.annToMask(d).astype(bool))
                img = T.fill_with_texture(img, ds.coco.annToMask(a).astype(bool), tex, tmask)
        return _chw(img)

    info = {"source": "built", "seed": seed, "min_area": c["min_area"], "annotations": str(ann_path),
            "objects_with_foreign_texture": len(donor_of),
            "method": "each object's mask filled with the bounding-box crop of a random object of another class "
                      "from another image at its own scale (donor background replaced by the nearest donor-object "
                      "pixel, mirrored to cover larger objects); texture class = the donor's class"}
    return CueConflictSet(gt, ids, load, info)
