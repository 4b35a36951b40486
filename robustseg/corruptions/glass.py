"""Glass blur: Gaussian blur, a local pixel shuffle, Gaussian blur again.

The reference "swaps" pixels in a Python loop over the image (~9 s for one 427x640 image): rows from H-d down to
d+1, columns from W-d down to d+1, each pixel paired with one at a random offset (dx, dy) in [-d, d-1]^2 (numpy's
``randint(-d, d)`` excludes d). On an RGB array that swap, ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``, is not a
swap: the right-hand side holds views, so the first assignment overwrites the pixel the second one copies back,
and the net effect is ``x[h, w] = x[h', w']``. The loop is a sequential in-place gather. Where the source pixel
was already visited in this sweep it passes on what it had copied, so values travel along chains.

Here the same loop is resolved in parallel: every visited pixel points at its source; a source visited earlier
in the sweep forwards to its own source, and pointer jumping (log2 of the longest chain rounds) finds, for every
pixel, the pixel of the previous sweep it ends up copying. Given the same offsets the result is the reference's
exactly; the offsets are drawn from the image's generator instead of numpy's global state.
"""
from __future__ import annotations

import torch

from ._ops import gaussian_filter

GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # (sigma, max offset, sweeps)


def draw_offsets(h: int, w: int, severity: int, gen: torch.Generator) -> torch.Tensor:
    """(sweeps, H-2d, W-2d, 2) int64 (dx, dy) in the reference's visiting order (row i is h = H-d-i, column j is
    w = W-d-j), each uniform in [-d, d-1] as numpy's randint(-d, d)."""
    _, d, sweeps = GLASS[severity - 1]
    return torch.randint(-d, d, (sweeps, h - 2 * d, w - 2 * d, 2), generator=gen, device=gen.device)


def sweep_sources(h: int, w: int, d: int, offsets: torch.Tensor) -> torch.Tensor:
    """For one sweep: flat index, in the image before the sweep, of the value each pixel holds after it."""
    device = offsets.device
    rows = torch.arange(h - d, d, -1, device=device).view(-1, 1)  # visiting order: descending
    cols = torch.arange(w - d, d, -1, device=device).view(1, -1)
    src_r, src_c = rows + offsets[..., 1], cols + offsets[..., 0]
    here = (rows * w + cols).flatten()
    src = (src_r * w + src_c).flatten()
    visited_src = ((src_r > d) & (src_r <= h - d) & (src_c > d) & (src_c <= w - d)).flatten()
    # row-major flat order is the reverse of the visiting order: a larger index was visited earlier
    forwards = visited_src & (src > here)
    link = torch.arange(h * w, device=device)  # a pixel whose value is settled links to itself
    target = torch.arange(h * w, device=device)  # unvisited pixels keep their own value
    link[here] = torch.where(forwards, src, here)
    target[here] = torch.where(forwards, here, src)
    while True:  # pointer jumping: every link ends at a settled pixel after log2(longest chain) rounds
        further = link[link]
        if torch.equal(further, link):
            return target[link]
        link = further


def glass_shuffle(levels: torch.Tensor, d: int, offsets: torch.Tensor) -> torch.Tensor:
    """The reference's whole shuffle loop on one (C,H,W) image, for (sweeps, H-2d, W-2d, 2) offsets."""
    h, w = levels.shape[-2:]
    flat = levels.flatten(-2)
    for sweep in offsets:
        flat = flat[:, sweep_sources(h, w, d, sweep)]
    return flat.view_as(levels)


def glass_given(x: torch.Tensor, severity: int, offsets: list[torch.Tensor]) -> torch.Tensor:
    sigma, d, _ = GLASS[severity - 1]
    # the reference truncates the first blur to uint8 before shuffling
    levels = torch.floor(gaussian_filter(x, sigma, mode="nearest") * 255)
    shuffled = torch.stack([glass_shuffle(levels[i], d, o) for i, o in enumerate(offsets)])
    return gaussian_filter(shuffled / 255.0, sigma, mode="nearest").clamp(0, 1) * 255


def glass_blur(x: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    h, w = x.shape[-2:]
    return glass_given(x, severity, [draw_offsets(h, w, severity, g) for g in gens])
