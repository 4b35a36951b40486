"""Example images: what an attack did to a few images, drawn from files on disk alone.

The runner saves, for the strongest point of each attack family (``example_points``), the first
``MAX_EXAMPLES`` adversarial images with ``save_examples``:

    examples/<point>/<image_id>.png        the adversarial image, 8-bit lossless PNG (for viewing)
    examples/<point>/<image_id>.delta.npy  adv - clean as float16 (3,H,W): the exact perturbation, which
                                           8-bit PNG would round to multiples of 1/255 (all of it, at eps 1/255)

The report picks the worst-hit, median and best of the saved images (by the drop in detections, then the rise
in loss, from per_image.csv) and draws clean vs adversarial predictions (predictions/<point>.json) side by side
with the amplified perturbation. Where no image was saved for a point, it picks among all images and draws the
adversarial predictions over the clean image, saying so.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import atomic_write, write_png

MAX_EXAMPLES = 4


def example_points(points) -> set[str]:
    """Keys of the strongest point (largest eps, then most steps) of each attack family, as the report
    groups them: (attack, norm, variant); random baselines excluded."""
    from .rundata import variant_of
    best: dict[tuple, object] = {}
    for p in points:
        if p.attack in ("clean", "random"):
            continue
        fam = (p.attack, p.norm, variant_of(p.key))
        if fam not in best or (p.eps, p.steps) > (best[fam].eps, best[fam].steps):
            best[fam] = p
    return {p.key for p in best.values()}


def save_examples(out_dir: str | Path, point_key: str, image_ids, adv_images, clean_images,
                  limit: int = MAX_EXAMPLES) -> int:
    """Save adversarial images (and exact perturbations) of one point until ``limit`` are on disk; returns
    how many this call saved. Images are CHW float tensors or arrays in [0,1]."""
    folder = Path(out_dir) / "examples" / point_key
    folder.mkdir(parents=True, exist_ok=True)
    saved = 0
    for iid, adv, clean in zip(image_ids, adv_images, clean_images):
        if len(list(folder.glob("*.png"))) >= limit:
            break
        adv = _np(adv)
        delta = (adv - _np(clean)).astype(np.float16)
        atomic_write(folder / f"{int(iid)}.delta.npy", lambda f: np.save(f, delta), mode="wb")
        write_png(folder / f"{int(iid)}.png", adv.transpose(1, 2, 0))
        saved += 1
    return saved


def _np(x) -> np.ndarray:
    return (x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float32))


def saved_ids(run_dir: Path, point_key: str) -> list[int]:
    folder = run_dir / "examples" / point_key
    return sorted(int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit()) if folder.is_dir() else []


def choose(per_image, point_key: str, candidates: list[int] | None = None) -> list[tuple[str, int]]:
    """[(label, image_id)] for the worst-hit, median and best images of a point (distinct images)."""
    g = per_image[per_image.point == point_key]
    if candidates:
        g = g[g.image_id.isin(candidates)]
    if g.empty:
        return []
    g = g.assign(det_drop=g.detections_clean - g.detections_adv, loss_rise=g.loss_adv - g.loss_clean)
    g = g.sort_values(["det_drop", "loss_rise", "image_id"], ascending=[False, False, True]).reset_index()
    picks: dict[str, int] = {}
    for label, i in (("worst-hit", 0), ("best", len(g) - 1), ("median", len(g) // 2)):  # ends win over median
        if int(g.image_id[i]) not in picks.values():
            picks[label] = int(g.image_id[i])
    return [(label, picks[label]) for label in ("worst-hit", "median", "best") if label in picks]


def load_predictions(run_dir: Path, point_key: str, image_ids: set[int]) -> dict[int, list]:
    out: dict[int, list] = {}
    path = run_dir / "predictions" / f"{point_key}.json"
    if path.is_file():
        for r in json.loads(path.read_text()):
            if int(r["image_id"]) in image_ids:
                out.setdefault(int(r["image_id"]), []).append(r)
    return out


def _overlay(ax, image: np.ndarray, preds: list[dict], names: dict, threshold: float, title: str) -> None:
    """Image with the masks, boxes, labels and scores of detections scoring >= threshold."""
    from pycocotools import mask as mask_utils

    from .plots import _text
    ax.imshow(image)
    h, w = image.shape[:2]
    shown = sorted((r for r in preds if r.get("score", 0) >= threshold), key=lambda r: -r["score"])
    cats = sorted(names)
    masks = np.zeros((h, w, 4))  # every mask in one layer: one composited image, not one per detection
    for r in shown:
        colour = np.array(_COLOURS[cats.index(r["category_id"]) % len(_COLOURS)
                                   if r["category_id"] in cats else -1])
        if "segmentation" in r:
            m = mask_utils.decode(r["segmentation"]).astype(bool)[:h, :w]
            masks[m] = [*colour, 0.45]  # drawn in score order: where masks overlap the lower-scoring one shows
        x, y, bw, bh = r["bbox"]
        ax.add_patch(_rect((x, y), bw, bh, colour))
        ax.text(x, y, _text(f"{names.get(r['category_id'], r['category_id'])} {r['score']:.2f}"), fontsize=7,
                color="white", va="bottom", bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "lw": 0})
    if masks[..., 3].any():
        ax.imshow(masks)
    ax.set_title(_text(f"{title}: {len(shown)} detections"), fontsize=9)
    ax.axis("off")


def _rect(xy, w, h, colour):
    from matplotlib.patches import Rectangle
    return Rectangle(xy, w, h, fill=False, edgecolor=colour, linewidth=1.5)


_COLOURS = [(0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
            (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81)]


def example_figure(clean: np.ndarray, adv: np.ndarray | None, delta: np.ndarray | None, clean_preds: list,
                   adv_preds: list, names: dict, threshold: float):
    """Clean | adversarial (or clean again, when the adversarial image was not saved) | amplified delta.

    Images are HxWx3 floats in [0,1]; delta is 3xHxW."""
    from matplotlib.figure import Figure
    n = 3 if delta is not None else 2
    h, w = clean.shape[:2]
    fig = Figure(figsize=(3.2 * n, 3.2 * h / w + 0.5), layout="constrained")
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    _overlay(axes[0], clean, clean_preds, names, threshold, "clean")
    _overlay(axes[1], adv if adv is not None else clean, adv_preds, names, threshold,
             "adversarial" if adv is not None else "attacked predictions on clean image")
    if delta is not None:
        peak = float(np.abs(delta).max()) or 1.0
        axes[2].imshow(np.clip(0.5 + delta.transpose(1, 2, 0) / (2 * peak), 0, 1))
        axes[2].set_title(f"perturbation x{0.5 / peak:.0f} (max {peak * 255:.1f}/255)", fontsize=9)
        axes[2].axis("off")
    return fig


def load_example_images(run_dir: Path, point_key: str, image_id: int, clean: np.ndarray):
    """(adversarial HxWx3 or None, delta 3xHxW or None) from examples/; delta falls back to the 8-bit PNG
    minus the clean image when the .npy is missing."""
    folder = run_dir / "examples" / point_key
    png, npy = folder / f"{image_id}.png", folder / f"{image_id}.delta.npy"
    if not png.is_file():
        return None, None
    adv = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32) / 255
    delta = np.load(npy).astype(np.float32) if npy.is_file() else (adv - clean).transpose(2, 0, 1)
    return adv, delta
