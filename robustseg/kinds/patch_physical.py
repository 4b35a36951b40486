"""The physical patch, part of the patch kind (docs/patches.md "Physical patches"): trained once before the pass
under the physical EOT with NPS and TV penalties (or taken from ``--apply PATCH.png``), exported as print-ready
PNGs, then judged per batch, with its print-quantised version and the baselines at identical sites and
conditions, under all viewing conditions together and under each alone (metrics.csv column ``view``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import RobustsegError
from ..fileio import write_json
from ..patches.files import export_print_png, save_pt
from ..patches.physical import area_fractions, render
from ..patches.printability import load_colours, non_printability, quantise, total_variation
from ..patches.sticker import conditions, physical_scene
from ..patches.universal import init_patch, train_universal
from ..results import write_csv
from ..run import BatchOut, Point
from ..utils import derived_seed
from . import patch_files

BASE = "patch-physical"


class PhysicalPatch:
    def __init__(self, suite, applied: dict | None = None):
        self.suite, self.cfg, self.applied = suite, suite["physical"], applied
        if applied:
            self.check_square(applied)
        self.colours = load_colours(self.cfg["colours"])  # a bad CSV is refused before anything runs
        self.components = ["all", *self.cfg["components"]]
        self.variants = ["", "print", *suite["baselines"]]

    @staticmethod
    def check_square(applied: dict) -> None:
        """A sticker is square: the warp maps its r x r pixels onto the site's square (a .pt can hold any shape)."""
        h, w = applied["patch"].shape[1:]
        if h != w:
            raise RobustsegError(f"--apply {applied['path']}: a {h}x{w} patch; a physical patch is square")

    @staticmethod
    def key(variant: str, component: str) -> str:
        return BASE + (f"-{variant}" if variant else "") + ("" if component == "all" else f".{component}")

    @property
    def steps(self) -> int:
        return int(self.applied.get("steps", 0) or 0) if self.applied else self.cfg["steps"]

    def points(self, kind: str) -> list[Point]:
        return [Point(self.key(v, c), kind, {"attack": self.key(v, "all"), "norm": "none", "eps_label": "",
                                             "steps": self.steps, "view": c})
                for c in self.components for v in self.variants]

    def cost_per_image(self) -> float:
        return float(len(self.components) * len(self.variants))

    def fingerprint(self) -> dict:
        """The printable colours' values, not just the CSV's path: a chart edited between a kill and --resume
        would otherwise train the rest of the patch, and quantise it, against other colours."""
        return {"colours_sha256": hashlib.sha256(self.colours.numpy().tobytes()).hexdigest()}

    def penalty(self, patch: torch.Tensor) -> torch.Tensor:
        return self.cfg["nps_weight"] * non_printability(patch, self.colours) + \
            self.cfg["tv_weight"] * total_variation(patch)

    # ------------------------------------------------------------------------------ before the pass
    @staticmethod
    def stem(variant: str) -> str:
        """patches/<stem>.pt|png of a variant: physical, physical-print, physical-random, ..."""
        return "physical" + (f"-{variant}" if variant else "")

    def prepare(self, ctx, out: Path, train, losses, target_label, natural) -> None:
        """Main rank: train (or take the applied patch), save every variant and export the printable PNGs."""
        if self.applied:
            patch, history = self.applied["patch"].to(ctx.device), []
        else:
            load = patch_files.cached_loader(train, ctx.device, ctx.opts.on_error)
            patch, history = train_universal(
                ctx.lm.model, load, len(train), self.cfg, None, self.suite["objective"],
                losses, ctx.lm.num_classes, target_label,
                ctx.seed, ctx.device, out / "work" / "physical.state.pt", True, ctx.opts.progress,
                scene=physical_scene(self.cfg, self.suite.physical_eot), penalty=self.penalty, tag="physical")
            natural = natural if natural is not None else load(0)[0]
        res, meta = patch.shape[-1], self.meta(ctx)
        saved = {"": patch, "print": quantise(patch, self.colours)}
        for b in self.suite["baselines"]:
            saved[b] = init_patch(b, res, derived_seed(ctx.seed, "physical-init"), natural)
        for v, p in saved.items():
            save_pt(out / "patches" / f"{self.stem(v)}.pt",
                    {"patch": p.detach().cpu(), **meta, "resolution": res, "variant": v or "adversarial"})
        width = self.cfg["print_width_cm"]
        exports = {v or "adversarial": export_print_png(out / "patches" / f"{self.stem(v)}.png",
                                                        saved[v], width) for v in ("", "print")}
        write_json(out / "work" / "physical_export.json", exports)
        if history:
            write_csv(out / "physical_training.csv", [{"step": i + 1, "objective": v} for i, v in enumerate(history)])

    def meta(self, ctx) -> dict:
        s, c = self.suite, self.cfg
        return {"kind": "physical", "placement": c["placement"], "cover": c["cover"], "side": c["side"],
                "steps": self.steps, "objective": s["objective"], "losses": s["losses"], "eot": s["physical-eot"],
                "train_eot": c["train_eot"], "colours": c["colours"], "nps_weight": c["nps_weight"],
                "tv_weight": c["tv_weight"], "model_sha256": ctx.lm.sha256,
                "applied_from": self.applied["path"] if self.applied else None}

    def ready(self, out: Path, device) -> None:
        self.patches = {v: torch.load(out / "patches" / f"{self.stem(v)}.pt", map_location="cpu",
                                      weights_only=True)["patch"].to(device) for v in self.variants}

    # ----------------------------------------------------------------------------------- per batch
    def work(self, ctx, batch, predictions, show) -> BatchOut:
        gens = [torch.Generator().manual_seed(derived_seed(ctx.seed, "physical-place", iid)) for iid in batch.ids]
        drawn, held = conditions(gens, batch.images, batch.targets, self.cfg, self.suite.physical_eot)
        out = BatchOut(rows={"patch_images": []})
        for comp in self.components:
            c = drawn if comp == "all" else drawn.only([] if comp == "none" else [comp])
            areas = area_fractions(c, [x.shape[1:] for x in batch.images]).tolist()
            for v in self.variants:
                name = self.key(v, comp)
                batch.progress(0, name)
                with torch.no_grad():
                    xs = render(batch.images, self.patches[v], c)
                out.predictions[name] = predictions(ctx, xs, batch.ids)
                out.rows["patch_images"] += [{"image_id": iid, "point": name, "area": a, "held": ok}
                                             for iid, a, ok in zip(batch.ids, areas, held)]
                if comp == "all" and v in ("", "print"):
                    show(self.stem(v), batch.ids, xs)
                batch.progress(len(batch.ids))
        return out

    # ------------------------------------------------------------------------------------ the end
    def rows(self, scored, per_image: list[dict]) -> list[dict]:
        """patches.csv rows: one per point, with the NPS and TV of the variant's patch."""
        clean, rows = scored.evals["clean"], []
        quality = {v: (float(non_printability(p.cpu(), self.colours)), float(total_variation(p.cpu())))
                   for v, p in self.patches.items()}
        for comp in self.components:
            for v in self.variants:
                name, m = self.key(v, comp), scored.evals[self.key(v, comp)]
                areas = [r["area"] for r in per_image if r["point"] == name]
                held = [r["held"] for r in per_image if r["point"] == name]
                rows.append({"point": name, "attack": self.key(v, "all"), "kind": "physical",
                             "variant": v or "adversarial", "view": comp,
                             "objective": self.suite["objective"] if v in ("", "print") else "", "steps": self.steps,
                             "side": self.cfg["cover"] if self.cfg["placement"] == "on-object" else self.cfg["side"],
                             "side_of": "object" if self.cfg["placement"] == "on-object" else "image",
                             "area_fraction": patch_files.or_nan(np.mean, areas),
                             "area_fraction_max": patch_files.or_nan(np.max, areas),
                             "policy": self.cfg["placement"], "policy_held": patch_files.or_nan(np.mean, held),
                             "images": len(areas), "nps": quality[v][0], "tv": quality[v][1],
                             "bbox_AP": m["bbox"]["AP"], "bbox_drop": clean["bbox"]["AP"] - m["bbox"]["AP"],
                             "segm_AP": m["segm"]["AP"], "segm_drop": clean["segm"]["AP"] - m["segm"]["AP"]})
        return rows

    def exports(self, out: Path) -> dict:
        return json.loads((out / "work" / "physical_export.json").read_text())
