"""Transfer attacks as a kind: adversarial images crafted on each source model, evaluated on the run's model
(the target). The target is always one of the sources: its own row is the white-box attack, and a transfer
attack that beats it is a sign of masked gradients (Carlini et al. 2019, section 4.4).

image -> source's loss -> source's gradient -> step (attacks/) -> target's predictions -> COCO eval.

Every source crafts with the same derived seeds as the attack sweep (``derived_seed(seed, point, batch)``), so
the white-box row equals `robustseg attack` at that point, and sources differ only in their gradients.
"""
from __future__ import annotations

import math
import re

import torch

from ..attacks.judge import damage_judge
from ..attacks.objectives import attack_targets, make_objective, target_label_for
from ..errors import RobustsegError
from ..eval.bootstrap import interval
from ..eval.coco_eval import predict, to_coco_results
from ..models.checkpoint import LoadedModel
from ..run import BatchOut, Kind, Point
from ..run.summary import summary_table
from ..suites import AttackPoint, Suite
from ..utils import derived_seed
from .attack import build_attack, point_cost

DEFAULT_LIMIT = 32
TOLERANCE = 0.02  # AP a transfer attack may beat the white-box one by, when the run has no intervals


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


class Transfer(Kind):
    name = "transfer"
    default_limit = DEFAULT_LIMIT
    needs_annotations = True  # the white-box comparison is an AP comparison

    def __init__(self, suite: Suite, sources: list[tuple[str, LoadedModel]], target_name: str):
        self.suite, self.sources, self.target_name = suite, list(sources), target_name
        self.crafted = [p for p in suite.points if p.attack not in ("random", "foolbox")]
        self.noise = [p for p in suite.points if p.attack == "random"]  # model-free: once, as the baseline
        if not self.crafted:
            raise RobustsegError(f"suite {suite.name}: transfer needs at least one gradient attack")

    def check(self, ctx) -> None:
        """Every source speaks the target's label space (the attacks' targets are the target's labels); the
        target itself is a source (the white-box row)."""
        for name, src in self.sources:
            if list(src.class_names) != list(ctx.lm.class_names):
                raise RobustsegError(f"transfer: source {name} has classes {src.class_names[:6]}..., the target "
                                     f"{self.target_name} {ctx.lm.class_names[:6]}...: one label space is needed")
            src.model.to(ctx.device)
        if not any(n == self.target_name for n, _ in self.sources):
            self.sources.insert(0, (self.target_name, ctx.lm))
        for p in self.crafted:
            target_label_for(p.target_class, ctx.lm.class_names)

    def fingerprint(self, ctx) -> dict:
        return {"suite": self.suite.as_dict()["points"], "target": self.target_name,
                "sources": {n: lm.sha256 for n, lm in self.sources}}

    def describe(self, ctx) -> dict:
        return {"suite": self.suite.as_dict(), "target": self.target_name,
                "sources": {n: {"path": lm.path, "sha256": lm.sha256} for n, lm in self.sources}}

    def key(self, source: str, p: AttackPoint) -> str:
        return f"from-{_safe(source)}--{p.key}"

    def points(self, ctx) -> list[Point]:
        def cols(p: AttackPoint, source: str) -> dict:
            return {"attack": p.attack, "norm": p.norm, "eps": p.eps, "eps_label": p.eps_label, "steps": p.steps,
                    "source": source}
        return [Point(p.key, self.name, cols(p, "")) for p in self.noise] + [
            Point(self.key(n, p), self.name, cols(p, n)) for n, _ in self.sources for p in self.crafted]

    def cost_per_image(self, ctx) -> float:
        return len(self.noise) * 1.0 + len(self.sources) * sum(point_cost(p) - 1.0 for p in self.crafted)

    def work(self, ctx, batch) -> BatchOut:
        out, ids = BatchOut(), batch.ids
        for p in self.noise:
            batch.progress(0, p.key)
            self.evaluate(ctx, batch, p.key, self.craft(ctx.lm, ctx, batch, p, batch.clean), out)
            batch.progress(len(ids))
        for name, src in self.sources:
            src_clean = batch.clean if src is ctx.lm else None  # the source's own, for objectives that need them
            for p in self.crafted:
                batch.progress(0, self.key(name, p))
                if p.objective == "pseudo" and src_clean is None:
                    src_clean = predict(src.model, batch.images)
                self.evaluate(ctx, batch, self.key(name, p), self.craft(src, ctx, batch, p, src_clean), out)
                batch.progress(len(ids) * (point_cost(p) - 1.0))
        return out

    def craft(self, src: LoadedModel, ctx, batch, p: AttackPoint, clean) -> list[torch.Tensor]:
        s = derived_seed(ctx.seed, p.key, batch.key)
        objective = make_objective(p.objective, p.losses, src.num_classes, src.class_names)
        targets = attack_targets(p.objective, batch.targets, clean, src.num_classes,
                                 target_label_for(p.target_class, src.class_names), src.class_names)
        torch.manual_seed(s)
        atk = build_attack(p)
        judge = damage_judge(ctx.ds, batch.ids, src.category_ids) if atk.judged else None
        return atk(src.model, batch.images, targets, [p.eps], objective, torch.Generator().manual_seed(s),
                   judge=judge)[0]

    def evaluate(self, ctx, batch, key: str, adv, out: BatchOut) -> None:
        """The target's predictions on ``adv``, as point ``key``'s results."""
        outputs = predict(ctx.lm.model, adv)
        out.predictions[key] = [r for o, iid in zip(outputs, batch.ids)
                                for r in to_coco_results(o, iid, ctx.lm.category_ids)]

    def finish(self, ctx, run_dir, scored) -> dict:
        return {"transfer_checks": self.checks(scored)}

    def summary(self, ctx, scored) -> str:
        m = scored.metrics
        return summary_table(m[m.kind.isin(["clean", self.name])]) + "\n" + transfer_verdict_line(self.checks(scored))

    def checks(self, scored) -> dict:
        """Per attack point and source: does the transfer attack beat the white-box one? With intervals, a warn
        needs the paired interval of (transfer AP - white-box AP) to lie below 0; without, a margin of 0.02."""
        rows = []
        for p in self.crafted:
            white = self.key(self.target_name, p)
            for name, _ in self.sources:
                if name == self.target_name:
                    continue
                key = self.key(name, p)
                diff = scored.evals[key]["bbox"]["AP"] - scored.evals[white]["bbox"]["AP"]
                bw, bt = scored.boots(white, "bbox"), scored.boots(key, "bbox")
                lo, hi = interval(bt - bw) if bw is not None else (math.nan, math.nan)
                beats = hi < 0 if math.isfinite(hi) else diff < -TOLERANCE
                rows.append({"point": p.key, "source": name, "transfer_ap": scored.evals[key]["bbox"]["AP"],
                             "whitebox_ap": scored.evals[white]["bbox"]["AP"], "difference": diff,
                             "ci_lo": lo, "ci_hi": hi, "verdict": "warn" if beats else "pass"})
        verdict = "warn" if any(r["verdict"] == "warn" for r in rows) else "pass"
        return {"verdict": verdict, "checks": rows,
                "rule": "warn when an attack crafted on another model takes the target's bbox AP lower than the "
                        "white-box attack at the same point (paired 95% interval of the difference below 0)"}


def transfer_verdict_line(report: dict) -> str:
    """The run's last word on the transfer check, naming each transfer that beat the white-box attack."""
    beaten = [c for c in report["checks"] if c["verdict"] == "warn"]
    if not beaten:
        return f"transfer check: {report['verdict']} (no attack crafted on another model beat the white-box one)"
    worst = "; ".join(f"{c['source']} at {c['point']}: bbox AP {c['transfer_ap']:.3f} vs white-box "
                      f"{c['whitebox_ap']:.3f}" + (f" (difference [{c['ci_lo']:+.3f}, {c['ci_hi']:+.3f}])"
                                                    if math.isfinite(c["ci_hi"]) else "") for c in beaten)
    return f"transfer check: warn: {worst}; the target's gradients may be masked (docs/transfer.md)"
