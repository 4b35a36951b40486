"""Sanity checks on every run (Carlini et al. 2019, "On Evaluating Adversarial Robustness").

Each check is pass/warn with the numbers behind it, written to ``sanity.json``:
- beats_random: every gradient attack lowers AP more than same-norm random noise at the same eps;
- monotone_eps / monotone_steps: AP does not rise with eps or with steps (tolerance TOL);
- unbounded: PGD with eps 1.0 from the clean image (no random start) drives bbox AP close to zero — if not, the
  gradients are probably masked;
- loss_increased: the attack raised its own objective on (nearly) every image: at least 95%, or all but one
  (measured with every anchor and proposal in the loss; the attack steps along the gradient of a random sample
  of them, so at 1/255 one image may end marginally lower);
- gradients: no image has an all-zero or non-finite input gradient at the clean point.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TypedDict

import pandas as pd

from .errors import RobustsegError
from .fileio import read_json

TOL = 0.02               # AP may wobble this much before a monotonicity check warns
LOSS_UP_FRACTION = 0.95  # "nearly every image"
UNBOUNDED_AP = 0.05      # "close to zero" (or 10% of clean AP, whichever is larger)
UNBOUNDED = {"eps": 1.0, "steps": 20, "images": 8}
GRADIENT_ATTACKS = ("fgsm", "pgd", "mifgsm", "apgd")


class Check(TypedDict, total=False):
    """One entry of sanity.json's ``checks``: these three keys always, then the numbers behind the verdict."""
    check: str      # beats_random, monotone_eps, monotone_steps, unbounded, loss_increased, gradients
    verdict: str    # pass | warn
    detail: str     # one human-readable line


class SanityReport(TypedDict):
    """sanity.json, written by ``run_checks`` and read back by ``read_sanity``."""
    verdict: str
    checks: list[Check]


VERDICTS = ("pass", "warn")


def read_sanity(path: str | Path) -> SanityReport:
    """sanity.json read strictly against SanityReport: a wrong file is a one-line error, not a blank cell."""
    d = read_json(path, "sanity report")
    if not isinstance(d, dict) or d.get("verdict") not in VERDICTS or not isinstance(d.get("checks"), list):
        raise RobustsegError(f"{path}: not a sanity report (needs verdict pass|warn and a checks list)")
    for i, c in enumerate(d["checks"]):
        if not (isinstance(c, dict) and isinstance(c.get("check"), str) and c.get("verdict") in VERDICTS
                and isinstance(c.get("detail"), str)):
            raise RobustsegError(f"{path}: check #{i + 1} needs check (a name), verdict (pass|warn) and detail")
    return d


def _target_iou(objective: str) -> str:
    return "segm" if objective == "mask" else "bbox"


def _check(name: str, ok: bool, detail: str, **data) -> Check:
    return {"check": name, "verdict": "pass" if ok else "warn", "detail": detail, **data}


def run_checks(metrics: pd.DataFrame, points: list, per_image: list[dict], grads: list[dict],
               unbounded: dict | None) -> SanityReport:
    ap = metrics[metrics.metric == "AP"].set_index(["point", "iou_type"])["value"]
    checks = []
    rnd = {(p.norm, p.eps): p.key for p in points if p.attack == "random"}
    for p in points:
        if p.attack not in GRADIENT_ATTACKS or p.objective == "fabricate" or (p.norm, p.eps) not in rnd:
            continue
        t = _target_iou(p.objective)
        a, r = ap[(p.key, t)], ap[(rnd[(p.norm, p.eps)], t)]
        checks.append(_check("beats_random", a < r, f"{p.key}: {t} AP {a:.3f} vs random {r:.3f}",
                             point=p.key, ap=a, random_ap=r))
    for field, other in (("eps", "steps"), ("steps", "eps")):
        series: dict = {}
        for p in points:
            if p.attack in GRADIENT_ATTACKS:
                series.setdefault((p.attack, p.norm, getattr(p, other), p.losses, p.params, p.objective,
                                   p.target_class), []).append(p)
        for group in series.values():
            group = sorted(group, key=lambda q: getattr(q, field))
            if len(group) < 2:
                continue
            t = _target_iou(group[0].objective)
            vals = [ap[(q.key, t)] for q in group]
            rises = [(group[i].key, group[i + 1].key) for i in range(len(vals) - 1) if vals[i + 1] > vals[i] + TOL]
            checks.append(_check(f"monotone_{field}", not rises,
                                 f"{t} AP over {field} " + " -> ".join(f"{v:.3f}" for v in vals),
                                 points=[q.key for q in group], values=vals, rises=rises))
    if unbounded is not None:
        limit = max(UNBOUNDED_AP, 0.1 * unbounded["clean_ap"])
        checks.append(_check("unbounded", unbounded["ap"] <= limit,
                             f"PGD eps {unbounded['eps']} x{unbounded['steps']} on {unbounded['images']} images: "
                             f"bbox AP {unbounded['ap']:.3f} (clean {unbounded['clean_ap']:.3f}); above "
                             f"{limit:.3f} suggests gradient masking", **unbounded))
    by_point: dict = {}
    for r in per_image:
        if r["attack"] in GRADIENT_ATTACKS:
            by_point.setdefault(r["point"], []).append(r["loss_adv"] > r["loss_clean"])
    for key, ups in by_point.items():
        frac = sum(ups) / len(ups)
        checks.append(_check("loss_increased", frac >= LOSS_UP_FRACTION or sum(ups) >= len(ups) - 1,
                             f"{key}: objective rose on {sum(ups)}/{len(ups)} images", point=key, fraction=frac))
    zero = sum(1 for g in grads if g["zero"])
    bad = sum(1 for g in grads if not g["finite"])
    checks.append(_check("gradients", zero == 0 and bad == 0,
                         f"{zero} all-zero and {bad} non-finite input gradients over {len(grads)} (image, objective)",
                         zero=zero, nonfinite=bad, total=len(grads)))
    verdict = "pass" if all(c["verdict"] == "pass" for c in checks) else "warn"
    return {"verdict": verdict, "checks": _finite(checks)}


def _finite(obj):
    """JSON has no NaN: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
