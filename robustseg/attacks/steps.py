"""Per-image step directions and random starts shared by the iterative attacks."""
from __future__ import annotations

import torch


def ascent_step(grad: torch.Tensor, size: float, norm: str) -> torch.Tensor:
    """Steepest-ascent step of length ``size`` in ``norm`` for one image."""
    if norm == "linf":
        return size * grad.sign()
    return size * grad / (grad.flatten().norm(p=2) + 1e-12)


def random_in_ball(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform random point of the eps-ball around 0, shaped like ``x``."""
    if norm == "linf":
        return (torch.rand(x.shape, generator=generator, device="cpu") * 2 - 1).to(x) * eps
    d = torch.randn(x.shape, generator=generator, device="cpu").to(x)
    r = torch.rand((), generator=generator, device="cpu").item() ** (1.0 / x.numel())
    return d / (d.flatten().norm(p=2) + 1e-12) * eps * r


def random_on_sphere(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """Noise of exactly norm eps: uniform random signs (Linf) or a uniform random direction (L2)."""
    if norm == "linf":
        return (torch.randint(0, 2, x.shape, generator=generator, device="cpu").to(x) * 2 - 1) * eps
    d = torch.randn(x.shape, generator=generator, device="cpu").to(x)
    return d / (d.flatten().norm(p=2) + 1e-12) * eps
