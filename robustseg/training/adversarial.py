"""Adversarial fine-tuning: the ``adversary`` hook of ``train()``.

Each iteration a seeded random fraction (``ratio``) of the batch is replaced by adversarial versions made
against the detector's own training losses (objective ``gt``, all five losses), and the loop trains on the mix
(Det-AdvProp, Chen et al. 2021; Zhang & Wang, ICCV 2019). Two ways to make them:

- ``pgd``: Madry et al. 2018, Linf PGD with a random start, ``steps`` steps of 2.5 * eps / steps;
- ``fgsm-rs``: Wong et al. 2020 ("fast is better than free"): a uniform random start in the eps-ball and one
  signed-gradient step of 1.25 * eps, projected back; one forward/backward per example.

Examples are made in ``attack_mode`` (through the attack engine): normalisation layers frozen in eval mode so
their running statistics never see adversarial inputs during generation, parameters without gradients, and every
module's train/eval flag restored afterwards. Randomness comes from a generator seeded by (seed, iteration, rank),
so resuming a run reproduces the same examples.

Under fp16 autocast (``train --amp fp16``) the objective is loss-scaled (``Fp16LossScaled``): without it, input
gradients of a loss ~1 underflow to zero in half precision and the signed step of those pixels is lost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..amp import FP16_LOSS_SCALE
from ..attacks import PGD
from ..attacks.objectives import Objective, make_objective
from ..errors import RobustsegError

ADV_KINDS = ("pgd", "fgsm-rs")


def make_attack(kind: str, eps: float, steps: int) -> PGD:
    if kind == "pgd":
        if steps < 1:
            raise RobustsegError(f"--steps must be at least 1, got {steps}")
        return PGD(steps=steps)
    if kind == "fgsm-rs":  # FGSM with random start == one PGD step of 1.25 eps from a uniform start
        return PGD(steps=1, abs_stepsize=1.25 * eps)
    raise RobustsegError(f"unknown --adv {kind!r}; choose one of {', '.join(ADV_KINDS)}")


class _ScaleGradient(torch.autograd.Function):
    """The identity forward; backward multiplies the incoming gradient by ``factor``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


@dataclass(frozen=True)
class Fp16LossScaled:
    """``objective`` with its gradient computed at ``scale`` times its size and divided back at the input.

    The loss value and the input gradient it gives are the unscaled ones: only the half-precision backward in
    between runs at ``scale`` x, so gradients below fp16's smallest number (~6e-8) do not become zeros. The
    division happens where the gradient is the input's dtype again (float32), after every fp16 layer. As with
    torch's GradScaler, a scale too large for a loss overflows to inf; the attack's gradient sanitising then zeroes
    those pixels' gradients.
    """
    objective: Objective
    scale: float = FP16_LOSS_SCALE

    @property
    def name(self) -> str:
        return self.objective.name

    def __call__(self, model, images, targets):
        inputs = [_ScaleGradient.apply(x, 1.0 / self.scale) for x in images]
        loss, parts = self.objective(model, inputs, targets)
        return _ScaleGradient.apply(loss, self.scale), parts


def _under_fp16_autocast(device_type: str) -> bool:
    return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16


def training_objective(device_type: str) -> Objective:
    """The adversary's objective (``gt``, all five losses), loss-scaled when the caller runs it under fp16
    autocast (the training loop does with ``--amp fp16``)."""
    objective = make_objective("gt")
    return Fp16LossScaled(objective) if _under_fp16_autocast(device_type) else objective


@dataclass(frozen=True)
class Adversary:
    """``adversary(model, images, targets, it) -> (images, is_adv)``: the batch with some images replaced."""
    kind: str = "pgd"
    eps: float = 4 / 255
    steps: int = 3
    ratio: float = 0.5
    seed: int = 0
    rank: int = 0

    def __post_init__(self):
        if not 0 < self.ratio <= 1:
            raise RobustsegError(f"--adv-ratio must be in (0, 1], got {self.ratio}")
        if not 0 < self.eps <= 1:
            raise RobustsegError(f"--eps must be in (0, 1] pixel units (e.g. 4/255), got {self.eps}")
        make_attack(self.kind, self.eps, self.steps)  # validate early

    def _generator(self, it: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + it) * 1009 + self.rank)

    def choose(self, n: int, it: int) -> list[bool]:
        """Which images of this batch become adversarial: ratio * n of them, rounded stochastically so small
        per-process batches still get the right fraction on average."""
        g = self._generator(it)
        k = min(n, math.floor(self.ratio * n + float(torch.rand((), generator=g))))
        picked = set(torch.randperm(n, generator=g)[:k].tolist())
        return [i in picked for i in range(n)]

    def __call__(self, model: torch.nn.Module, images: list[torch.Tensor], targets: list[dict], it: int
                 ) -> tuple[list[torch.Tensor], list[bool]]:
        is_adv = self.choose(len(images), it)
        idx = [i for i, a in enumerate(is_adv) if a]
        if not idx:
            return images, is_adv
        model = getattr(model, "module", model)  # the bare model under DDP: no gradient sync for the attack
        attack = make_attack(self.kind, self.eps, self.steps)
        g = self._generator(it)
        g.manual_seed(g.initial_seed() + 1)  # independent of choose()'s draws
        adv = attack(model, [images[i] for i in idx], [targets[i] for i in idx], [self.eps],
                     training_objective(images[idx[0]].device.type), g)[0]
        out = list(images)
        for j, i in enumerate(idx):
            out[i] = adv[j]
        return out, is_adv

    def describe(self) -> dict:
        step = 1.25 * self.eps if self.kind == "fgsm-rs" else 2.5 * self.eps / self.steps
        return {"kind": self.kind, "eps": self.eps, "steps": 1 if self.kind == "fgsm-rs" else self.steps,
                "step_size": step, "ratio": self.ratio, "objective": "gt", "losses": "all", "norm": "linf",
                "random_start": True}
