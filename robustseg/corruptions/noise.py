"""Per-pixel noise: gaussian, shot (Poisson), impulse (salt and pepper), speckle.

Every function takes a float32 (B,3,H,W) batch in [0,1], a severity 1-5 and one torch.Generator per image (on
the batch's device), and returns grey levels (x 255) before the final clip and uint8 truncation, which the
caller applies (the reference's last steps are ``np.clip(., 0, 1) * 255`` and ``np.uint8``). Each image's noise
comes from its own generator, so it does not depend on what else is in the batch. The algebra is rearranged to
touch each pixel as few times as possible (these are memory-bound); the results are the reference's formulas.
"""
from __future__ import annotations

import torch

GAUSSIAN_SCALE = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT_PHOTONS = (60, 25, 12, 5, 3)
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
SPECKLE_SCALE = (0.15, 0.2, 0.35, 0.45, 0.6)


def _normal(x: torch.Tensor, gens: list[torch.Generator], mean: float, std: float) -> torch.Tensor:
    out = torch.empty_like(x)
    for i, g in enumerate(gens):
        out[i].normal_(mean, std, generator=g)
    return out


def gaussian_noise(x: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    # (x + N(0, c)) * 255 = 255 x + N(0, 255 c)
    return _normal(x, gens, 0.0, 255.0 * GAUSSIAN_SCALE[severity - 1]).add_(x, alpha=255.0)


def shot_noise(x: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    c = SHOT_PHOTONS[severity - 1]
    rates = x * c
    photons = torch.stack([torch.poisson(rates[i], generator=g) for i, g in enumerate(gens)])
    return photons.div_(float(c)).mul_(255.0)  # divided first, as the reference does, so k / c * 255 rounds alike


def impulse_noise(x: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    """skimage ``random_noise(mode='s&p', amount=c)``: each value (per channel) turns to 1 with probability c/2,
    to 0 with probability c/2, else stays. skimage draws two uniforms per value (flip, then salt or pepper); one
    uniform split at c/2 and c gives every value the same three outcomes with the same probabilities."""
    c = IMPULSE_AMOUNT[severity - 1]
    u = torch.empty_like(x)
    for i, g in enumerate(gens):
        u[i].uniform_(0.0, 1.0, generator=g)
    out = torch.where(u < c, (u < c / 2).to(x.dtype), x)
    return out.mul_(255.0)


def speckle_noise(x: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    # (x + x N(0, c)) * 255 = x * N(255, 255 c)
    c = SPECKLE_SCALE[severity - 1]
    return _normal(x, gens, 255.0, 255.0 * c).mul_(x)
