"""What the attack sweep measures for its sanity checks (robustseg/sanity.py, Carlini et al. 2019): each
image's objective before and after the attack, the input gradient's health at the clean point, and the
unbounded-attack probe; written to sanity.json at the end."""
from __future__ import annotations

import torch

from .. import sanity
from ..attacks import PGD
from ..attacks.base import gradients
from ..attacks.objectives import every_sample, make_objective
from ..eval.coco_eval import evaluate, predict, to_coco_results
from ..fileio import write_json
from ..models.modes import attack_mode
from ..utils import batches, derived_seed


@torch.no_grad()
def per_image_losses(model, images, targets, objective, seed: int) -> list[float]:
    """Each image's objective on its own, with every anchor and proposal in the loss: the detector's samplers
    otherwise draw a random few hundred, and that noise hides the small loss change of a 1/255 attack."""
    out = []
    with attack_mode(model), every_sample(model):
        for i, (x, t) in enumerate(zip(images, targets)):
            torch.manual_seed(derived_seed(seed, "loss", i))
            out.append(float(objective(model, [x], [t])[0]))
    return out


def gradient_health(model, images, targets, objective, ids, objective_name: str) -> list[dict]:
    """Per image: norms of the objective's input gradient at the clean point, and whether it is zero/finite."""
    with attack_mode(model):
        grads, _ = gradients(model, objective, images, targets, sanitize=False)
    return [{"image_id": iid, "objective": objective_name, "l1": float(g.abs().sum()), "l2": float(g.norm()),
             "linf": float(g.abs().max()), "zero": bool((g == 0).all()), "finite": bool(torch.isfinite(g).all())}
            for g, iid in zip(grads, ids)]


CHECKS = ("full", "quick", "off")


def plan_probe(mode: str, images: int, attack_gradients: int, sanity_images: int | None) -> dict:
    """The unbounded probe's size. ``full``: sanity.UNBOUNDED (20 steps on 8 images). ``quick`` (the default):
    the same steps on as many of those images as keep its gradient evaluations within the attacks' own, none if
    not even one fits (a one-step attack on 4 images). ``off``: none. ``sanity_images`` (tests) fixes the count."""
    steps, most = sanity.UNBOUNDED["steps"], min(sanity.UNBOUNDED["images"], images)
    if mode == "off":
        n, reason = 0, "--checks off"
    elif sanity_images is not None:
        n, reason = min(sanity_images, images), "" if sanity_images else "sanity_images=0"
    elif mode == "full":
        n, reason = most, ""
    else:
        n = min(most, attack_gradients // steps)
        reason = "" if n else (f"one image would take {steps} gradient evaluations, more than the attacks' own "
                               f"{attack_gradients}; --checks full runs it")
    return {"images": n, "steps": steps, "eps": sanity.UNBOUNDED["eps"], "gradient_evaluations": n * steps,
            "skipped": reason, "asked": mode == "off" or sanity_images is not None}  # asked: skipped on request


def unbounded(ctx, eval_ids: list[int], clean_results: list[dict], steps: int) -> dict:
    """The gradient-masking probe: PGD at eps 1.0 from the clean image on a few images (sanity.py)."""
    cfg, lm, ds = {**sanity.UNBOUNDED, "steps": steps}, ctx.lm, ctx.ds
    pos = {iid: i for i, iid in enumerate(ds.image_ids)}
    results = []
    attack = PGD(steps=cfg["steps"], random_start=False)
    for chunk in batches(len(eval_ids), 4):
        sub = [eval_ids[i] for i in chunk]
        loaded = [ctx.load(pos[iid]) for iid in sub]
        imgs, tgts = [x for x, _ in loaded], [t for _, t in loaded]
        torch.manual_seed(derived_seed(ctx.seed, "unbounded", sub[0]))
        adv = attack(lm.model, imgs, tgts, [cfg["eps"]], make_objective("gt"))[0]
        results += [r for o, iid in zip(predict(lm.model, adv), sub) for r in to_coco_results(o, iid, lm.category_ids)]
    keep = set(eval_ids)
    clean = evaluate(ds.coco, [r for r in clean_results if r["image_id"] in keep], eval_ids, ("bbox",), False)
    adv_m = evaluate(ds.coco, results, eval_ids, ("bbox",), False)
    return {"eps": cfg["eps"], "steps": cfg["steps"], "images": len(eval_ids), "ap": adv_m["bbox"]["AP"],
            "clean_ap": clean["bbox"]["AP"]}


def write_sanity(ctx, sweep, scored, per_image: list[dict], grads: list[dict], out, probe_plan: dict) -> None:
    n = probe_plan["images"]
    eval_ids = scored.eval_ids["images"]
    probe = unbounded(ctx, eval_ids[:n], scored.results["clean"], probe_plan["steps"]) \
        if ctx.ds.has_annotations and n else None
    keys = {p.key for p in sweep.first_seed}  # --seeds: the checks read seed 0, as a run without it would
    report = sanity.run_checks(scored.metrics, sweep.first_seed, [r for r in per_image if r["point"] in keys],
                               grads, probe)
    if probe is None and probe_plan["skipped"] and not probe_plan["asked"]:
        # the masking probe did not run: the verdict cannot be pass (Carlini et al.: a check not made is no pass)
        report["checks"].append({"check": "unbounded", "verdict": "warn", "detail": f"not run: "
                                 f"{probe_plan['skipped']}", "ran": False})
        report["verdict"] = "warn"
    write_json(out / "sanity.json", report)
