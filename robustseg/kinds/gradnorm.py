"""Input-gradient norms as a kind (the maths is robustseg/gradnorm.py): per image, the L1/L2/Linf norm of each
detector loss's input gradient, into gradnorms.csv and gradnorms_summary.csv beside the run's clean metrics."""
from __future__ import annotations

from ..gradnorm import COLUMNS, SUMMARY_COLUMNS, checkpoint_name, image_rows, summarize
from ..results import write_csv
from ..run import GRADIENT_COST, BatchOut, Kind, RunOptions, execute
from ..utils import parse_eps

COMPONENT_PASSES = 6  # one backward per loss component and one for their sum


class GradientNorms(Kind):
    name = "gradnorm"
    default_limit = 32
    needs_annotations = True

    def __init__(self, name: str | None = None, adv_eps: float | None = None, adv_steps: int = 10):
        self.label, self.adv_eps, self.adv_steps = name, adv_eps, adv_steps

    def fingerprint(self, ctx) -> dict:
        return {"name": self.label, "adv_eps": self.adv_eps, "adv_steps": self.adv_steps}

    def describe(self, ctx) -> dict:
        return self.fingerprint(ctx)

    def cost_per_image(self, ctx) -> float:
        return (COMPONENT_PASSES * (2 if self.adv_eps else 1) + (self.adv_steps if self.adv_eps else 0)) * \
            GRADIENT_COST

    def work(self, ctx, batch) -> BatchOut:
        name = self.label or checkpoint_name(ctx.lm)
        rows = []
        for x, t, iid in zip(batch.images, batch.targets, batch.ids):
            rows += image_rows(ctx.lm, x, t, iid, name=name, seed=ctx.seed, adv_eps=self.adv_eps,
                               adv_steps=self.adv_steps)
            batch.progress(self.cost_per_image(ctx))
        return BatchOut(rows={"gradnorms": rows})

    def finish(self, ctx, run_dir, scored) -> dict:
        order = {iid: n for n, iid in enumerate(ctx.ds.image_ids)}
        rows = run_dir.merged("images", "gradnorms", order)
        write_csv(run_dir.path / "gradnorms.csv", rows, COLUMNS)
        write_csv(run_dir.path / "gradnorms_summary.csv", summarize(rows), SUMMARY_COLUMNS)
        return {}


def run_gradnorms(model=None, data=None, images=None, *, out=None, name: str | None = None, adv_eps=None,
                  adv_steps: int = 10, force: bool = False, resume: bool = False, **options):
    """Input-gradient norms of every loss component on a dataset, into a results directory ``out``."""
    eps = parse_eps(adv_eps) if adv_eps is not None else None
    return execute([GradientNorms(name, eps, adv_steps)], model, data, images, out=out,
                   opts=RunOptions(**options), force=force, resume=resume)
