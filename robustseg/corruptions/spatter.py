"""Spatter: water drops (severities 1-3) or mud (4-5) from thresholded blurred noise.

Inputs and outputs as in noise.py. The water branch is a chain of OpenCV calls (Canny, distance transform,
histogram equalisation, an emboss filter, box blurs) that shapes the drops' rims; _cv.py reproduces each of them.
"""
from __future__ import annotations

import torch

from . import _cv
from ._ops import gaussian_filter

# (noise mean, noise std, blur sigma, threshold, intensity or mud blur sigma, 0 = water / 1 = mud)
SPATTER = ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
           (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1))
WATER_RGB = (175 / 255.0, 238 / 255.0, 238 / 255.0)  # pale turquoise
MUD_RGB = (63 / 255.0, 42 / 255.0, 20 / 255.0)


def _water_rims(liquid: torch.Tensor) -> torch.Tensor:
    """The reference's ``dist`` image of the water branch, float32 (N,H,W), from the uint8 liquid layer."""
    edges = _cv.canny(liquid, 50, 150)
    dist = _cv.distance_to_zero(edges, cap=20.0)  # the distance to the drops' rims, truncated at 20
    dist = _cv.blur3_float_floor(dist).to(torch.int32)  # cv2.blur, then .astype(np.uint8)
    dist = _cv.equalize_hist(dist)
    return _cv.blur3_uint8(_cv.emboss(dist)).to(torch.float32)


def spatter_given(x: torch.Tensor, severity: int, fields: torch.Tensor) -> torch.Tensor:
    """``fields``: (B,H,W) draws of N(mean, std) of this severity."""
    _, _, sigma, threshold, intensity, mud = SPATTER[severity - 1]
    liquid = gaussian_filter(fields[:, None].to(x.dtype), sigma, mode="nearest")[:, 0]
    liquid = torch.where(liquid < threshold, 0.0, liquid)
    if not mud:
        liquid_u8 = liquid.mul_(255.0).floor_().clamp_(0, 255).to(torch.int32)  # .astype(np.uint8)
        m = _water_rims(liquid_u8).mul_(liquid_u8)
        peak = m.amax(dim=(1, 2))
        # the reference divides by the peak unguarded: no drop at all would make its image NaN (then black)
        per_channel = torch.where(peak > 0, 255.0 * intensity / torch.where(peak > 0, peak, 1.0), 0.0)
        scale = per_channel.view(-1, 1, 1, 1) * torch.tensor(WATER_RGB, device=x.device).view(1, 3, 1, 1)
        return torch.addcmul(x * 255.0, m[:, None], scale)
    m = gaussian_filter((liquid > threshold)[:, None].to(x.dtype), intensity, mode="nearest")
    m = torch.where(m < 0.8, 0.0, m)
    colour = torch.tensor(MUD_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.lerp(x, colour, m).mul_(255.0)  # x (1 - m) + colour m


def spatter(x: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    mean, std = SPATTER[severity - 1][:2]
    h, w = x.shape[-2:]
    fields = torch.stack([mean + std * torch.randn(h, w, generator=g, device=x.device, dtype=x.dtype) for g in gens])
    return spatter_given(x, severity, fields)
