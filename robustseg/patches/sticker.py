"""Where a physical sticker goes: on an object (covering a chosen fraction of its box, as a sticker on a car or a
box), off every object (on the background), or anywhere. The site is the sticker's centre and side before the
viewing conditions of ``physical.py`` turn, tilt and shrink it."""
from __future__ import annotations

import math
from typing import Callable

import torch

from .apply import FIXED, sample_placement, side_pixels, uniform
from .physical import Conditions, PhysicalEOT, draw, reach, render, stack

PLACEMENTS = ("on-object", "off-object", "anywhere")


def on_object(g: torch.Generator, h: int, w: int, box: list[float], cover: float) -> tuple[float, float, float]:
    """A square of ``cover`` x the box's area, at a seeded position inside the box (its centre when it does not
    fit), moved inside the image (centred on it along a side it is larger than)."""
    x0, y0, x1, y1 = box
    side = max(math.sqrt(cover * max(x1 - x0, 0) * max(y1 - y0, 0)), 2.0)
    r = side / 2
    cx = uniform(g, x0 + r, x1 - r) if x1 - x0 > side else (x0 + x1) / 2
    cy = uniform(g, y0 + r, y1 - r) if y1 - y0 > side else (y0 + y1) / 2
    return _inside(cx, r, w), _inside(cy, r, h), side


def _inside(centre: float, r: float, extent: float) -> float:
    """``centre`` moved so that [centre - r, centre + r] lies in [0, extent]; the middle when it cannot (a sticker
    wider than the image, as one covering a long thin box can be), never a centre off the image."""
    return min(max(centre, min(r, extent / 2)), max(extent - r, extent / 2))


def site(g: torch.Generator, h: int, w: int, boxes: torch.Tensor, cfg: dict, eot: PhysicalEOT
         ) -> tuple[tuple[float, float, float], bool]:
    """((cx, cy, side), held) under ``cfg["placement"]`` (the suite's [physical] table); ``held`` is False when
    the rule could not be met (no object to stick on, or no clear background)."""
    boxes = boxes.detach().float().cpu().reshape(-1, 4)
    if cfg["placement"] == "on-object" and len(boxes):
        box = boxes[int(torch.randint(len(boxes), (), generator=g))].tolist()
        return on_object(g, h, w, box, cfg["cover"]), True
    side = side_pixels(h, w, cfg["side"])
    # the circle around the sticker whatever its turn and tilt (the tilt's near side is larger than the
    # half-diagonal) is what must clear the objects and stay in the image
    policy = "avoid-objects" if cfg["placement"] == "off-object" else "anywhere"
    pl = sample_placement(g, h, w, side * reach(eot.tilt), boxes, policy, FIXED)
    return (pl.cx, pl.cy, side), pl.ok and (cfg["placement"] != "on-object")


def conditions(gens: list[torch.Generator], images: list[torch.Tensor], targets: list[dict], cfg: dict,
               eot: PhysicalEOT) -> tuple[Conditions, list[bool]]:
    """Each image's site and viewing conditions, drawn from its own generator; and whether its site rule held."""
    draws, held = [], []
    for g, img, tgt in zip(gens, images, targets):
        where, ok = site(g, *img.shape[1:], tgt["boxes"], cfg, eot)
        draws.append(draw(g, where, img.shape[1:], eot))
        held.append(ok)
    return stack(draws, images[0].device), held


def physical_scene(cfg: dict, eot: PhysicalEOT) -> Callable:
    """The training scene of the physical patch: ``cfg["train_eot"]`` of the viewing conditions applied."""
    def scene(g: torch.Generator, images: list, targets: list, patch: torch.Tensor) -> list:
        c, _ = conditions([g] * len(images), images, targets, cfg, eot)
        return render(images, patch, c.only(cfg["train_eot"]))
    return scene
