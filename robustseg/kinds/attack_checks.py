"""What the attack sweep measures for its sanity checks (robustseg/sanity.py, Carlini et al. 2019): each
image's objective before and after the attack, the input gradient's health at the clean point, and the
masking probe (PGD at a moderate eps against same-norm noise, and the determinism repeat); written to sanity.json
at the end."""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import sanity
from ..attacks import PGD, RandomNoise
from ..attacks.base import gradients
from ..attacks.eot import with_eot
from ..attacks.objectives import every_sample, make_objective
from ..eval.bootstrap import interval, resamples
from ..eval.coco_eval import evaluate, predict, to_coco_results
from ..fileio import write_json
from ..models.modes import attack_mode
from ..run import GRADIENT_COST
from ..run.progress import Progress
from ..utils import batches, derived_seed


@torch.no_grad()
def per_image_losses(model, images, targets, objective, seed: int, which: list[int]) -> dict[int, float]:
    """The objective of each image ``which`` names (positions in the batch), on its own, with every anchor and
    proposal in the loss: the detector's samplers otherwise draw a random few hundred, and that noise hides the
    small loss change of a 1/255 attack."""
    out = {}
    with attack_mode(model), every_sample(model):
        for i in which:
            torch.manual_seed(derived_seed(seed, "loss", i))
            out[i] = float(objective(model, [images[i]], [targets[i]])[0])
    return out


def health_rows(grads: list[torch.Tensor], ids, objective_name: str) -> list[dict]:
    """Per image: norms of an input gradient (the attack's first, attacks/tap.py), and whether it is zero/finite."""
    return [{"image_id": iid, "objective": objective_name, "l1": float(g.abs().sum()), "l2": float(g.norm()),
             "linf": float(g.abs().max()), "zero": bool((g == 0).all()), "finite": bool(torch.isfinite(g).all())}
            for g, iid in zip(grads, ids)]


CHECKS = ("full", "quick", "off")
# gradient evaluations per probe image besides the probe's PGD: the determinism repeat (two; the finite-difference
# check reuses the first, with two loss evaluations)
REPEAT_COST = 2


def plan_probe(mode: str, images: int, attack_gradients: int, sanity_images: int | None, eot: int = 1) -> dict:
    """The masking probe's size (sanity.PROBE: PGD at a moderate eps on 8 images, the noise ladder and the
    determinism repeat). ``full``: PGD-20 on all 8 images. ``quick`` (the default): PGD-10 (the default suite's
    strongest attack), on as many of those images as keep its gradient evaluations within the attacks' own, none if
    not even one fits (a one-step attack on 4 images). ``off``: none. ``sanity_images`` (tests) fixes the count.
    ``attack_gradients`` counts forward+backward passes, --eot's included; the probe's take ``eot`` passes too."""
    steps = sanity.PROBE["steps"] if mode == "full" else min(sanity.PROBE["steps"], sanity.PROBE["quick_steps"])
    most = min(sanity.PROBE["images"], images)
    per_image = (steps + REPEAT_COST) * eot
    if mode == "off":
        n, reason = 0, "--checks off"
    elif sanity_images is not None:
        n, reason = min(sanity_images, images), "" if sanity_images else "sanity_images=0"
    elif mode == "full":
        n, reason = most, ""
    else:
        n = min(most, attack_gradients // per_image)
        reason = "" if n else (f"one image would take {per_image} gradient evaluations, more than the attacks' "
                               f"own {attack_gradients}; --checks full runs it")
    # the determinism repeat and the finite difference: a randomised model shows on any image, so quick runs them
    # on the first few probe images
    repeat = n if mode == "full" or sanity_images is not None else min(n, sanity.PROBE["quick_repeat_images"])
    scorings = 1 + sum(1 for k in sanity.PROBE["scored_at"] if k < steps)
    return {"images": n, "steps": steps, "repeat_images": repeat, "eps": "the largest of " + ", ".join(
        f"{e * 255:.0f}/255" for e in sanity.PROBE["ladder"]) + f" where noise keeps {sanity.NOISE_KEEPS:.0%} of "
        "clean AP", "gradient_evaluations": (n * steps + repeat * REPEAT_COST) * eot,  # at most: the walk may stop early
        "predictions": n * (len(sanity.PROBE["ladder"]) + scorings) + 2 * repeat,
        "skipped": reason, "asked": mode == "off" or sanity_images is not None}  # asked: skipped on request


LOSS_IMAGES = 16  # --checks quick: loss_increased on at most this many images (full: on every image)
# --checks quick: the measurements' forward passes stay within this share of the attacks' gradient evaluations. A
# measurement takes every anchor and proposal, so it costs more than the sampled pass it is counted as (0.65 of a
# batched gradient evaluation on the shipped model, more than one on R50-FPN at 800 px, whose box and mask heads
# then see thousands of proposals): 5% keeps it a few percent of the run on either
LOSS_BUDGET = 0.05


def plan_losses(mode: str, image_ids: list[int], attack_gradients: int, forwards_per_image: int) -> dict:
    """Which images get their objective measured before and after each attack (sanity.loss_increased). Each
    measurement is one forward pass with every anchor and proposal in the loss, counted as a gradient evaluation.
    ``full``: every image. ``quick``: at most LOSS_IMAGES, spread over the dataset, and no more than keep those
    passes within LOSS_BUDGET of the attacks' own gradient evaluations (none if not even one image fits).
    ``off``: none."""
    usable = len(image_ids)
    if mode == "off" or not forwards_per_image:
        n = 0
    elif mode == "full":
        n = usable
    else:
        n = min(usable, LOSS_IMAGES, int(LOSS_BUDGET * attack_gradients) // forwards_per_image)
    chosen = [image_ids[(k * usable) // n] for k in range(n)] if n else []
    return {"images": n, "of": usable, "forward_passes": n * forwards_per_image, "image_ids": chosen}


class _ProbeImages:
    """The probe's images, their ground truth, and bbox AP (with bootstrap values) of predictions on them."""

    def __init__(self, ctx, eval_ids: list[int], n_boot: int, bar: Progress, eot: int = 1):
        pos = {iid: i for i, iid in enumerate(ctx.ds.image_ids)}
        self.ctx, self.ids, self.bar, self.eot = ctx, eval_ids, bar, eot
        loaded = [ctx.load(pos[iid]) for iid in eval_ids]
        self.images, self.targets = [x for x, _ in loaded], [t for _, t in loaded]
        self.rows = resamples(len(eval_ids), n_boot, derived_seed(ctx.seed, "probe-bootstrap")) if n_boot else None

    def chunks(self, first: int | None = None):
        for chunk in batches(len(self.ids) if first is None else first, 4):
            yield ([self.ids[i] for i in chunk], [self.images[i] for i in chunk], [self.targets[i] for i in chunk])

    def scored(self, results: list[dict]) -> tuple[float, np.ndarray | None]:
        m = evaluate(self.ctx.ds.coco, results, self.ids, ("bbox",), False, resamples=self.rows)
        return m["bbox"]["AP"], None if self.rows is None else m["boots"]["bbox"]["AP"]

    def predicted(self, chunks: list[list[torch.Tensor]]) -> tuple[float, np.ndarray | None]:
        lm = self.ctx.lm
        results = [r for (sub, _, _), adv in zip(self.chunks(), chunks)
                   for o, iid in zip(predict(lm.model, adv), sub) for r in to_coco_results(o, iid, lm.category_ids)]
        self.bar(len(self.ids))
        return self.scored(results)

    def noised(self, eps: float) -> tuple[float, np.ndarray | None]:
        self.bar(0, f"probe-noise {eps * 255:.0f}/255")  # what runs now
        noisy = []
        for sub, imgs, tgts in self.chunks():
            s = derived_seed(self.ctx.seed, "probe-noise", eps, sub[0])
            noisy.append(RandomNoise()(self.ctx.lm.model, imgs, tgts, [eps], None, torch.Generator().manual_seed(s))[0])
        return self.predicted(noisy)

    def objective(self):
        """The probe's objective: the detector's loss, averaged over --eot passes as the attacks' is."""
        return with_eot(make_objective("gt"), self.eot)

    def walked(self, pgd: PGD, eps: float, passes) -> tuple[float, np.ndarray | None, int]:
        """PGD on every chunk in step, the AP scored after the steps of PROBE's ``scored_at`` and after the last;
        the walk stops at the first AP that ``passes``. Returns the AP, its bootstrap values and the steps taken."""
        model, objective = self.ctx.lm.model, self.objective()
        self.bar(0, f"probe-pgd {eps * 255:.0f}/255")
        with attack_mode(model):
            walks = [(sub, pgd.iterates(model, imgs, tgts, eps, objective, None)) for sub, imgs, tgts in self.chunks()]
            current = [next(walk) for _, walk in walks]  # no random start: the images themselves
            for step in range(1, pgd.steps + 1):
                for c, (sub, walk) in enumerate(walks):
                    torch.manual_seed(derived_seed(self.ctx.seed, "probe-pgd", eps, sub[0], step))  # the samplers
                    current[c] = [a.detach() for a in next(walk)]
                    self.bar(len(sub) * self.eot * GRADIENT_COST)
                if step in sanity.PROBE["scored_at"] or step == pgd.steps:
                    ap, boots = self.predicted(current)
                    if step == pgd.steps or passes(ap):
                        return ap, boots, step


def _gap(noise: np.ndarray | None, attack: np.ndarray | None) -> list[float] | None:
    if noise is None or attack is None:
        return None
    lo, hi = interval(noise - attack)
    return None if math.isnan(lo) else [lo, hi]


def masking_probe(ctx, eval_ids: list[int], clean_results: list[dict], steps: int, repeat_images: int,
                  eot: int = 1) -> dict:
    """sanity.moderate_eps's figures: the noise ladder, then PGD without random start from the clean image at the
    largest eps whose noise keeps NOISE_KEEPS of the clean AP; and sanity.deterministic's (``repeat``). With
    ``eot`` > 1 (--eot) every gradient and loss of the probe is averaged over that many passes, as the attacks'
    are: a randomised model is probed the way it was attacked."""
    scorings = 1 + sum(1 for k in sanity.PROBE["scored_at"] if k < steps)  # at most: it may stop at the first
    cost = len(eval_ids) * (len(sanity.PROBE["ladder"]) + scorings + eot * steps * GRADIENT_COST) + \
        repeat_images * (2 * (1 + eot * GRADIENT_COST) + eot * 2)
    bar = Progress(cost, "checks", enabled=ctx.opts.progress and ctx.dist.main)
    probe = _ProbeImages(ctx, eval_ids, ctx.opts.bootstrap, bar, eot)
    keep = set(eval_ids)
    clean_ap, _ = probe.scored([r for r in clean_results if r["image_id"] in keep])
    ladder = []  # up the ladder until the noise takes more than it may: the eps below that one is the probe's
    for eps in sanity.PROBE["ladder"]:
        ladder.append((eps, *probe.noised(eps)))
        if ladder[-1][1] < sanity.NOISE_KEEPS * clean_ap:
            break
    kept = [step for step in ladder if step[1] >= sanity.NOISE_KEEPS * clean_ap]
    eps, noise_ap, noise_boots = kept[-1] if kept else ladder[0]
    ap, boots, taken = probe.walked(PGD(steps=steps, random_start=False), eps,
                                    lambda ap: ap <= sanity.FAR_BELOW * noise_ap)  # sanity.moderate_eps's pass
    bar(0, "determinism repeat")
    repeat, first_gradients = repeatability(ctx, probe, repeat_images)
    bar(repeat_images * 2 * (1 + eot * GRADIENT_COST), "finite-difference gradient check")
    out = {"eps": eps, "steps": steps, "steps_taken": taken, "images": len(eval_ids), "ap": ap, "clean_ap": clean_ap,
           "noise_ap": noise_ap, "interval": _gap(noise_boots, boots),
           "ladder": [{"eps": e, "noise_ap": a} for e, a, _ in ladder], "repeat": repeat,
           "fidelity": fidelity(ctx, probe, first_gradients)}
    bar(bar.bar.total - bar.bar.n)  # the noise ladder may stop early: the bar ends full
    bar.close()
    return out


def _prediction_diff(a: list[dict], b: list[dict], images: list[torch.Tensor]) -> float:
    """The largest change of a score, or of a box coordinate over its image's size (1.0 if a count changed)."""
    worst = 0.0
    for oa, ob, x in zip(a, b, images):
        if len(oa["scores"]) != len(ob["scores"]):
            return 1.0
        if len(oa["scores"]):
            worst = max(worst, float((oa["scores"] - ob["scores"]).abs().max()),
                        float((oa["boxes"] - ob["boxes"]).abs().max()) / max(x.shape[-2:]))
    return worst


def _agreement(g1: torch.Tensor, g2: torch.Tensor) -> float:
    """Cosine of two gradients; two zero gradients agree (their zeros are the gradients check's business)."""
    if not (g1.any() or g2.any()):
        return 1.0
    return float(torch.nn.functional.cosine_similarity(g1.flatten(), g2.flatten(), dim=0, eps=1e-30))


def repeatability(ctx, probe: _ProbeImages, first: int) -> tuple[dict, list[tuple[int, torch.Tensor]]]:
    """The ``first`` probe images predicted twice and their input gradients taken twice, each time under another
    seed, with every anchor and proposal in the loss (so a deterministic model has nothing random left to draw).
    Each gradient is of one image alone, so the first run's, with its seed, also serve ``fidelity``."""
    model, diff, cosines, first_run = ctx.lm.model, 0.0, [], []
    for sub, imgs, tgts in probe.chunks(first):
        runs = []
        for r in (1, 2):
            torch.manual_seed(derived_seed(ctx.seed, "repeat", r, sub[0]))
            outputs = predict(model, imgs)
            runs.append((outputs, [_alone_gradient(ctx, probe, x, t, derived_seed(ctx.seed, "repeat", r, iid))
                                   for iid, x, t in zip(sub, imgs, tgts)]))
        diff = max(diff, _prediction_diff(runs[0][0], runs[1][0], imgs))
        cosines += [_agreement(g1, g2) for (_, g1), (_, g2) in zip(runs[0][1], runs[1][1])]
        first_run += runs[0][1]
    return {"images": first, "prediction_diff": diff, "gradient_cosine": min(cosines), "eot": probe.eot}, first_run


def _alone_gradient(ctx, probe: _ProbeImages, x: torch.Tensor, target: dict, seed: int) -> tuple[int, torch.Tensor]:
    """(seed, the objective's input gradient at ``x`` alone under ``seed``), every anchor and proposal in the loss."""
    with attack_mode(ctx.lm.model), every_sample(ctx.lm.model):
        torch.manual_seed(seed)
        (g,), _ = gradients(ctx.lm.model, probe.objective(), [x], [target], sanitize=False)
    return seed, g


@torch.no_grad()
def _loss(model, objective, x: torch.Tensor, target: dict, seed: int) -> float:
    torch.manual_seed(seed)
    return float(objective(model, [x], [target])[0])


def fidelity(ctx, probe: _ProbeImages, first_gradients: list[tuple[int, torch.Tensor]]) -> dict:
    """Per probe image, whether the backward is the derivative of the forward: the objective's central finite
    difference along the sign of its input gradient, (L(x + h s) - L(x - h s)) / 2h with s = sign(g), over what the
    gradient predicts for it, <g, s> = ||g||_1. Each image alone, every anchor and proposal in the loss, the
    losses under the seed of the gradient (``repeatability``'s first run: a randomised model draws alike)."""
    model, objective, h, ratios = ctx.lm.model, probe.objective(), sanity.FIDELITY_STEP, []
    with attack_mode(model), every_sample(model):
        for x, t, (seed, g) in zip(probe.images, probe.targets, first_gradients):
            predicted = float(g.abs().sum())
            if not math.isfinite(predicted) or predicted == 0:
                continue  # no gradient to test: the gradients check counts these
            s = g.sign()
            actual = (_loss(model, objective, x + h * s, t, seed) - _loss(model, objective, x - h * s, t, seed)) / (2 * h)
            ratios.append(actual / predicted)
    return {"images": len(first_gradients), "step": h, "ratios": ratios,
            "median": float(np.median(ratios)) if ratios else float("nan")}


def write_sanity(ctx, sweep, scored, per_image: list[dict], grads: list[dict], out, probe_plan: dict
                 ) -> sanity.SanityReport:
    n = probe_plan["images"]
    eval_ids = scored.eval_ids["images"]
    probe = masking_probe(ctx, eval_ids[:n], scored.results["clean"], probe_plan["steps"],
                          probe_plan["repeat_images"], sweep.eot) if ctx.ds.has_annotations and n else None
    keys = {p.key for p in sweep.first_seed}  # --seeds: the checks read seed 0, as a run without it would
    # an image an ensemble member skipped holds another member's image: not this member's attack to judge
    rows = [r for r in per_image if r["point"] in keys and r["attacked"]]
    report = sanity.run_checks(scored.metrics, sweep.first_seed, rows, grads, probe, scored.boots,
                               scored.results["clean"])
    gradient_points = any(p.attack in sanity.GRADIENT_ATTACKS for p in sweep.first_seed)
    if gradient_points and not any(r["loss_measured"] for r in rows):
        report["checks"].append({"check": "loss_increased", "verdict": "warn", "detail": "not run: no image's "
                                 f"objective was measured (--checks quick keeps it within {LOSS_BUDGET:.0%} of the "
                                 "attacks' own gradient evaluations; --checks full measures every image)", "ran": False})
        report["verdict"] = "warn"
    if probe is None and probe_plan["skipped"] and not probe_plan["asked"]:
        # the masking probe did not run: the verdict cannot be pass (Carlini et al.: a check not made is no pass)
        report["checks"].append({"check": "moderate_eps", "verdict": "warn", "detail": f"not run (nor "
                                 f"deterministic, gradient_fidelity): {probe_plan['skipped']}", "ran": False})
        report["verdict"] = "warn"
    write_json(out / "sanity.json", report)
    return report
