"""Universal patch: one patch for every image, optimised with Adam over a training split under EOT (DPatch, Liu et
al. 2018; Thys et al. 2019). Each step draws a batch and a random placement per image; the patch is pasted
differentiably and moved to *increase* the attack engine's objective (gt / vanish / mislabel), pixels kept in [0,1].

Every step's randomness comes from (seed, step), and the patch + Adam state are saved atomically every
``save_every`` steps, so an interrupted training resumes to the very same patch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..attacks.objectives import attack_targets, make_objective
from ..fileio import atomic_write
from ..models.modes import attack_mode
from ..utils import derived_seed
from .apply import EOT, paste, sample_placement, side_pixels


def init_patch(kind: str, resolution: int, seed: int, natural: torch.Tensor | None = None) -> torch.Tensor:
    """A (3,r,r) patch: uniform noise (seeded), flat grey, or a crop of a natural image resized to r."""
    if kind == "random":
        return torch.rand(3, resolution, resolution, generator=torch.Generator().manual_seed(seed))
    if kind == "grey":
        return torch.full((3, resolution, resolution), 0.5)
    if kind == "natural":
        g = torch.Generator().manual_seed(seed)
        _, h, w = natural.shape
        s = max(2, min(h, w) // 2)  # a crop of half the short side: texture and edges, not a single colour
        y, x = (int(torch.randint(d - s + 1, (), generator=g)) for d in (h, w))
        crop = natural[:, y:y + s, x:x + s].float().cpu()[None]
        return torch.nn.functional.interpolate(crop, size=(resolution, resolution), mode="area")[0].clamp(0, 1)
    raise ValueError(kind)


def _save_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f), mode="wb")


def digital_scene(cfg: dict, eot: EOT) -> Callable:
    """The digital EOT of docs/patches.md: a random placement, scale, rotation and lighting per image."""
    def scene(g: torch.Generator, images: list, targets: list, patch: torch.Tensor) -> list:
        return [paste(img, patch, sample_placement(g, *img.shape[1:], side_pixels(*img.shape[1:], cfg["side"]),
                                                   tgt["boxes"], cfg["policy"], eot))
                for img, tgt in zip(images, targets)]
    return scene


def train_universal(model, load: Callable[[int], tuple], n_images: int, cfg: dict, eot: EOT, objective: str,
                    losses, num_classes: int, target_label: int | None, seed: int, device="cpu",
                    state_path: Path | None = None, resume: bool = False, progress: bool = True, *,
                    scene: Callable | None = None, penalty: Callable | None = None, tag: str = "universal"
                    ) -> tuple[torch.Tensor, list[float]]:
    """Returns the trained (3,r,r) patch and the objective at every step.

    ``load(i)`` gives training image i and its target on ``device``; ``cfg`` is the suite's [universal] table (or
    [physical]: any table with resolution, steps, batch_size, lr, save_every). ``scene(g, images, targets, patch)``
    puts the patch in the images (default: ``digital_scene``); ``penalty(patch)`` is subtracted from the objective
    (the physical patch's NPS and TV); ``tag`` names the seed streams.
    """
    scene = scene or digital_scene(cfg, eot)
    obj = make_objective(objective, losses)
    patch = init_patch("random", cfg["resolution"], derived_seed(seed, f"{tag}-init")).to(device)
    patch.requires_grad_(True)
    opt = torch.optim.Adam([patch], lr=cfg["lr"])
    start, history = 0, []
    if resume and state_path is not None and state_path.is_file():
        st = torch.load(state_path, map_location=device, weights_only=True)
        with torch.no_grad():
            patch.copy_(st["patch"])
        opt.load_state_dict(st["optimizer"])
        start, history = int(st["step"]), list(st["history"])
    bar = tqdm(total=cfg["steps"], initial=start, desc=f"patch-{tag}", unit="step", disable=not progress,
               dynamic_ncols=True)
    with attack_mode(model):
        for step in range(start, cfg["steps"]):
            g = torch.Generator().manual_seed(derived_seed(seed, tag, step))
            idx = torch.randperm(n_images, generator=g)[:cfg["batch_size"]].tolist()
            imgs, gts = zip(*(load(i) for i in idx))
            xs = scene(g, list(imgs), list(gts), patch)
            torch.manual_seed(derived_seed(seed, f"{tag}-model", step))  # the model's own proposal sampling
            loss, _ = obj(model, xs, attack_targets(objective, list(gts), None, num_classes, target_label))
            cost = -loss if penalty is None else penalty(patch) - loss
            opt.zero_grad()
            cost.backward()  # Adam minimises; the attack maximises the objective
            opt.step()
            with torch.no_grad():
                patch.clamp_(0, 1)
            history.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(objective=f"{sum(history[-10:]) / len(history[-10:]):.4f}")
            if state_path is not None and ((step + 1) % cfg["save_every"] == 0 or step + 1 == cfg["steps"]):
                _save_state(state_path, {"step": step + 1, "patch": patch.detach().cpu(),
                                         "optimizer": opt.state_dict(), "history": history})
    bar.close()
    return patch.detach(), history
