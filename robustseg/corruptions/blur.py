"""Blurs: defocus (disk), gaussian, motion (one-sided Gaussian along a random angle), zoom.

Inputs and outputs as in noise.py: float32 (B,3,H,W) in [0,1] in, grey levels (x 255, unclipped) out. The x 255
is folded into the kernels where the reference clips only at the end.
"""
from __future__ import annotations

import numpy as np
import torch

from ._ops import clipped_zoom, correlate_separable, fft_correlate, gaussian_kernel1d, motion_blur_one

DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # (disk radius, alias-blur sigma)
GAUSSIAN_SIGMA = (1, 2, 3, 4, 6)
MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # (radius: 2r+1 taps, sigma in taps)
# the reference's own np.arange calls, so the zoom factors carry the same float rounding
ZOOM_FACTORS = (np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03))


def _cv_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(ksize, sigma) for float32, as cv2.GaussianBlur builds it."""
    t = np.arange(ksize) - (ksize - 1) * 0.5
    k = np.exp(-0.5 / sigma**2 * t**2).astype(np.float32)
    return (k * (1.0 / k.astype(np.float64).sum())).astype(np.float32)


def _aliased_disk(radius: int) -> tuple[np.ndarray, int]:
    """The reference's 0/1 disk on a 17x17 grid (or (2r+1)^2 past r=8) and its alias-blur kernel size."""
    half, ksize = (8, 3) if radius <= 8 else (radius, 5)
    t = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(t, t)
    return ((xx**2 + yy**2) <= radius**2).astype(np.float32), ksize


def disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """The reference's ``disk``: the normalised disk, then cv2.GaussianBlur with the alias kernel and OpenCV's
    default border (reflect-101) on the kernel grid."""
    disk, ksize = _aliased_disk(radius)
    disk /= disk.sum()
    g = _cv_gaussian_kernel(ksize, alias_blur).astype(np.float64)
    image = torch.from_numpy(disk.astype(np.float64)).view(1, 1, *disk.shape)
    return correlate_separable(image, g, g, "mirror")[0, 0].numpy().astype(np.float32)


def defocus_blur(x: torch.Tensor, severity: int, gens=None) -> torch.Tensor:
    radius, alias_blur = DEFOCUS[severity - 1]
    # cv2.filter2D's default border is reflect-101
    return fft_correlate(x, disk_kernel(radius, alias_blur).astype(np.float64) * 255.0, "mirror")


def gaussian_blur(x: torch.Tensor, severity: int, gens=None) -> torch.Tensor:
    k = gaussian_kernel1d(GAUSSIAN_SIGMA[severity - 1])
    return correlate_separable(x, k, k * 255.0, "nearest")


def motion_angles(gens: list[torch.Generator], low: float, high: float) -> list[float]:
    """One uniform angle in degrees per image, like the reference's np.random.uniform(low, high)."""
    return [low + (high - low) * torch.rand((), dtype=torch.float64, generator=g, device=g.device).item()
            for g in gens]


def motion_blur_given(x: torch.Tensor, severity: int, angles: list[float]) -> torch.Tensor:
    """``angles``: one motion angle in degrees per image. The reference blurs the uint8 image (its levels)."""
    radius, sigma = MOTION[severity - 1]
    out = torch.empty_like(x)
    for i, angle in enumerate(angles):
        motion_blur_one(x[i], radius, sigma, angle, scale=255.0, out=out[i])
    return out


def motion_blur(x: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    return motion_blur_given(x, severity, motion_angles(gens, -45.0, 45.0))


def zoom_blur(x: torch.Tensor, severity: int, gens=None) -> torch.Tensor:
    h, w = x.shape[-2:]
    factors = ZOOM_FACTORS[severity - 1]
    out = torch.zeros_like(x)
    for z in factors:
        out += clipped_zoom(x, float(z))[..., :h, :w]
    return out.add_(x).div_(len(factors) + 1).mul_(255.0)
