"""Patch files: saved patches (.pt, read with weights_only=True), PNG views and tiled grids."""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import RobustsegError
from ..fileio import atomic_write, sha256_file
from ..fileio import write_png as save_png


def load_patch_file(path: str | Path) -> dict:
    """A saved patch (patches/universal.pt): {"patch": (3,h,w) tensor in [0,1], "side": ..., ...}; a bare tensor
    is accepted too (its side then comes from the suite). Non-finite or out-of-[0,1] values are refused."""
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
    _check_colours(p, t)
    return {**d, "patch": t.float(), "path": str(p.resolve()), "sha256": sha256_file(p)}


def _check_colours(p: Path, t: torch.Tensor) -> None:
    """Every value a colour in [0,1], as every saved patch is: clamping a NaN leaves it NaN (a NaN photo), and
    clamping a patch saved in 0-255 or normalised would judge a different, mostly black or white, patch."""
    if not bool(torch.isfinite(t).all()):
        raise RobustsegError(f"--apply {p}: the patch has non-finite values (NaN or inf)")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0 or hi > 1:
        raise RobustsegError(f"--apply {p}: the patch's values span [{lo:.4g}, {hi:.4g}]; a patch holds colours "
                             f"in [0, 1]")


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


PRINT_DPI = 300  # at least this many printed dots per inch (up to MAX_PNG_SIDE): the patch enlarged to it
MAX_PNG_SIDE = 8192  # pixels: an exported PNG is at most this wide (69 cm at 300 DPI; wider prints get fewer DPI)
PNG_MODES = ("RGB", "L", "P", "1", "RGBA", "LA", "PA")  # 8-bit colour, grey or palette (alpha must be opaque)
# What Pillow raises for a malformed chunk: Image.open() turns these into UnidentifiedImageError for the chunks
# before the pixels, but a bad one after them (a zTXt with an unknown compression method) surfaces raw from load()
PIL_BROKEN_FILE = (SyntaxError, IndexError, TypeError, struct.error)


def export_print_png(path: Path, patch: torch.Tensor, width_cm: float) -> dict:
    """The patch as a PNG that prints ``width_cm`` wide: enlarged nearest-neighbour by a whole factor to at least
    PRINT_DPI (every patch pixel stays one flat square of colour), at most MAX_PNG_SIDE pixels wide (a 10 m print
    is not a 1.2-million-pixel PNG), its DPI in the pHYs chunk. Returns its size."""
    if not width_cm > 0:
        raise RobustsegError(f"print width must be a positive number of centimetres, not {width_cm!r}")
    res = patch.shape[-1]
    factor = max(1, min(math.ceil(PRINT_DPI * width_cm / 2.54 / res), MAX_PNG_SIDE // res))
    dpi = factor * res / (width_cm / 2.54)
    save_png(path, patch, scale=factor, dpi=dpi)
    return {"path": str(path), "pixels": factor * res, "dpi": dpi, "width_cm": width_cm}


def printed_width_cm(path: Path) -> float | None:
    """The width a PNG prints at, from its pHYs chunk (None without one)."""
    with Image.open(path) as im:
        dpi = im.info.get("dpi")
        return im.width / float(dpi[0]) * 2.54 if dpi and float(dpi[0]) > 0 else None


def read_patch_png(path: str | Path, resolution: int) -> dict:
    """An exported (or any square 8-bit RGB) patch PNG as {"patch": (3,r,r)}: reduced to ``resolution`` pixels per
    side by area averaging when larger (an exported patch comes back to its very pixels), with its printed width.
    Refused, in one line: not a PNG, not square, under 2 or over MAX_PNG_SIDE pixels a side (checked from the
    header, before decoding), 16-bit or other modes, or transparent pixels (a sticker has none)."""
    p = Path(path)
    if not p.is_file():
        raise RobustsegError(f"--apply {p}: no such file")
    try:
        with Image.open(p) as im:
            fmt, size, mode = im.format, im.size, im.mode
            if fmt != "PNG" or size[0] != size[1] or not 2 <= size[0] <= MAX_PNG_SIDE:
                raise RobustsegError(f"--apply {p}: not a patch PNG (a square RGB PNG of 2 to {MAX_PNG_SIDE} px "
                                     f"is expected, this is a {size[0]}x{size[1]} {fmt})")
            if mode not in PNG_MODES:
                raise RobustsegError(f"--apply {p}: a {mode} PNG; an 8-bit RGB (or grey or palette) PNG is expected")
            rgba = im.convert("RGBA")
            if rgba.getextrema()[3][0] < 255:
                raise RobustsegError(f"--apply {p}: has transparent pixels; a printed sticker has none")
            rgb = rgba.convert("RGB")
            if size[0] > resolution:  # area averaging (BOX), in 8 bits as printed: an exported patch exactly
                rgb = rgb.resize((resolution, resolution), Image.BOX)
            patch = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255).permute(2, 0, 1)
    except (OSError, ValueError, Image.DecompressionBombError, *PIL_BROKEN_FILE) as e:
        raise RobustsegError(f"--apply {p}: not a readable image ({type(e).__name__})") from None
    return {"patch": patch.clamp(0, 1), "kind": "physical", "print_width_cm": printed_width_cm(p),
            "path": str(p.resolve()), "sha256": sha256_file(p)}
