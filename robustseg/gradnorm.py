"""Input-gradient norms: per image, the L1, L2 and Linf norms of d loss / d pixels for each of Mask R-CNN's five
training losses and their sum, on clean images and optionally on PGD adversarial ones.

A robust model has small input gradients: to first order an Linf perturbation of size eps raises a loss by
eps * ||grad||_1 (L1 is the dual norm of Linf), an L2 one by eps * ||grad||_2. So these norms say how much an
attack can gain per unit of budget, component by component, and how adversarial fine-tuning changes that.

Each image is its own forward pass (the losses average over a batch, so batching would mix images), in
``attack_mode`` (frozen normalisation, no parameter gradients), with the samplers seeded per image: two checkpoints
get the same RPN anchor draws, not the same RoI draws (those pick among each model's own proposals). Files (docs/adversarial-training.md):
``gradnorms.csv`` (image_id, checkpoint, component, condition, l1, l2, linf) and ``gradnorms_summary.csv``
(median, mean and 90th percentile per checkpoint, condition and component).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .attacks import PGD
from .attacks.objectives import LOSS_NAMES, make_objective
from .models.checkpoint import LoadedModel
from .models.modes import attack_mode
from .utils import derived_seed

COMPONENTS = LOSS_NAMES + ("total",)
NORMS = ("l1", "l2", "linf")
COLUMNS = ["image_id", "checkpoint", "component", "condition", "l1", "l2", "linf"]
SUMMARY_COLUMNS = ["checkpoint", "condition", "component", "images"] + [
    f"{n}_{s}" for n in NORMS for s in ("median", "mean", "p90")]


def component_gradients(model: torch.nn.Module, image: torch.Tensor, target: dict) -> dict[str, torch.Tensor]:
    """d loss_k / d image for each loss component k and for their sum (one forward, one backward each)."""
    x = image.detach().requires_grad_(True)
    with attack_mode(model):
        parts = model([x], [target])
        grads = {}
        for k in LOSS_NAMES:
            g = torch.autograd.grad(parts[k], x, retain_graph=True, allow_unused=True)[0] \
                if parts[k].requires_grad else None
            grads[k] = torch.zeros_like(x) if g is None else g.detach()
    grads["total"] = sum(grads[k] for k in LOSS_NAMES)  # the gradient of the sum, by linearity
    return grads


def norms(g: torch.Tensor) -> dict[str, float]:
    g = g.flatten().double()
    return {"l1": float(g.abs().sum()), "l2": float(g.norm()), "linf": float(g.abs().max())}


def image_rows(lm: LoadedModel, image: torch.Tensor, target: dict, iid: int, *, name: str, seed: int = 0,
               adv_eps: float | None = None, adv_steps: int = 10) -> list[dict]:
    """Rows of gradnorms.csv for one image: condition ``clean``, and ``adv`` (PGD Linf at ``adv_eps`` against
    all five losses) when ``adv_eps`` is given. Seeded by image id, so batching changes nothing."""
    model, rows = lm.model, []
    points = [("clean", image)]
    if adv_eps:
        torch.manual_seed(derived_seed(seed, "gradnorm-adv", iid))
        gen = torch.Generator().manual_seed(derived_seed(seed, "gradnorm-adv", iid))
        adv = PGD(steps=adv_steps)(model, [image], [target], [adv_eps], make_objective("gt"), gen)[0][0]
        points.append(("adv", adv))
    for condition, x in points:
        torch.manual_seed(derived_seed(seed, "gradnorm", iid))  # the same RPN anchor draws for every model
        for comp, g in component_gradients(model, x, target).items():
            rows.append({"image_id": iid, "checkpoint": name, "component": comp, "condition": condition,
                         **norms(g)})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Median, mean and 90th percentile of each norm per (checkpoint, condition, component)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["checkpoint"], r["condition"], r["component"]), []).append(r)
    out = []
    for (ckpt, cond, comp), rs in groups.items():
        row = {"checkpoint": ckpt, "condition": cond, "component": comp, "images": len(rs)}
        for n in NORMS:
            v = np.array([float(r[n]) for r in rs])
            row.update({f"{n}_median": float(np.median(v)), f"{n}_mean": float(v.mean()),
                        f"{n}_p90": float(np.percentile(v, 90))})
        out.append(row)
    return out


def checkpoint_name(lm: LoadedModel) -> str:
    return Path(lm.path).name if lm.path else "model"
