"""The attack sweep as a kind: every point of a suite (FGSM, PGD, MI-FGSM, APGD, random noise, foolbox) on every
batch, beside the engine's clean pass; per-image objective values, gradient health, example images, detection
statistics and the sanity checks (kinds/attack_checks.py).

image -> perturbation -> loss -> gradient -> step (attacks/) -> predictions (streamed per point) -> COCO eval.
"""
from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..attacks import ATTACKS
from ..attacks.eot import with_eot
from ..attacks.foolbox_bridge import object_robust_accuracy
from ..attacks.judge import damage_judge
from ..attacks.tap import GradientTap
from ..amp import FP16_LOSS_SCALE
from ..attacks.objectives import attack_targets, make_objective, mislabel_to, target_label_for, with_amp
from ..errors import RobustsegError
from ..eval.coco_eval import predict, to_coco_results
from ..eval import object_outcomes as outcomes
from ..eval.detection_stats import detection_stats
from ..models.checkpoint import LoadedModel
from ..report.examples import example_points, save_examples
from ..results import write_csv
from ..run import GRADIENT_COST, BatchOut, Kind, Point, RunOptions, execute
from ..run.context import COUNT_SCORE
from ..run.summary import summary_table
from ..sanity import verdict_line
from ..suites import AttackPoint, Suite, load_suite, with_seeds
from ..utils import derived_seed
from . import attack_checks as checks
from . import ensemble

DEFAULT_LIMIT = 32  # images of the built-in synthetic split attacked when no dataset is given
SCORE_THRESHOLD = COUNT_SCORE  # detections counted in per_image.csv
PER_IMAGE_COLUMNS = ["image_id", "point", "attack", "norm", "eps", "steps", "objective", "attacked", "loss_measured",
                     "loss_clean",
                     "loss_adv", "detections_clean", "detections_adv", "linf", "l2"]
STATS_COLUMNS = ["point", "attack", "norm", "eps", "steps", "objective", "objects", "vanishing_rate", "fp_per_image",
                 "targeted_success", "mask_iou"]


def build_attack(point: AttackPoint):
    cls = ATTACKS[point.attack]
    kwargs = {"norm": point.norm, **dict(point.params)}
    if "steps" in getattr(cls, "__dataclass_fields__", {}):
        kwargs["steps"] = point.steps
    return cls(**kwargs)


def _objective_key(p: AttackPoint) -> tuple:
    return (p.objective, p.losses, p.target_class)


def _count(outputs) -> list[int]:
    return [int((o["scores"] >= SCORE_THRESHOLD).sum()) for o in outputs]


QUERY_ATTACKS = ("square",)  # budgets in queries (predictions), no gradient
NO_GRADIENT = ("random", "foolbox", *QUERY_ATTACKS)  # not in the attacks' own gradient evaluations
CLEAN_MEASURE = 1.0  # per objective and image: its clean loss (the gradient's health comes from the attack's)


def point_cost(p: AttackPoint) -> float:
    """Prediction-equivalents of one point per image: its gradient steps (a black-box attack's queries, one
    prediction each), its prediction, its loss measurement."""
    if p.attack in QUERY_ATTACKS:
        return p.steps + 2.0
    if p.attack == "apgd":  # each restart: its gradient steps, and the judge's prediction of every iterate
        restarts = dict(p.params).get("restarts", 1)
        return restarts * (p.steps * GRADIENT_COST + p.steps + 1) + 2.0
    return max(p.steps, 1 if p.attack != "random" else 0) * GRADIENT_COST + 2.0


class AttackSweep(Kind):
    name = "attack"
    default_limit = DEFAULT_LIMIT

    def __init__(self, suite: Suite, sanity_images: int | None = None, checks_mode: str = "quick", seeds: int = 1,
                 eot: int = 1):
        if checks_mode not in checks.CHECKS:
            raise RobustsegError(f"checks must be one of {', '.join(checks.CHECKS)}, not {checks_mode!r}")
        if not isinstance(eot, int) or isinstance(eot, bool) or eot < 1:
            raise RobustsegError(f"eot must be a positive number of forward passes per gradient, got {eot!r}")
        self.suite, self.sanity_images, self.checks = suite, sanity_images, checks_mode
        self.seeds, self.eot = seeds, eot
        self.plan: list[AttackPoint] = with_seeds(suite.points, seeds)  # refuses a bad count before any work
        self.sanity: dict | None = None  # sanity.json, once written (finish): the summary's last line names its warns
        # which images get their objective measured: planned in check(), when the dataset is known
        self.loss_plan, self.loss_ids, self.loss_objectives, self.loss_share = {}, set(), set(), 0.0

    def fingerprint(self, ctx) -> dict:
        """The suite and the checks (a resumed run must measure every batch the same way)."""
        return {"suite": self.suite.as_dict()["points"], "ensemble": self.suite.ensemble, "seeds": self.seeds,
                "eot": self.eot, "checks": self.checks, "sanity_images": self.sanity_images,
                "loss_images": self.loss_plan["image_ids"] if self.checks == "quick" else self.checks}

    def describe(self, ctx) -> dict:
        return {"suite": self.suite.as_dict(), "seeds": self.seeds, "eot": self.eot,
                "checks": {"mode": self.checks, "probe": self.probe_plan,
                           "losses": {k: v for k, v in self.loss_plan.items() if k != "image_ids"}}}

    def check(self, ctx) -> None:
        self.plan = with_seeds(_checked_points(self.suite, ctx.lm, ctx.ds), self.seeds)
        with_amp(make_objective("gt"), ctx.opts.amp, ctx.device)  # an unusable --amp fails here, before any work
        usable = len(ctx.ds) - len(ctx.problems)
        # sized on seed 0's work: with --seeds the checks read seed 0, and measure it as a run without --seeds does
        gradients = usable * sum(p.steps for p in self.first_seed if p.attack not in NO_GRADIENT)
        self.probe_plan = checks.plan_probe(self.checks, usable, gradients * self.eot, self.sanity_images, self.eot)
        measured = [p for p in self.plan if self.measures_loss(p)]
        self.loss_objectives = {_objective_key(p) for p in measured}  # each measured once at the clean images too
        self.loss_plan = checks.plan_losses(self.checks, [i for i in ctx.ds.image_ids if i not in ctx.problems],
                                            gradients, len(measured) + len(self.loss_objectives))
        self.loss_ids = set(self.loss_plan["image_ids"])
        self.loss_share = self.loss_plan["images"] / usable if usable else 0.0

    def prepare(self, ctx, run_dir) -> None:
        """Say up front what the checks cost (the main rank, before any work)."""
        p, lp = self.probe_plan, self.loss_plan
        if self.checks == "off":
            tqdm.write("checks: OFF (--checks off): no sanity checks, no per-image objective values; nothing in this "
                       "run can tell a robust model from one with masked gradients", file=sys.stderr)
            return
        losses = (f"the objective of {lp['images']} of {lp['of']} image(s) measured before and after each gradient "
                  f"attack = {lp['forward_passes']} forward passes" if lp["images"] else
                  "no per-image objective values (not even one image fits within "
                  f"{checks.LOSS_BUDGET:.0%} of the attacks' own gradient evaluations; --checks full measures them)")
        if p["images"]:
            tqdm.write(f"checks ({self.checks}): {losses}; after the attacks, the masking probe: PGD-{p['steps']} at "
                       f"{p['eps']} (it stops once AP is far below the noise's) on {p['images']} image(s), a "
                       f"determinism repeat and a finite-difference gradient check on {p['repeat_images']} = at most "
                       f"{p['gradient_evaluations']} gradient evaluations and {p['predictions']} predictions", file=sys.stderr)
        else:
            tqdm.write(f"checks ({self.checks}): {losses}; masking probe skipped ({p['skipped']})", file=sys.stderr)

    def ready(self, ctx, run_dir) -> None:
        self.out = run_dir.path
        self.example_keys = example_points(self.first_seed)  # a few adversarial images per family, for the report

    def points(self, ctx) -> list[Point]:
        return [Point(p.key, self.name, {"attack": p.attack, "norm": p.norm, "eps": p.eps, "eps_label": p.eps_label,
                                          "steps": p.steps, "seed": p.seed}) for p in self.plan if p.attack != "foolbox"]

    @property
    def first_seed(self) -> list[AttackPoint]:
        """The plan's points at seed 0: what the sanity checks and the report's curves read (--seeds adds the
        other seeds' spread beside them)."""
        return [p for p in self.plan if p.seed == 0]

    def cost_per_image(self, ctx) -> float:
        """The points, and per measured objective its clean value, on the share of images measured (an average:
        the bar charges every image alike)."""
        return sum(self.point_cost(p) for p in self.plan) + self.clean_cost

    @property
    def clean_cost(self) -> float:
        return CLEAN_MEASURE * len(self.loss_objectives) * self.loss_share

    def measures_loss(self, p: AttackPoint) -> bool:
        """Whether images get their objective measured after ``p``: not under --checks off, and under quick not
        for random noise, a query attack or a --seeds repeat (no check reads them; empty in per_image.csv)."""
        return self.checks == "full" or (self.checks == "quick" and p.attack not in ("random", *QUERY_ATTACKS)
                                         and p.seed == 0)

    def point_cost(self, p: AttackPoint) -> float:
        """point_cost, with --eot's passes per gradient step, and its loss measurement on the share measured."""
        extra = (self.eot - 1) * p.steps * GRADIENT_COST if p.attack not in ("random", "foolbox") else 0.0
        if p.attack == "foolbox":
            return point_cost(p) + extra
        return point_cost(p) + extra - 1.0 + (self.loss_share if self.measures_loss(p) else 0.0)

    def target_label(self, lm: LoadedModel, point: AttackPoint) -> int | None:
        return target_label_for(point.target_class, lm.class_names)

    def work(self, ctx, batch) -> BatchOut:
        """Every attack point on one batch (the clean pass is the engine's: batch.clean)."""
        model, imgs, ids = ctx.lm.model, batch.images, batch.ids
        out = BatchOut(rows={"per_image": [], "grads": [], "foolbox": []})
        clean_counts, losses_clean, emptied = _count(batch.clean), {}, ensemble.Emptied()
        healthy = set()  # objectives whose input-gradient health this batch has recorded
        for point in self.plan:
            batch.progress(0, point.key)
            s = derived_seed(ctx.seed, point.key, batch.key)
            if point.attack == "foolbox":
                out.rows["foolbox"] += self.foolbox(ctx, point, imgs, batch.targets, ids, s)
                batch.progress(len(ids) * self.point_cost(point))
                continue
            objective = make_objective(point.objective, point.losses, ctx.lm.num_classes, ctx.lm.class_names)
            targets = attack_targets(point.objective, batch.targets, batch.clean, ctx.lm.num_classes,
                                     self.target_label(ctx.lm, point), ctx.lm.class_names)
            okey, measure = _objective_key(point), [j for j, i in enumerate(ids) if i in self.loss_ids]
            if okey in self.loss_objectives and okey not in losses_clean:
                losses_clean[okey] = checks.per_image_losses(model, imgs, targets, objective,
                                                             derived_seed(ctx.seed, batch.key), measure)
                batch.progress(len(ids) * CLEAN_MEASURE * self.loss_share)
            done = emptied.done(point) if self.suite.ensemble else {}  # only an ensemble skips images
            todo = [j for j in range(len(ids)) if j not in done]
            tap = None if self.checks == "off" or okey in healthy or point.attack in NO_GRADIENT else \
                GradientTap(objective, FP16_LOSS_SCALE if ctx.opts.amp == "fp16" else 1.0)
            adv, adv_out = self.attacked(ctx, point, tap or objective, [imgs[j] for j in todo],
                                         [targets[j] for j in todo], s, [ids[j] for j in todo])
            if tap is not None and tap.gradients() is not None:  # the first gradient attack on this objective
                out.rows["grads"] += checks.health_rows(tap.gradients(), [ids[j] for j in todo], point.objective)
                healthy.add(okey)
            adv = _merged(todo, adv, {j: d[0] for j, d in done.items()})
            adv_out = _merged(todo, adv_out, {j: d[1] for j, d in done.items()})
            if self.suite.ensemble:  # a plain suite never reads them: keep no images past their point
                emptied.record(point, todo, adv, adv_out)
            if point.key in self.example_keys:
                save_examples(self.out, point.key, ids, adv, imgs)
            out.predictions[point.key] = [r for o, iid in zip(adv_out, ids)
                                          for r in to_coco_results(o, iid, ctx.lm.category_ids)]
            if not self.measures_loss(point):
                measure = []
            loss_adv = checks.per_image_losses(model, adv, targets, objective, derived_seed(ctx.seed, batch.key),
                                               measure)
            out.rows["per_image"] += _per_image_rows(point, ids, imgs, adv, losses_clean.get(okey), loss_adv,
                                                     set(measure), clean_counts, _count(adv_out), set(todo))
            batch.progress(len(ids) * self.point_cost(point))
        return out

    def attacked(self, ctx, point: AttackPoint, objective, imgs, targets, seed: int, ids: list[int]
                 ) -> tuple[list, list]:
        """The point's adversarial images of ``imgs`` and the model's outputs on them (nothing to do: none)."""
        if not imgs:
            return [], []
        torch.manual_seed(seed)
        objective = with_eot(with_amp(objective, ctx.opts.amp, ctx.device), self.eot)
        atk = build_attack(point)
        judge = damage_judge(ctx.ds, ids, ctx.lm.category_ids) if atk.judged else None
        adv = atk(ctx.lm.model, imgs, targets, [point.eps], objective, torch.Generator().manual_seed(seed),
                  judge=judge)[0]
        return adv, predict(ctx.lm.model, adv)

    def foolbox(self, ctx, point: AttackPoint, imgs, tgts, ids, seed: int) -> list[dict]:
        params = dict(point.params)
        name = params.pop("fb")
        torch.manual_seed(seed)
        rows = []
        for img, t, iid in zip(imgs, tgts, ids):
            clean, robust = object_robust_accuracy(ctx.lm.model, img, t["boxes"], t["labels"], name, params,
                                                   [point.eps])
            rows.append({"image_id": iid, "point": point.key, "attack": name, "norm": point.norm, "eps": point.eps,
                         "objects": len(clean), "clean_correct": int(clean.sum()),
                         "robust_correct": int(robust[0].sum())})
        return rows

    def amend(self, ctx, run_dir, scored) -> None:
        """The ensemble's robust point per eps (needs ground truth: its criterion is the set's AP)."""
        self.winners = None
        if self.suite.ensemble and ctx.ds.has_annotations:
            self.winners = ensemble.add_robust_points(ctx.ds.coco, scored, self.plan,
                                                      run_dir.read_all("images", "per_image"))

    def finish(self, ctx, run_dir, scored) -> dict:
        out, ds = run_dir.path, ctx.ds
        order = {iid: n for n, iid in enumerate(ds.image_ids)}
        write_csv(out / "detection_stats.csv", self.stats_rows(ctx, scored), STATS_COLUMNS)
        if ds.has_annotations:
            write_csv(out / "object_outcomes.csv", self.outcome_rows(ctx, scored), outcomes.COLUMNS)
        per_image = sorted(run_dir.read_all("images", "per_image"), key=lambda r: (r["point"], order[r["image_id"]]))
        write_csv(out / "per_image.csv", per_image, PER_IMAGE_COLUMNS)
        fb = run_dir.merged("images", "foolbox", order)
        if fb:
            write_csv(out / "object_accuracy.csv", _object_accuracy(fb))
        grads = run_dir.read_all("images", "grads")
        if self.checks != "off":
            self.sanity = checks.write_sanity(ctx, self, scored, per_image, grads, out, self.probe_plan)
        nonfinite = None if self.checks == "off" else sum(
            1 for r in per_image
            if r["loss_measured"] and not (math.isfinite(r["loss_clean"]) and math.isfinite(r["loss_adv"])))
        info = {"nonfinite_losses": nonfinite, "nonfinite_gradients": sum(1 for g in grads if not g["finite"])}
        if self.winners is not None:
            write_csv(out / "ensemble_winners.csv", self.winners, ensemble.WINNER_COLUMNS)
            info["ensemble"] = ensemble.spent(self.plan, per_image)
        return info

    def outcome_rows(self, ctx, scored) -> list[dict]:
        """Per point, what happened to the ground-truth objects, by class and size (eval/object_outcomes.py)."""
        ids, gt = scored.eval_ids["images"], ctx.ds.coco
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt.dataset["categories"]}
        rows = []
        for point in scored.points:
            if point.kind in ("clean", self.name):
                objs = outcomes.per_object(gt, scored.results[point.key], ids)
                rows += outcomes.outcome_rows(point.key, objs, ids, names, scored.resamples.get("images"))
        return rows

    def stats_rows(self, ctx, scored) -> list[dict]:
        lm, rows = ctx.lm, []
        by_key = {p.key: p for p in self.plan}
        for point in scored.points:
            if point.kind not in ("clean", self.name):
                continue
            p = by_key.get(point.key)
            target = None
            if p is not None and p.objective in ("mislabel", "mislabel-margin"):
                label = self.target_label(lm, p)
                target = {cid: lm.category_ids[int(mislabel_to(torch.tensor([i + 1]), lm.num_classes, label,
                                                               lm.class_names)) - 1]
                          for i, cid in enumerate(lm.category_ids)}
            rows.append({**scored.base(point), "objective": p.objective if p else "none",
                         **detection_stats(ctx.ds.coco, scored.results[point.key], scored.eval_ids["images"],
                                           target)})
        return rows

    def summary(self, ctx, scored) -> str:
        m = scored.metrics
        table = summary_table(m[m.kind.isin(["clean", self.name])])
        return table + "\n" + verdict_line(self.sanity) if self.sanity else table


def _merged(positions: list[int], values: list, known: dict[int, object]) -> list:
    """Values at ``positions`` and ``known`` ones elsewhere, in batch order."""
    at = dict(zip(positions, values))
    return [at[j] if j in at else known[j] for j in range(len(positions) + len(known))]


def _per_image_rows(point, ids, imgs, adv, loss_clean, loss_adv, measured, clean_counts, adv_counts, attacked
                    ) -> list[dict]:
    rows = []
    for j, iid in enumerate(ids):
        d = (adv[j] - imgs[j]).flatten()
        rows.append({"image_id": iid, "point": point.key, "attack": point.attack, "norm": point.norm,
                     "eps": point.eps, "steps": point.steps, "objective": point.objective,
                     "attacked": j in attacked, "loss_measured": j in measured,
                     "loss_clean": loss_clean[j] if j in measured else math.nan,
                     "loss_adv": loss_adv[j] if j in measured else math.nan, "detections_clean": clean_counts[j],
                     "detections_adv": adv_counts[j], "linf": float(d.abs().max()), "l2": float(d.norm(p=2))})
    return rows


def _checked_points(suite: Suite, lm: LoadedModel, ds) -> list[AttackPoint]:
    points = suite.points
    for p in points:
        target_label_for(p.target_class, lm.class_names)  # a placeholder or unknown class: refused, naming real ones
    if not ds.has_annotations and any(p.objective == "gt" for p in points):
        tqdm.write("notice: the dataset has no annotations; attacking the model's own confident detections "
                   "(objective 'pseudo') instead of ground truth; AP needs ground truth and reads -1", file=sys.stderr)
        points = [replace(p, objective="pseudo") if p.objective == "gt" else p for p in points]
    return points


def _object_accuracy(rows: list[dict]) -> list[dict]:
    """Object-level accuracy per foolbox point: clean, and robust (correct after the attack)."""
    out = {}
    for r in rows:
        a = out.setdefault(r["point"], {"point": r["point"], "attack": r["attack"], "norm": r["norm"],
                                        "eps": r["eps"], "objects": 0, "clean_correct": 0, "robust_correct": 0})
        for k in ("objects", "clean_correct", "robust_correct"):
            a[k] += r[k]
    for a in out.values():
        a["clean_accuracy"] = a["clean_correct"] / a["objects"] if a["objects"] else float("nan")
        a["robust_accuracy"] = a["robust_correct"] / a["objects"] if a["objects"] else float("nan")
    return list(out.values())


def run_suite(model: str | Path | LoadedModel | None = None, suite: str | Path | Suite | None = None,
              data: str | Path | None = None, images: str | Path | None = None, *, out: str | Path | None = None,
              force: bool = False, resume: bool = False, sanity_images: int | None = None, checks: str = "quick",
              seeds: int = 1, eot: int = 1, **options):
    """Attack ``model`` with every point of ``suite`` (default quick) on a dataset (default: the first 32 images
    of the built-in synthetic split) and write the results directory; returns a RunResult (None on torchrun
    ranks other than 0). ``options`` are RunOptions: limit, batch_size, device, seed, on_error, amp, workers,
    progress, command, category_map, bootstrap. ``checks``: full, quick (default: the masking probe
    within the attacks' own cost) or off (docs/objectives.md, "Sanity checks"); ``sanity_images``: images for that probe (0 skips it).
    ``seeds``: every attack repeated with that many independent random draws (the spread is reported); ``eot``:
    forward passes each attack gradient averages, for models with randomised preprocessing (docs/defences.md)."""
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    return execute([AttackSweep(suite, sanity_images, checks, seeds, eot)], model, data, images, out=out, opts=RunOptions(**options),
                   force=force, resume=resume, label=suite.name)
