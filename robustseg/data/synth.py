"""Synthetic shapes with known shape and texture cues, written as a real COCO dataset.

Classes: circle (1), square (2), triangle (3). Each class has its own texture (stripes, dots, checks) with random
colours, scale and orientation, so both shape and texture identify the class, and colour does not. Options:
- ``fill="uniform"``: every object one flat colour (shape is the only cue);
- ``cue_conflict=p``: a fraction p of objects wear another class's texture (category_id follows the shape);
- ``shape_mode="random"``: shapes are random and the class is the texture (texture is the only reliable cue).
Every annotation records ``shape_category_id`` and ``texture_category_id``. Deterministic per seed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from ..fileio import write_json

CATEGORIES = [{"id": 1, "name": "circle", "supercategory": "shape"},
              {"id": 2, "name": "square", "supercategory": "shape"},
              {"id": 3, "name": "triangle", "supercategory": "shape"}]
TEXTURE_OF = {1: "stripes", 2: "dots", 3: "checks"}
GENERATOR_VERSION = 1


def _shape_mask(kind: int, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == 1:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        n = 4 if kind == 2 else 3
        rr = r * (1.25 if kind == 2 else 1.35)  # similar visual size across shapes
        th = angle + np.arange(n) * 2 * np.pi / n
        draw.polygon(list(zip(cx + rr * np.cos(th), cy + rr * np.sin(th))), fill=1)
    return np.asarray(canvas, dtype=bool)


def _texture(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A binary pattern in [0,1], HxW, for texture class ``kind``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    th = rng.uniform(0, np.pi)
    u = xx * np.cos(th) + yy * np.sin(th)
    v = -xx * np.sin(th) + yy * np.cos(th)
    if kind == 1:  # stripes
        period = rng.uniform(4.0, 7.0)
        return ((u / period) % 1.0 < 0.5).astype(np.float32)
    if kind == 2:  # dots
        period = rng.uniform(6.0, 9.0)
        du, dv = (u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5
        return (np.hypot(du, dv) < 0.3).astype(np.float32)
    period = rng.uniform(4.0, 7.0)  # checks
    return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    while True:
        a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if np.abs(a - b).mean() > 0.35:
            return a, b


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    t = np.linspace(0, 1, size, dtype=np.float32)
    th = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(th) * t[None, :] + np.sin(th) * t[:, None])
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    img = c0[None, None] * (1 - ramp[..., None]) + c1[None, None] * ramp[..., None]
    return img + rng.normal(0, 0.03, (size, size, 3))


def render_image(rng: np.random.Generator, size: int = 128, fill: str = "texture", cue_conflict: float = 0.0,
                 shape_mode: str = "class") -> tuple[np.ndarray, list[dict]]:
    """One image (HxWx3 uint8) and its objects: dicts with category/shape/texture ids and visible bool masks."""
    img = _background(size, rng)
    objects: list[dict] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            r = rng.uniform(0.09, 0.2) * size
            cx, cy = rng.uniform(r, size - r, 2)
            shape = int(rng.integers(1, 4))
            mask = _shape_mask(shape, size, cx, cy, r, rng.uniform(0, 2 * np.pi))
            # some overlap is welcome, but every earlier object must stay mostly visible
            if mask.sum() >= 30 and all((o["mask"] & ~mask).sum() >= 0.6 * o["full_area"] for o in objects):
                break
        else:
            continue
        if shape_mode == "random":
            texture = int(rng.integers(1, 4))
            category = texture
        else:
            texture = shape
            if cue_conflict > 0 and rng.uniform() < cue_conflict:
                texture = int(rng.choice([k for k in (1, 2, 3) if k != shape]))
            category = shape
        a, b = _two_colours(rng)
        if fill == "uniform":
            colour = np.broadcast_to(a, (size, size, 3))
        else:
            t = _texture(texture, size, rng)[..., None]
            colour = a * t + b * (1 - t)
        img[mask] = colour[mask]
        for o in objects:
            o["mask"] = o["mask"] & ~mask
        objects.append({"category_id": category, "shape_category_id": shape, "texture_category_id": texture,
                        "mask": mask, "full_area": int(mask.sum())})
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), objects


def _annotation(obj: dict, ann_id: int, image_id: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray(obj["mask"].astype(np.uint8)))
    bbox = [float(x) for x in mask_utils.toBbox(rle)]
    return {"id": ann_id, "image_id": image_id, "category_id": obj["category_id"],
            "shape_category_id": obj["shape_category_id"], "texture_category_id": obj["texture_category_id"],
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": float(mask_utils.area(rle)), "bbox": bbox, "iscrowd": 0}


def generate(out_dir: str | Path, n: int, seed: int = 0, size: int = 128, fill: str = "texture",
             cue_conflict: float = 0.0, shape_mode: str = "class", progress: bool = False) -> Path:
    """Write ``out_dir/annotations.json`` and ``out_dir/images/*.png``; returns the annotations path."""
    if fill not in ("texture", "uniform") or shape_mode not in ("class", "random") or not 0 <= cue_conflict <= 1:
        raise ValueError("fill must be texture|uniform, shape_mode class|random, cue_conflict in [0,1]")
    if n < 1 or size < 32:
        raise ValueError("need n >= 1 and size >= 32")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, anns = [], []
    it = range(n)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="synth", unit="img")
    for i in it:
        arr, objects = render_image(rng, size, fill, cue_conflict, shape_mode)
        name = f"{i:06d}.png"
        Image.fromarray(arr).save(out / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for o in objects:
            anns.append(_annotation(o, len(anns) + 1, i + 1))
    params = {"n": n, "seed": seed, "size": size, "fill": fill, "cue_conflict": cue_conflict,
              "shape_mode": shape_mode, "generator_version": GENERATOR_VERSION}
    coco = {"info": {"description": "robustseg synthetic shapes", "params": params,
                     "textures": {str(k): v for k, v in TEXTURE_OF.items()}},
            "images": images, "annotations": anns, "categories": CATEGORIES}
    return write_json(out / "annotations.json", coco)


# The default evaluation split: fixed seed never used for training the shipped model (that used seed 0).
DEFAULT_SPLIT = {"n": 200, "seed": 12345, "size": 128}


def cache_dir() -> Path:
    return Path(os.environ.get("ROBUSTSEG_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                               / "robustseg"))


def default_split(**overrides) -> tuple[Path, Path]:
    """(annotations.json, images dir) of the default synthetic split, generated once into the cache."""
    params = {**DEFAULT_SPLIT, **overrides, "v": GENERATOR_VERSION}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    root = cache_dir() / "synth" / f"split-{params['seed']}-{key}"
    ann = root / "annotations.json"
    if not ann.is_file():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        generate(tmp, **{k: v for k, v in params.items() if k != "v"})  # every override, not only n/seed/size
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    return ann, root / "images"
