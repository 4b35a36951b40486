"""Patch files: saved patches (.pt, read with weights_only=True), PNG views and tiled grids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import RobustsegError
from ..fileio import atomic_write, sha256_file


def load_patch_file(path: str | Path) -> dict:
    """A saved patch (patches/universal.pt): {"patch": (3,h,w) tensor in [0,1], "side": ..., ...}; a bare tensor
    is accepted too (its side then comes from the suite)."""
    p = Path(path)
    if not p.is_file():
        raise RobustsegError(f"--apply {p}: no such file")
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # garbage, truncated, or pickled objects other than tensors (refused, never run)
        raise RobustsegError(f"--apply {p}: not a readable patch tensor file ({type(e).__name__})") from None
    d = {"patch": d} if torch.is_tensor(d) else d
    t = d.get("patch") if isinstance(d, dict) else None
    if not torch.is_tensor(t) or t.dim() != 3 or t.shape[0] != 3 or not t.is_floating_point():
        raise RobustsegError(f"--apply {p}: holds no (3,h,w) float patch under 'patch' (a per-image/per-object "
                             f"file cannot be re-applied: its patches belong to their images)")
    return {**d, "patch": t.float().clamp(0, 1), "path": str(p.resolve()), "sha256": sha256_file(p)}


def read_png(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def grid(tiles: list[torch.Tensor], size: int = 24, cols: int = 8) -> torch.Tensor:
    """Patches (or images) of any sizes tiled into one (3,H,W) image, nearest-neighbour resized."""
    tiles = [torch.nn.functional.interpolate(t[None].float().cpu(), size=(size, size), mode="nearest")[0]
             for t in tiles] or [torch.ones(3, size, size)]
    cols = min(cols, len(tiles))
    tiles += [torch.ones(3, size, size)] * (-len(tiles) % cols)
    return torch.cat([torch.cat(tiles[i:i + cols], 2) for i in range(0, len(tiles), cols)], 1)


def save_pt(path: Path, obj) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), mode="wb")
