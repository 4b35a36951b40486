"""The worst-case ensemble of an attack suite (``ensemble = true``, attacks/robust.toml; docs/robust.md).

At each (norm, eps) the suite's gradient attacks (and Square) are the members. They run in the plan's order on
every batch; an image that a member already emptied (the model returns no detection at all) is not attacked again by the
later members: every object on it is already missed, so their gradient evaluations would buy nothing. Such an
image keeps the emptying member's adversarial image in the later members' points too (``attacked`` is False in
per_image.csv).

After scoring, per eps and per IoU type, eval/worst_case.py keeps per image the member whose adversarial image
makes the set's AP lowest: the "robust" point, never above any member's AP, scored like every other point (with
bootstrap intervals on the same resamples); which member won on each image goes into ensemble_winners.csv.
"""
from __future__ import annotations

from ..eval.coco_eval import IOU_TYPES, evaluate
from ..eval.worst_case import select
from ..run import Point
from ..suites import AttackPoint

# the gradient attacks and Square (black-box, as in AutoAttack); random noise is the baseline, not a member
MEMBER_ATTACKS = ("fgsm", "pgd", "mifgsm", "apgd", "square")
WINNER_COLUMNS = ["image_id", "norm", "eps", "eps_label", "seed", "iou_type", "winner", "objective", "members_run"]


def groups(plan: list[AttackPoint]) -> dict[tuple[str, float, int], list[AttackPoint]]:
    """(norm, eps, seed) -> its members, in the plan's order (the order they run in); under --seeds each seed
    has its own ensemble."""
    out: dict[tuple[str, float, int], list[AttackPoint]] = {}
    for p in plan:
        if p.attack in MEMBER_ATTACKS:
            out.setdefault((p.norm, p.eps, p.seed), []).append(p)
    return out


def gradient_budget(p: AttackPoint) -> int:
    """Gradient evaluations per image the member would spend on an image it attacks (Square: none, only
    queries)."""
    return 0 if p.attack == "square" else p.steps * int(dict(p.params).get("restarts", 1))


def robust_point(members: list[AttackPoint]) -> Point:
    first = members[0]
    return Point(f"robust-{first.norm}-eps{first.eps:.6f}" + (f"-seed{first.seed}" if first.seed else ""), "attack",
                 {"attack": "robust", "norm": first.norm, "eps": first.eps, "eps_label": first.eps_label,
                  "steps": sum(gradient_budget(m) for m in members), "seed": first.seed})


class Emptied:
    """Within one batch: per (norm, eps), the images a member left with no detection, with that member's
    adversarial image and outputs, so later members at that eps skip them."""

    def __init__(self):
        self.by_group: dict[tuple[str, float, int], dict[int, tuple]] = {}

    def done(self, p: AttackPoint) -> dict[int, tuple]:
        """Position in the batch -> (adversarial image, outputs, member key) of the images already emptied."""
        return self.by_group.setdefault((p.norm, p.eps, p.seed), {}) if p.attack in MEMBER_ATTACKS else {}

    def record(self, p: AttackPoint, positions: list[int], adv: list, outputs: list) -> None:
        if p.attack not in MEMBER_ATTACKS:
            return
        done = self.done(p)
        for j in positions:
            if len(outputs[j]["boxes"]) == 0:
                done.setdefault(j, (adv[j], outputs[j], p.key))


def add_robust_points(gt, scored, plan: list[AttackPoint], per_image: list[dict]) -> list[dict]:
    """Add each eps's robust point to ``scored`` (scored like any point from then on: metrics with intervals,
    per-class AP, detection statistics, object outcomes); return, per image and IoU type, its winner.

    Box and mask AP each get their own selection (each is the minimum over its own per-image choices). The
    point's predictions (predictions/<key>.json, and everything read from them) are the box selection's."""
    ids = scored.eval_ids["images"]
    ran = {(r["point"], int(r["image_id"])): bool(r["attacked"]) for r in per_image}
    winners = []
    for members in groups(plan).values():
        point, by_key = robust_point(members), {m.key: m for m in members}
        results = {m.key: scored.results[m.key] for m in members}
        ev: dict = {"per_class": {}}
        for iou_type in IOU_TYPES:
            sel = select(gt, results, ids, iou_type)
            chosen = sel.results(results)
            e = evaluate(gt, chosen, ids, iou_types=(iou_type,), resamples=scored.resamples.get("images"))
            ev[iou_type], ev["per_class"][iou_type] = e[iou_type], e["per_class"][iou_type]
            if "boots" in e:
                ev.setdefault("boots", {})[iou_type] = e["boots"][iou_type]
            if iou_type == "bbox":
                scored.results[point.key] = chosen
            winners += [{"image_id": iid, "norm": point.columns["norm"], "eps": point.columns["eps"],
                         "eps_label": point.columns["eps_label"], "seed": point.columns["seed"],
                         "iou_type": iou_type, "winner": w,
                         "objective": by_key[w].objective,
                         "members_run": sum(ran[(m.key, iid)] for m in members)}
                        for iid, w in zip(sel.image_ids, sel.winners)]
        scored.evals[point.key] = ev
        scored.points.append(point)
    return winners


def spent(plan: list[AttackPoint], per_image: list[dict]) -> dict:
    """Gradient evaluations the members spent, and those the skipping of emptied images saved."""
    budget = {p.key: gradient_budget(p) for p in plan if p.attack in MEMBER_ATTACKS}
    used = saved = 0
    for r in per_image:
        if r["point"] in budget:
            if r["attacked"]:
                used += budget[r["point"]]
            else:
                saved += budget[r["point"]]
    return {"gradient_evaluations": used, "gradient_evaluations_saved": saved}
