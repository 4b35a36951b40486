"""Per-image patches: one patch per image at a fixed place, optimised for that image alone (no EOT).

``optimise_fixed`` is shared with the per-object patches: every image of a batch carries a list of
(patch, placement) pairs, and all patches of the batch are optimised jointly with Adam against the attack
engine's objective. The random-noise baseline is each patch's starting point, so the gap between the two is
what the optimisation bought.
"""
from __future__ import annotations

import torch

from ..attacks.objectives import attack_targets, make_objective
from ..models.modes import attack_mode
from ..utils import derived_seed
from .apply import FIXED, Placement, paste, sample_placement, side_pixels
from .universal import init_patch


def image_placement(g: torch.Generator, h: int, w: int, boxes: torch.Tensor, cfg: dict) -> Placement:
    """``cfg`` is the suite's [per-image] table: location "chosen" (seeded, obeying the policy) or [x, y]
    centre fractions (moved inwards just enough for the patch to stay inside the image)."""
    side = side_pixels(h, w, cfg["side"])
    if cfg["location"] == "chosen":
        return sample_placement(g, h, w, side, boxes, cfg["policy"], FIXED)
    fx, fy = cfg["location"]
    r = min(side / 2, w / 2, h / 2)
    return Placement(min(max(fx * w, r), w - r), min(max(fy * h, r), h - r), side)


def render(image: torch.Tensor, patches: list[torch.Tensor], placements: list[Placement]) -> torch.Tensor:
    for p, pl in zip(patches, placements):
        image = paste(image, p, pl)
    return image


def resolution(pl: Placement) -> int:
    """Patch pixels per side: the size it is shown at, so every patch pixel gets a gradient."""
    return max(2, round(pl.side))


def start_patches(placements: list[list[Placement]], ids: list[int], seed: int, kind: str, device,
                  natural: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
    """Seeded patches of ``kind`` (random, grey, natural), one per placement; the random ones are also where the
    optimisation starts."""
    return [[init_patch(kind, resolution(pl), derived_seed(seed, kind, iid, k), natural).to(device)
             for k, pl in enumerate(pls)] for pls, iid in zip(placements, ids)]


def optimise_fixed(model, images: list[torch.Tensor], targets: list[dict], placements: list[list[Placement]],
                   ids: list[int], objective: str, losses, num_classes: int, target_label: int | None, steps: int,
                   lr: float, seed: int, bar=None) -> tuple[list[list[torch.Tensor]], list[float]]:
    """Adversarial patches at fixed placements for one batch; returns them and the objective at every step."""
    patches = start_patches(placements, ids, seed, "random", images[0].device)
    params = [p.requires_grad_(True) for ps in patches for p in ps]
    history: list[float] = []
    if params and steps:
        obj = make_objective(objective, losses)
        tg = attack_targets(objective, targets, None, num_classes, target_label)
        opt = torch.optim.Adam(params, lr=lr)
        with attack_mode(model):
            for step in range(steps):
                xs = [render(x, ps, pls) for x, ps, pls in zip(images, patches, placements)]
                torch.manual_seed(derived_seed(seed, "fixed-model", ids[0], step))
                loss, _ = obj(model, xs, tg)
                opt.zero_grad()
                (-loss).backward()
                opt.step()
                with torch.no_grad():
                    for p in params:
                        p.clamp_(0, 1)
                history.append(float(loss.detach()))
                if bar is not None:
                    bar.set_postfix(objective=f"{history[-1]:.4f}")
    return [[p.detach() for p in ps] for ps in patches], history
