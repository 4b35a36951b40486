"""Adversarial patches as a kind (docs/patches.md): the universal patch is trained once before the pass (EOT over
a held-out training split, resumable); per batch, the universal patch and its baselines are pasted at seeded
placements, and per-image / per-object patches are optimised and shown beside their baselines at the same
placements; the physical sticker (patch_physical.py) is trained before the pass too and judged per batch under the
viewing conditions. Beside the engine's files: patches.csv, patches/*.pt|png, patch_training.csv,
physical_training.csv.
"""
from __future__ import annotations


import numpy as np
import torch
from tqdm import tqdm

from ..attacks.objectives import resolve_losses
from ..data.coco import CocoDataset
from ..errors import RobustsegError
from ..eval.coco_eval import predict, to_coco_results
from ..fileio import sha256_file
from ..patches.apply import paste, sample_placement, side_pixels
from ..patches.files import load_patch_file, read_patch_png
from ..patches.per_image import image_placement, optimise_fixed, render, start_patches
from ..patches.per_object import area_fraction, placements_for
from ..patches.suite import PatchSuite, load_patch_suite, with_physical_options
from ..patches.universal import train_universal
from ..results import write_csv
from ..run import GRADIENT_COST, BatchOut, Kind, Point, RunOptions, execute
from ..utils import derived_seed
from . import patch_files
from .patch_physical import PhysicalPatch

TRAIN_SEED = 777  # default training split: neither 0 (the shipped model's training data) nor 12345 (evaluation)
ATTACK = {"universal": "patch-universal", "per-image": "patch-image", "per-object": "patch-object"}


class Patches(Kind):
    name = "patch"
    default_limit = 40
    needs_annotations = True

    def __init__(self, suite: PatchSuite, train_data=None, train_images=None, apply=None):
        if bool(train_data) != bool(train_images):
            raise RobustsegError("--train-data and --train-images go together")
        if apply and train_data:
            raise RobustsegError("--apply evaluates a saved patch: it trains nothing, so --train-data has no use")
        self.suite, self.applied = suite, self.load_applied(apply, suite)
        # a saved patch is evaluated as what it is: a universal .pt, or a physical .pt / exported .png
        self.kinds = [self.applied.get("kind", "universal")] if self.applied else list(suite["kinds"])
        if not self.kinds:
            raise RobustsegError(f"{suite.source}: kinds is empty; nothing to run")
        self.train_paths = (train_data, train_images)
        self.losses = resolve_losses(suite["losses"])
        self.physical = PhysicalPatch(suite, self.applied) if "physical" in self.kinds else None

    @staticmethod
    def load_applied(apply, suite: PatchSuite) -> dict | None:
        if not apply:
            return None
        if str(apply).lower().endswith(".png"):
            return read_patch_png(apply, suite["physical"]["resolution"])
        return load_patch_file(apply)

    # ------------------------------------------------------------------------------------------- the plan
    def train_set(self, ctx) -> CocoDataset | None:
        """The training split of the universal and the physical patch (its size from the first of them)."""
        trained = [k for k in self.kinds if k in ("universal", "physical")]
        if not trained or self.applied:
            return None
        n = self.suite[trained[0]]["train_images"]
        data, images = self.train_paths
        if data is None:
            from ..data.synth import default_split
            data, images = default_split(n=max(n, 1), seed=TRAIN_SEED)
        return CocoDataset(data, images, category_ids=ctx.lm.category_ids, limit=n or None)

    def check(self, ctx) -> None:
        s = self.suite
        if s["target_class"] != "next" and s["target_class"] not in ctx.lm.class_names:
            raise RobustsegError(f"target_class {s['target_class']!r} is not a class of the model "
                                 f"({', '.join(ctx.lm.class_names[:10])})")

    def ready(self, ctx, run_dir) -> None:
        s = self.suite
        self.target_label = None if s["target_class"] == "next" else ctx.lm.class_names.index(s["target_class"]) + 1
        self.out = run_dir.path
        self.example_ids = [i for i in ctx.ds.image_ids if i not in ctx.problems][:patch_files.EXAMPLES]
        if "universal" in self.kinds:
            self.variants = patch_files.load_universal(run_dir.path, s["baselines"], ctx.device)
        if self.physical:
            self.physical.ready(run_dir.path, ctx.device)

    def fingerprint(self, ctx) -> dict:
        train = self.train_set(ctx)
        return {"suite": {k: v for k, v in self.suite.as_dict().items() if k not in ("source", "name", "description")},
                "train_sha256": sha256_file(train.ann_file) if train is not None else None,
                "applied_sha256": self.applied["sha256"] if self.applied else None,
                **({"physical": self.physical.fingerprint()} if self.physical else {})}

    def describe(self, ctx) -> dict:
        train = self.train_set(ctx)
        return {"kinds": self.kinds, "suite": self.suite.as_dict(),
                "applied": {k: v for k, v in self.applied.items() if k != "patch"} if self.applied else None,
                "train_dataset": None if train is None else {
                    "annotations": str(train.ann_file.resolve()), "images": str(train.image_root.resolve()),
                    "sha256": sha256_file(train.ann_file), "num_images": len(train)}}

    def points(self, ctx) -> list[Point]:
        digital = [Point(self.point_name(k, b), self.name, {"attack": self.point_name(k, b), "norm": "none",
                                                             "eps_label": "", "steps": self.steps(k)})
                   for k in self.kinds if k != "physical" for b in ["", *self.suite["baselines"]]]
        return digital + (self.physical.points(self.name) if self.physical else [])

    @staticmethod
    def point_name(kind: str, baseline: str) -> str:
        return ATTACK[kind] + (f"-{baseline}" if baseline else "")

    def steps(self, kind: str) -> int:
        if kind == "physical":
            return self.physical.steps
        if kind == "universal":
            return int(self.applied.get("steps", 0)) if self.applied else self.suite["universal"]["steps"]
        return self.suite[kind]["steps"]

    def cost_per_image(self, ctx) -> float:
        n = 1 + len(self.suite["baselines"])
        return sum(self.physical.cost_per_image() if k == "physical" else
                   n + (0 if k == "universal" else self.steps(k) * GRADIENT_COST) for k in self.kinds)

    # ------------------------------------------------------------------------------------ universal patch
    def prepare(self, ctx, run_dir) -> None:
        """Main rank: train the universal and physical patches (or take --apply's), save them and their
        baselines."""
        if self.physical:
            natural = self.natural(ctx) if "natural" in self.suite["baselines"] and self.applied else None
            self.physical.prepare(ctx, run_dir.path, self.train_set(ctx), self.losses, self.target_label_for(ctx),
                                  natural)
        if "universal" in self.kinds:
            self.prepare_universal(ctx, run_dir)

    def prepare_universal(self, ctx, run_dir) -> None:
        u, history, natural = self.suite["universal"], [], None
        if self.applied:
            patch = self.applied["patch"].to(ctx.device)
        else:
            train = self.train_set(ctx)
            load = patch_files.cached_loader(train, ctx.device, ctx.opts.on_error)
            if train.ann_file.resolve() == ctx.data.resolve() or sha256_file(train.ann_file) == sha256_file(ctx.data):
                tqdm.write("warning: the universal patch trains on the evaluation dataset itself: not held out")
            patch, history = train_universal(
                ctx.lm.model, load, len(train), u, self.suite.eot, self.suite["objective"], self.losses,
                ctx.lm.num_classes, self.target_label_for(ctx), ctx.seed, ctx.device,
                run_dir.path / "work" / "universal.state.pt", True, ctx.opts.progress)
            natural = load(0)[0]
        if natural is None and "natural" in self.suite["baselines"]:
            natural = self.natural(ctx)
        patch_files.save_universal(run_dir.path, patch, history, self.universal_meta(ctx), self.suite["baselines"],
                                   natural, derived_seed(ctx.seed, "universal-init"))

    def natural(self, ctx) -> torch.Tensor:
        """The natural-crop baseline's source: the first usable evaluation image."""
        if getattr(self, "_natural", None) is None:
            first = next(i for i, iid in enumerate(ctx.ds.image_ids) if iid not in ctx.problems)
            self._natural = ctx.ds.load_image(first).to(ctx.device)
        return self._natural

    def target_label_for(self, ctx) -> int | None:
        t = self.suite["target_class"]
        return None if t == "next" else ctx.lm.class_names.index(t) + 1

    def universal_meta(self, ctx) -> dict:
        s, u = self.suite, self.suite["universal"]
        side = float(self.applied.get("side", u["side"])) if self.applied else u["side"]
        return {"kind": "universal", "side": side, "policy": u["policy"], "steps": self.steps("universal"),
                "objective": s["objective"], "losses": s["losses"], "eot": s["eot"], "model_sha256": ctx.lm.sha256,
                "applied_from": self.applied["path"] if self.applied else None}

    # -------------------------------------------------------------------------------------------- batches
    def work(self, ctx, batch) -> BatchOut:
        out = BatchOut(rows={"patch_images": [], "patch_objective": [], "patch_tensors": []})
        self.show("clean", batch.ids, batch.images)
        for kind in self.kinds:
            if kind == "physical":
                out.merge(self.physical.work(ctx, batch, self.predictions, self.show))
            else:
                out.merge(self.universal(ctx, batch) if kind == "universal" else self.fixed(ctx, batch, kind))
        return out

    def predictions(self, ctx, images, ids) -> list[dict]:
        return [r for o, iid in zip(predict(ctx.lm.model, images), ids)
                for r in to_coco_results(o, iid, ctx.lm.category_ids)]

    def show(self, kind: str, ids, images) -> None:
        patch_files.save_example_tiles(self.out, kind, ids, images, self.example_ids)

    def universal(self, ctx, batch) -> BatchOut:
        side, policy, eot = self.variants["meta"]["side"], self.suite["universal"]["policy"], self.suite.eot
        pls = []
        for iid, x, t in zip(batch.ids, batch.images, batch.targets):
            g = torch.Generator().manual_seed(derived_seed(ctx.seed, "place", iid))
            pls.append(sample_placement(g, *x.shape[1:], side_pixels(*x.shape[1:], side), t["boxes"], policy, eot))
        out = BatchOut(rows={"patch_images": []})
        for b in ["", *self.suite["baselines"]]:
            xs = [paste(x, self.variants[b], pl) for x, pl in zip(batch.images, pls)]
            name = self.point_name("universal", b)
            batch.progress(0, name)
            out.predictions[name] = self.predictions(ctx, xs, batch.ids)
            out.rows["patch_images"] += [{"image_id": iid, "point": name, "area": pl.area_fraction(*x.shape[1:]),
                                          "held": bool(pl.ok)} for iid, x, pl in zip(batch.ids, batch.images, pls)]
            if not b:
                self.show("universal", batch.ids, xs)
            batch.progress(len(batch.ids))
        return out

    def fixed(self, ctx, batch, kind: str) -> BatchOut:
        """Per-image or per-object patches for one batch, and the baselines at the same placements."""
        s, cfg, ids, imgs = self.suite, self.suite[kind], batch.ids, batch.images
        if kind == "per-image":
            pls = [[image_placement(torch.Generator().manual_seed(derived_seed(ctx.seed, "image-place", iid)),
                                    *x.shape[1:], t["boxes"], cfg)] for iid, x, t in zip(ids, imgs, batch.targets)]
        else:
            pls = placements_for(batch.targets, cfg["relative_side"])
        batch.progress(0, f"patch-{kind} (optimising)")
        adv, history = optimise_fixed(ctx.lm.model, imgs, batch.targets, pls, ids, s["objective"], self.losses,
                                      ctx.lm.num_classes, self.target_label, cfg["steps"], cfg["lr"], ctx.seed)
        batch.progress(len(ids) * cfg["steps"] * GRADIENT_COST)
        natural = self.natural(ctx) if "natural" in s["baselines"] else None
        variants = {"": adv, **{b: start_patches(pls, ids, ctx.seed, b, ctx.device, natural) for b in s["baselines"]}}
        out = BatchOut(rows={"patch_images": []})
        for b, ps in variants.items():
            name = self.point_name(kind, b)
            batch.progress(0, name)
            xs = [render(x, p, pl) for x, p, pl in zip(imgs, ps, pls)]
            out.predictions[name] = self.predictions(ctx, xs, ids)
            out.rows["patch_images"] += [{"image_id": iid, "point": name, "area": area_fraction(pl, *x.shape[1:]),
                                          "held": all(q.ok for q in pl)} for iid, x, pl in zip(ids, imgs, pls)]
            if not b:
                self.show(kind, ids, xs)
            batch.progress(len(ids))
        out.rows["patch_objective"] = [{"image_id": iid, "kind": kind, "start": history[0], "end": history[-1]}
                                       for iid in ids] if history else []
        out.rows["patch_tensors"] = [{"image_id": iid, "kind": kind, "patches": [p.cpu().tolist() for p in ps],
                                      "placements": [[q.cx, q.cy, q.side, q.angle] for q in pl]}
                                     for iid, ps, pl in zip(ids, adv, pls)]
        return out

    # ------------------------------------------------------------------------------------------ the end
    def amend(self, ctx, run_dir, scored) -> None:
        order = {iid: n for n, iid in enumerate(ctx.ds.image_ids)}
        self.per_image = run_dir.merged("images", "patch_images", order)
        for p in self.points(ctx):
            areas = [r["area"] for r in self.per_image if r["point"] == p.key]
            scored.columns[p.key] = {"patch_area": float(np.mean(areas)) if areas else float("nan")}

    def finish(self, ctx, run_dir, scored) -> dict:
        order = {iid: n for n, iid in enumerate(ctx.ds.image_ids)}
        objective = run_dir.merged("images", "patch_objective", order)
        tensors = run_dir.merged("images", "patch_tensors", order)
        rows = patch_files.patches_rows(self, ctx, scored, self.per_image, objective)
        info: dict = {"kinds_run": self.kinds}
        if self.physical:
            rows += self.physical.rows(scored, self.per_image)
            info["physical_export"] = self.physical.exports(run_dir.path)
        write_csv(run_dir.path / "patches.csv", rows, patch_files.PATCHES_COLUMNS)
        for kind in (k for k in self.kinds if k in ("per-image", "per-object")):
            patch_files.save_fixed(run_dir.path, kind, [t for t in tensors if t["kind"] == kind],
                                   self.suite, ctx.lm.sha256)
        shown = [k for k in self.kinds if k != "physical"] + (["physical", "physical-print"] if self.physical else [])
        patch_files.save_examples_grid(run_dir.path, shown, self.example_ids)
        return info

    def summary(self, ctx, scored) -> str:
        from ..run.summary import summary_table
        m = scored.metrics
        return summary_table(m[m.kind.isin(["clean", self.name])])


def run_patches(model=None, suite=None, data=None, images=None, *, train_data=None, train_images=None, apply=None,
                out=None, force: bool = False, resume: bool = False, print_width_cm: float | None = None,
                colours: str | None = None, **options):
    """Optimise and evaluate the suite's patches (or, with ``apply``, evaluate a saved universal patch, or a
    physical one: its .pt or exported .png) on a held-out dataset (default: the first 40 images of the built-in
    synthetic split) into the results directory ``out``. ``print_width_cm`` and ``colours`` (an r,g,b CSV)
    override the suite's [physical] table. ``options`` are RunOptions (limit, batch_size, device, seed, ...)."""
    suite = suite if isinstance(suite, PatchSuite) else load_patch_suite(suite)
    suite = with_physical_options(suite, apply, print_width_cm=print_width_cm, colours=colours)
    return execute([Patches(suite, train_data, train_images, apply)], model, data, images, out=out,
                   opts=RunOptions(**options), force=force, resume=resume, label="patch")
