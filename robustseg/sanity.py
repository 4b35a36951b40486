"""Sanity checks on every run (Carlini et al. 2019, "On Evaluating Adversarial Robustness"), second edition.

Each check is pass, warn or n/a ("not applicable": a model with no clean AP has nothing an attack could take, so
no AP comparison says anything about its gradients), with the numbers behind it and, where the run has bootstrap
intervals, the paired interval of the difference it rests on; written to ``sanity.json``. The run's verdict is
warn if any check warns, else n/a if any is n/a, else pass.
- beats_random: every gradient attack takes AP below same-norm random noise at the same eps by more than the
  paired interval of the difference (no interval: by more than TOL);
- monotone_eps / monotone_steps / monotone_restarts and pgd_vs_fgsm (ordering): AP does not rise by more than TOL
  with eps, steps or restarts, and PGD is not weaker than FGSM at the same eps;
- loss_increased: the attack raised its own objective on at least 95% of the images, whatever their number;
- gradients: no image has an all-zero or non-finite input gradient at the clean point;
- moderate_eps (the masking probe, kinds/attack_checks.py): at the largest eps of PROBE's ladder where same-norm
  random noise keeps NOISE_KEEPS of the clean AP, PGD from the clean image takes AP below FAR_BELOW of the noise's.
  A random walk does not pass it (noise of the same size leaves the AP), nor do partly useless gradients;
- deterministic: two predictions and two input gradients of the same images, under different seeds, agree: a
  randomised model (or gradient) needs EOT, and a white-box attack without it overstates its robustness;
- saturated_scores: not nearly all (90%) of the clean confident detections have a score of 1.0 (to the 5 decimals of
  predictions/): a saturated softmax has a vanishing gradient, so gradient attacks cannot lower those scores;
- gradient_fidelity: the input gradient is the derivative of the forward: along its sign, the objective changes
  (central finite difference) by at least FIDELITY of what the gradient predicts, in the median over the probe's
  images. A backward that is not the forward's derivative (noise mixed in, a substitute) fails it, even when it is
  deterministic and the predictions are exact;
- black_box: a score-based query attack that sees only predictions (Square, attacks/square.py) is not stronger
  than the strongest gradient attack at its eps by more than the interval: if it is, the gradients are masked.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, TypedDict

import numpy as np
import pandas as pd

from .errors import RobustsegError
from .eval.bootstrap import interval
from .fileio import read_json

TOL = 0.02               # AP may wobble this much before an ordering check warns
LOSS_UP_FRACTION = 0.95  # "nearly every image", whatever their number (19 of 20, all of 2)
NO_SKILL_AP = 0.01       # clean AP below this: there is nothing to attack and the AP checks are n/a
# the masking probe: PGD without random start, ``steps`` steps, on the first ``images`` images, at the largest eps
# of ``ladder`` where same-norm noise keeps NOISE_KEEPS of the clean AP (the smallest eps if none does). Its AP is
# also scored after the steps in ``scored_at``, and the walk stops at the first score that passes: an iterate
# inside the ball that already takes AP below the limit answers the question, and the rest of the walk would cost
# gradients for nothing; a model that does not get there runs every step, as before
PROBE = {"steps": 20, "quick_steps": 10, "images": 8, "ladder": (8 / 255, 16 / 255, 32 / 255, 64 / 255),
         "scored_at": (2, 4, 7), "quick_repeat_images": 4}
NOISE_KEEPS = 0.8
FAR_BELOW = 0.25         # the probe's attack must leave at most this fraction of the noise's AP
GRADIENT_COSINE = 0.99   # two gradients of one input agree at least this well (GPU atomics reorder sums)
# under --eot N: two N-pass gradients of a randomised model agree at least this well. On a random-resize defence
# (tests/test_defences.py) the least cosine over 4 images is 0.09 at N = 1, 0.76 at 4 and 0.97 at 16
EOT_GRADIENT_COSINE = 0.9
# the finite-difference check: step h, and the least median of (loss change along sign(g)) / (what g predicts).
# A true gradient gives about 1 up to the curvature of a piecewise-linear network (0.3-1.3 per image on the shipped
# model, median 0.86); a gradient with noise of its own size added about 0.25, ten times its size 0.01
FIDELITY_STEP = 0.5 / 255
FIDELITY = 0.4
# more than this share of the confident clean detections at score 1.0: saturated. High, because a healthy model
# may be very sure of easy objects; logits scaled to saturation put all of them there
SATURATED_FRACTION = 0.9
CONFIDENT = 0.5           # the detections the saturation check looks at
GRADIENT_ATTACKS = ("fgsm", "pgd", "mifgsm", "apgd")
BLACK_BOX_ATTACKS = ("square",)
Boots = Callable[[str, str], "np.ndarray | None"]  # (point, iou type) -> AP on every bootstrap resample


class Check(TypedDict, total=False):
    """One entry of sanity.json's ``checks``: these three keys always, then the numbers behind the verdict."""
    check: str      # beats_random, monotone_*, pgd_vs_fgsm, loss_increased, gradients, moderate_eps, ...
    verdict: str    # pass | warn | n/a
    detail: str     # one human-readable line


class SanityReport(TypedDict):
    """sanity.json, written by ``run_checks`` and read back by ``read_sanity``."""
    verdict: str
    checks: list[Check]


VERDICTS = ("pass", "warn", "n/a")


def read_sanity(path: str | Path) -> SanityReport:
    """sanity.json read strictly against SanityReport: a wrong file is a one-line error, not a blank cell."""
    d = read_json(path, "sanity report")
    if not isinstance(d, dict) or d.get("verdict") not in VERDICTS or not isinstance(d.get("checks"), list):
        raise RobustsegError(f"{path}: not a sanity report (needs verdict pass|warn|n/a and a checks list)")
    for i, c in enumerate(d["checks"]):
        if not (isinstance(c, dict) and isinstance(c.get("check"), str) and c.get("verdict") in VERDICTS
                and isinstance(c.get("detail"), str)):
            raise RobustsegError(f"{path}: check #{i + 1} needs check (a name), verdict (pass|warn|n/a) and detail")
    return d


def _target_iou(objective: str) -> str:
    return "segm" if objective == "mask" else "bbox"


NA = "n/a"
PREDICTION_TOL = 1e-3   # two predictions of one image differ by at most this (scores; boxes over the image size)


def _check(name: str, verdict: bool | str, detail: str, **data) -> Check:
    """``verdict``: True (pass), False (warn) or NA."""
    v = verdict if isinstance(verdict, str) else "pass" if verdict else "warn"
    return {"check": name, "verdict": v, "detail": detail + (" (no clean AP: not applicable)" if v == NA and
                                                             "clean AP" not in detail else ""), **data}


class _APs:
    """Every point's AP, and the paired bootstrap interval of the difference between two points."""

    def __init__(self, metrics: pd.DataFrame, boots: Boots | None):
        self.ap = metrics[metrics.metric == "AP"].set_index(["point", "iou_type"])["value"]
        self.boots = boots

    def __call__(self, key: str, iou_type: str) -> float:
        return float(self.ap[(key, iou_type)])

    def no_skill(self, iou_type: str) -> bool:
        return self("clean", iou_type) < NO_SKILL_AP

    def diff(self, a: str, b: str, iou_type: str) -> tuple[float, list[float] | None]:
        """AP(a) - AP(b) and its paired 95% interval over the run's shared resamples (None without them)."""
        d = self(a, iou_type) - self(b, iou_type)
        ba, bb = (self.boots(a, iou_type), self.boots(b, iou_type)) if self.boots else (None, None)
        if ba is None or bb is None:
            return d, None
        scored = (ba >= 0) & (bb >= 0)  # -1: a resample with nothing to evaluate
        lo, hi = interval((ba - bb)[scored])
        return d, None if math.isnan(lo) else [lo, hi]


def _ci(ci: list[float] | None) -> str:
    return " (no interval)" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def _clear(margin: float, ci: list[float] | None) -> bool:
    """``margin`` is above zero by more than its interval (its lower end above 0); with no interval, above TOL."""
    return ci[0] > 0 if ci is not None else margin > TOL


def beats_random(aps: _APs, points: list) -> list[Check]:
    rnd = {(p.norm, p.eps): p.key for p in points if p.attack == "random"}
    out = []
    for p in points:
        if p.attack not in GRADIENT_ATTACKS or p.objective == "fabricate" or (p.norm, p.eps) not in rnd:
            continue
        t, r = _target_iou(p.objective), rnd[(p.norm, p.eps)]
        margin, ci = aps.diff(r, p.key, t)
        out.append(_check("beats_random", NA if aps.no_skill(t) else _clear(margin, ci),
                          f"{p.key}: {t} AP {aps(p.key, t):.3f} vs random {aps(r, t):.3f}, margin {margin:.3f}"
                          f"{_ci(ci)}", point=p.key, ap=aps(p.key, t), random_ap=aps(r, t), margin=margin,
                          interval=ci))
    return out


def _restarts(p) -> int:
    return int(dict(p.params).get("restarts", 1))


def _series_key(p, field: str) -> tuple:
    """What a point shares with the others of its series over ``field`` (everything but that field)."""
    params = tuple(kv for kv in p.params if kv[0] != "restarts") if field == "restarts" else p.params
    return (p.attack, p.norm, None if field == "eps" else p.eps, None if field == "steps" else p.steps, p.losses,
            params, p.objective, p.target_class)


def _value(p, field: str):
    return _restarts(p) if field == "restarts" else getattr(p, field)


def _rises(aps: _APs, pairs: list[tuple[str, str]], t: str) -> list[dict]:
    """Each (weaker-expected, stronger-expected) pair whose AP rose by more than TOL, with its interval."""
    out = []
    for weak, strong in pairs:
        rise, ci = aps.diff(strong, weak, t)
        if rise > TOL:
            out.append({"from": weak, "to": strong, "rise": rise, "interval": ci})
    return out


def monotone(aps: _APs, points: list) -> list[Check]:
    """AP does not rise with eps, steps or restarts (per series of otherwise equal points)."""
    out = []
    for field in ("eps", "steps", "restarts"):
        series: dict = {}
        for p in points:
            if p.attack in GRADIENT_ATTACKS:
                series.setdefault(_series_key(p, field), []).append(p)
        for group in series.values():
            group = sorted(group, key=lambda q: _value(q, field))
            if len({_value(q, field) for q in group}) < 2:
                continue
            t = _target_iou(group[0].objective)
            vals = [aps(q.key, t) for q in group]
            rises = _rises(aps, [(a.key, b.key) for a, b in zip(group, group[1:])], t)
            detail = f"{group[0].attack} {t} AP over {field} " + " -> ".join(
                f"{_value(q, field) if field != 'eps' else q.eps_label}: {v:.3f}" for q, v in zip(group, vals))
            detail += "".join(f"; rise {r['rise']:.3f}{_ci(r['interval'])}" for r in rises)
            out.append(_check(f"monotone_{field}", NA if aps.no_skill(t) else not rises, detail,
                              points=[q.key for q in group], values=vals, rises=rises))
    return out


def pgd_vs_fgsm(aps: _APs, points: list) -> list[Check]:
    """Many projected gradient steps are not weaker than one (same eps, norm, losses and objective)."""
    fgsm = {(p.norm, p.eps, p.losses, p.objective, p.target_class): p for p in points if p.attack == "fgsm"}
    out = []
    for p in points:
        f = fgsm.get((p.norm, p.eps, p.losses, p.objective, p.target_class))
        if p.attack != "pgd" or f is None or p.objective == "fabricate":
            continue
        t = _target_iou(p.objective)
        rise, ci = aps.diff(p.key, f.key, t)
        out.append(_check("pgd_vs_fgsm", NA if aps.no_skill(t) else rise <= TOL,
                          f"{p.key}: {t} AP {aps(p.key, t):.3f} vs FGSM {aps(f.key, t):.3f}, PGD weaker by "
                          f"{rise:.3f}{_ci(ci)} (tolerance {TOL})", point=p.key, fgsm=f.key, rise=rise, interval=ci))
    return out


def loss_increased(per_image: list[dict]) -> list[Check]:
    by_point: dict = {}
    for r in per_image:
        if r["attack"] in GRADIENT_ATTACKS and r.get("loss_measured", True):  # --checks quick measures a subset
            by_point.setdefault(r["point"], []).append(r["loss_adv"] > r["loss_clean"])
    out = []
    for key, ups in by_point.items():
        n, rose = len(ups), sum(ups)
        out.append(_check("loss_increased", rose >= LOSS_UP_FRACTION * n,
                          f"{key}: objective rose on {rose}/{n} images ({rose / n:.0%}; needs "
                          f"{LOSS_UP_FRACTION:.0%})", point=key, fraction=rose / n, rose=rose, images=n))
    return out


def gradients(grads: list[dict]) -> Check:
    zero = sum(1 for g in grads if g["zero"])
    bad = sum(1 for g in grads if not g["finite"])
    return _check("gradients", zero == 0 and bad == 0,
                  f"{zero} all-zero and {bad} non-finite input gradients over {len(grads)} (image, objective)",
                  zero=zero, nonfinite=bad, total=len(grads))


def black_box(aps: _APs, points: list) -> list[Check]:
    """A query attack that never sees a gradient must not beat the strongest gradient attack at its eps."""
    out = []
    for p in points:
        if p.attack not in BLACK_BOX_ATTACKS:
            continue
        white = [q for q in points if q.attack in GRADIENT_ATTACKS and (q.norm, q.eps) == (p.norm, p.eps)
                 and q.objective != "fabricate"]
        if not white:
            out.append(_check("black_box", NA, f"{p.key}: no gradient attack at eps {p.eps_label} to compare "
                              "with", point=p.key))
            continue
        best = min(white, key=lambda q: aps(q.key, "bbox"))
        gap, ci = aps.diff(best.key, p.key, "bbox")  # > 0: the black-box attack took AP lower
        out.append(_check("black_box", NA if aps.no_skill("bbox") else not _clear(gap, ci),
                          f"{p.key}: bbox AP {aps(p.key, 'bbox'):.3f} vs the strongest gradient attack "
                          f"{best.key} {aps(best.key, 'bbox'):.3f}: black-box stronger by {gap:.3f}{_ci(ci)}",
                          point=p.key, white_box=best.key, gap=gap, interval=ci))
    return out


def moderate_eps(probe: dict) -> Check:
    """The masking probe (kinds/attack_checks.py): far below the noise at an eps the noise itself survives."""
    limit = FAR_BELOW * probe["noise_ap"]
    keeps = probe["noise_ap"] / probe["clean_ap"] if probe["clean_ap"] > 0 else float("nan")
    return _check("moderate_eps", NA if probe["clean_ap"] < NO_SKILL_AP else probe["ap"] <= limit,
                  f"PGD-{probe['steps']}{_stopped(probe)} at eps {probe['eps'] * 255:.0f}/255 on {probe['images']} "
                  f"images: bbox AP "
                  f"{probe['ap']:.3f} vs same-norm noise {probe['noise_ap']:.3f} (which keeps {keeps:.0%} of the "
                  f"clean {probe['clean_ap']:.3f}), gap{_ci(probe['interval'])}; above {limit:.3f} "
                  f"({FAR_BELOW:.0%} of the noise's) suggests masked gradients",
                  **{k: v for k, v in probe.items() if k not in ("repeat", "fidelity")})


def _stopped(probe: dict) -> str:
    taken = probe.get("steps_taken", probe["steps"])  # runs written before the probe could stop early took all
    return "" if taken == probe["steps"] else f" (stopped after {taken} steps: the AP had passed)"


def gradient_fidelity(probe: dict) -> Check:
    f = probe["fidelity"]
    if not f["ratios"]:
        return _check("gradient_fidelity", NA, "no probe image has a non-zero finite input gradient to test "
                      "(see gradients)", **f)
    return _check("gradient_fidelity", f["median"] >= FIDELITY,
                  f"along the sign of the input gradient, on {len(f['ratios'])} images, the objective changed by "
                  f"{f['median']:.2f} (median) of what the gradient predicts ({min(f['ratios']):.2f} to "
                  f"{max(f['ratios']):.2f}; finite difference at {f['step'] * 255:g}/255); below {FIDELITY} the "
                  "backward is not the forward's derivative", **f)


def deterministic(probe: dict) -> Check:
    """Without --eot: the model must be deterministic (a randomised one needs EOT). With --eot N the model is
    declared randomised, and what matters is whether N passes are enough: two independent N-pass gradients must
    agree with cosine EOT_GRADIENT_COSINE (noise of variance s^2 per pass gives about |g|^2 / (|g|^2 + s^2 / N))."""
    r = {"eot": 1, **probe["repeat"]}
    if r["eot"] > 1:
        return _check("deterministic", r["gradient_cosine"] >= EOT_GRADIENT_COSINE,
                      f"the same {r['images']} images twice under different seeds, each gradient averaged over "
                      f"--eot {r['eot']} passes: the averaged input gradients agree with cosine "
                      f"{r['gradient_cosine']:.4f} (at least {EOT_GRADIENT_COSINE}; below, raise --eot); predictions "
                      f"differ by {r['prediction_diff']:.2g} (a randomised model's may)", **r)
    return _check("deterministic", r["prediction_diff"] <= PREDICTION_TOL and r["gradient_cosine"] >= GRADIENT_COSINE,
                  f"the same {r['images']} images twice under different seeds: predictions differ by "
                  f"{r['prediction_diff']:.2g} (at most {PREDICTION_TOL:g}), input gradients agree with cosine "
                  f"{r['gradient_cosine']:.4f} (at least {GRADIENT_COSINE}); a randomised model needs EOT", **r)


def saturated_scores(clean_results: list[dict]) -> Check:
    """Scores are stored to 5 decimals: 1.0 means above 0.999995, a logit gap over 12 where the softmax's gradient
    p (1 - p) is below 5e-6 (the shipped model's most confident detections read 0.9999x)."""
    confident = [r["score"] for r in clean_results if r["score"] >= CONFIDENT]
    saturated = sum(1 for s in confident if s >= 1.0)
    if not confident:
        return _check("saturated_scores", NA, f"no clean detection with score >= {CONFIDENT}", confident=0)
    share = saturated / len(confident)
    return _check("saturated_scores", share <= SATURATED_FRACTION,
                  f"{saturated}/{len(confident)} clean detections with score >= {CONFIDENT} score 1.0 ({share:.0%}; "
                  f"above {SATURATED_FRACTION:.0%} the softmax is saturated and its gradient vanishes)",
                  confident=len(confident), saturated=saturated)


def warned(report: SanityReport) -> list[str]:
    """The names of the checks that warned, in their order."""
    return list(dict.fromkeys(c["check"] for c in report["checks"] if c["verdict"] == "warn"))


def verdict_line(report: SanityReport) -> str:
    """What the run prints at the end: the verdict, naming the checks that warned."""
    names = warned(report)
    return f"sanity checks: {report['verdict']}" + (f" ({', '.join(names)}; see sanity.json)" if names else "")


def overall(checks: list[Check]) -> str:
    verdicts = {c["verdict"] for c in checks}
    return "warn" if "warn" in verdicts else NA if NA in verdicts else "pass"


def run_checks(metrics: pd.DataFrame, points: list, per_image: list[dict], grads: list[dict],
               probe: dict | None, boots: Boots | None = None, clean_results: list[dict] | None = None
               ) -> SanityReport:
    """Every check the run's figures allow; ``probe``: the masking probe's figures (None: it did not run);
    ``boots``: each point's AP on the run's shared bootstrap resamples (scoring.Scored.boots);
    ``clean_results``: the clean COCO results (predictions/clean.json), for the saturation check."""
    aps = _APs(metrics, boots)
    checks = [*beats_random(aps, points), *monotone(aps, points), *pgd_vs_fgsm(aps, points),
              *black_box(aps, points), *loss_increased(per_image), gradients(grads)]
    if clean_results is not None:
        checks.append(saturated_scores(clean_results))
    if probe is not None:
        checks += [moderate_eps(probe), deterministic(probe), gradient_fidelity(probe)]
    return {"verdict": overall(checks), "checks": _finite(checks)}

def _finite(obj):
    """JSON has no NaN: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
