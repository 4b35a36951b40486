"""Weather: snow, frost, fog.

Inputs and outputs as in noise.py. Each random corruption is split in two: ``*_given`` does the maths from
explicit random draws (plain numbers and tensors, so a test can hand it the reference's own draws), and the public
function draws them from each image's generator.
"""
from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._ops import clipped_zoom, motion_blur_one

# (noise mean, noise std, zoom, threshold, motion radius, motion sigma, blend with the whitened image)
SNOW = ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # (image weight, frost weight)
# the reference lists six pictures but draws randint(5): frost6.jpg is never used, so it is not shipped
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # (fog weight, plasma wibble decay)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), dtype=torch.float64, generator=gen, device=gen.device).item()


def _randint(gen: torch.Generator, high: int) -> int:
    return int(torch.randint(0, high, (), generator=gen, device=gen.device).item())


# ---- snow ----

def snow_given(x: torch.Tensor, severity: int, fields: torch.Tensor, angles: list[float]) -> torch.Tensor:
    """``fields``: (B,H,W) draws of N(mean, std) of this severity; ``angles``: motion angles in degrees."""
    _, _, zoom, threshold, radius, sigma, blend = SNOW[severity - 1]
    h, w = x.shape[-2:]
    layers = []
    for field, angle in zip(fields, angles):
        layer = clipped_zoom(field.view(1, 1, h, w).to(x.dtype), zoom)[0]
        layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
        # blurred at the zoomed size (which may exceed the image by a pixel), cropped after, as the reference does
        layer = motion_blur_one(layer, radius, sigma, angle)
        layers.append((torch.round(layer * 255) / 255)[..., :h, :w])
    snow = torch.stack(layers)
    snow = snow.add_(snow.flip(-2, -1)).mul_(255.0)
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # cv2 RGB2GRAY
    # blend * x + (1 - blend) * max(x, 1.5 gray + 0.5), then + snow and its 180-degree rotation
    whitened = torch.maximum(x, gray.mul_(1.5).add_(0.5))
    return torch.lerp(x, whitened, 1 - blend, out=whitened).mul_(255.0).add_(snow)


def snow(x: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    mean, std = SNOW[severity - 1][:2]
    h, w = x.shape[-2:]
    fields = torch.stack([mean + std * torch.randn(h, w, generator=g, device=x.device, dtype=x.dtype) for g in gens])
    return snow_given(x, severity, fields, [_uniform(g, -135.0, -45.0) for g in gens])


# ---- frost ----

@functools.lru_cache(maxsize=6)
def _frost_picture(index: int) -> torch.Tensor:
    """One frost picture as uint8 (3,h,w) RGB; RGBA files lose alpha, as cv2.imread(IMREAD_COLOR) does."""
    with resources.files(__package__).joinpath("frost", FROST_FILES[index]).open("rb") as f:
        return torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).contiguous()


def frost_scale(frost_hw: tuple[int, int], image_hw: tuple[int, int]) -> tuple[int, int]:
    """The reference's rescaled frost size: grown to cover the image if it is smaller, then always by 1.1
    (so on small images frost keeps its own scale and the image sees a crop of it)."""
    (fh, fw), (h, w) = frost_hw, image_hw
    factor = 1.0
    if fh < h and fw >= w:
        factor = h / fh
    elif fh >= h and fw < w:
        factor = w / fw
    elif fh < h and fw < w:
        factor = max(h / fh, w / fw)
    factor *= 1.1
    return int(np.ceil(fh * factor)), int(np.ceil(fw * factor))


@functools.lru_cache(maxsize=16)
def _rescaled_frost(index: int, size: tuple[int, int], device: str) -> torch.Tensor:
    """cv2.resize(INTER_CUBIC) equivalent: bicubic (a=-0.75, half-pixel centres, replicated edges), rounded."""
    picture = _frost_picture(index).to(device=device, dtype=torch.float32)[None]
    out = F.interpolate(picture, size=size, mode="bicubic", align_corners=False)
    return out.round().clamp(0, 255)[0]


def frost_given(x: torch.Tensor, severity: int, picks: list[tuple[int, int, int]]) -> torch.Tensor:
    """``picks``: per image (picture index 0-4, crop top, crop left) in the rescaled picture."""
    image_weight, frost_weight = FROST[severity - 1]
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    for i, (index, top, left) in enumerate(picks):
        size = frost_scale(tuple(_frost_picture(index).shape[-2:]), (h, w))
        crop = _rescaled_frost(index, size, str(x.device))[:, top: top + h, left: left + w]
        # image_weight * (255 x) + frost_weight * frost, with the image's uint8 levels as 255 x
        torch.add(crop, x[i], alpha=255.0 * image_weight / frost_weight, out=out[i])
    return out.mul_(frost_weight)


def frost_picks(gen: torch.Generator, image_hw: tuple[int, int]) -> tuple[int, int, int]:
    index = _randint(gen, len(FROST_FILES))
    fh, fw = frost_scale(tuple(_frost_picture(index).shape[-2:]), image_hw)
    return index, _randint(gen, fh - image_hw[0]), _randint(gen, fw - image_hw[1])


def frost(x: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    return frost_given(x, severity, [frost_picks(g, tuple(x.shape[-2:])) for g in gens])


# ---- fog ----

def _noisy_mean(total: torch.Tensor, wibble: float, gens: list[torch.Generator]) -> torch.Tensor:
    """The reference's ``wibbledmean``: a quarter of the sum plus wibble * U(-wibble, wibble), per image."""
    out = torch.empty_like(total)
    for i, g in enumerate(gens):
        out[i].uniform_(-wibble * wibble, wibble * wibble, generator=g)
    return out.add_(total, alpha=0.25)


def _next(t: torch.Tensor, dim: int) -> torch.Tensor:
    """np.roll(t, -1, dim) for (B,n,n)."""
    return torch.cat([t.narrow(dim, 1, t.shape[dim] - 1), t.narrow(dim, 0, 1)], dim)


def _prev(t: torch.Tensor, dim: int) -> torch.Tensor:
    """np.roll(t, 1, dim) for (B,n,n)."""
    n = t.shape[dim]
    return torch.cat([t.narrow(dim, n - 1, 1), t.narrow(dim, 0, n - 1)], dim)


def plasma_fractal(mapsize: int, wibble_decay: float, gens: list[torch.Generator]) -> torch.Tensor:
    """The reference's diamond-square height map, unnormalised, (B, mapsize, mapsize), one per generator.

    The reference fills strided views of one array; here each level's four sub-grids are kept apart and
    interleaved into the next level's corner grid: C corners (step s), D centres, E1 edge midpoints between
    horizontal neighbours, E2 between vertical ones, with the reference's sums and wrap-around (np.roll).
    """
    corners = torch.zeros(len(gens), 1, 1, device=gens[0].device)
    wibble = 100.0
    while corners.shape[-1] < mapsize:
        vertical_pairs = corners + _next(corners, 1)
        centres = _noisy_mean(vertical_pairs + _next(vertical_pairs, 2), wibble, gens)
        across = _noisy_mean((centres + _prev(centres, 1)) + (corners + _next(corners, 2)), wibble, gens)
        down = _noisy_mean((centres + _prev(centres, 2)) + vertical_pairs, wibble, gens)
        b, n, _ = corners.shape
        top = torch.stack([corners, across], dim=-1).view(b, n, 2 * n)
        bottom = torch.stack([down, centres], dim=-1).view(b, n, 2 * n)
        corners = torch.stack([top, bottom], dim=2).view(b, 2 * n, 2 * n)
        wibble /= wibble_decay
    return corners


def fog_given(x: torch.Tensor, severity: int, maps: torch.Tensor) -> torch.Tensor:
    """``maps``: (B,S,S) plasma maps, S >= the image's sides, normalised here over the whole map as the reference
    does (min to 0, max to 1); the top-left corner is used."""
    weight = FOG[severity - 1][0]
    h, w = x.shape[-2:]
    low, high = torch.aminmax(maps.flatten(1), dim=1)
    max_val = x.amax(dim=(1, 2, 3))  # of the clean image, over all channels
    # (x + weight * plasma) * max_val / (max_val + weight) * 255, one pass over the image
    scale = (255.0 * max_val / (max_val + weight)).view(-1, 1, 1, 1)
    fog_levels = (maps[:, None, :h, :w] - low.view(-1, 1, 1, 1)) * (weight * scale / (high - low).view(-1, 1, 1, 1))
    return torch.addcmul(fog_levels.to(x.dtype), x, scale)


def fog(x: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    # the reference's map side: the next power of two of the longest side
    mapsize = 1 << (max(x.shape[-2:]) - 1).bit_length()
    return fog_given(x, severity, plasma_fractal(mapsize, FOG[severity - 1][1], gens))
