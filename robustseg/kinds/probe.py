"""The shape-vs-texture probes as a kind (docs/probes.md): every image probe (line drawings, silhouettes, texture
scramble, grayscale, invert) on each batch of the dataset, scored against its own annotations; then a pass over
the cue-conflict set (probes/cue_conflict.py) for the shape-bias decisions.

Files beside the engine's: probes.csv, shape_bias.json/.csv, decisions.csv, examples/<point>/<id>.png and
examples/overview.png, cue_conflict/ (the set's annotations, and images when generated).
"""
from __future__ import annotations

import numpy as np

from ..eval.coco_eval import IOU_TYPES, predict, to_coco_results
from ..results import write_csv
from ..run import BatchOut, Kind, Pass, Point, RunOptions, Source, execute
from ..utils import derived_seed
from ..probes import shape_bias as sb
from ..probes.config import apply_probe, chw, hwc, load_config, resolve_probes
from ..probes.counting import object_counts
from ..probes.cue_conflict import cue_conflict_set
from ..fileio import write_json, write_png
from ..probes.overview import overview

CC = "probe-cue-conflict"
PROBES_COLUMNS = ["point", "images", "objects", "detections", "matched", "correct", "bbox_AP", "bbox_AP50",
                  "segm_AP", "segm_AP50"]
DECISION_COLUMNS = ["image_id", "annotation_id", "shape_category_id", "texture_category_id", "predicted_category_id",
                    "score", "decision"]


class Probes(Kind):
    name = "probe"
    default_limit = 100
    needs_annotations = True

    def __init__(self, probes="all", config=None):
        self.cfg = config if isinstance(config, dict) else load_config(config)
        self.names = resolve_probes(probes, self.cfg)
        self.image_probes = [n for n in self.names if n != "cue-conflict"]
        self.cc = None

    def fingerprint(self, ctx) -> dict:
        return {"probes": self.names, "config": self.cfg}

    def describe(self, ctx) -> dict:
        return {"probes": self.names, "config": self.cfg}

    def ready(self, ctx, run_dir) -> None:
        self.out = run_dir.path
        usable = [i for i in ctx.ds.image_ids if i not in ctx.problems]
        self.example_ids = usable[:int(self.cfg["examples"]["images"])]

    def points(self, ctx) -> list[Point]:
        pts = [self.point(f"probe-{n}", n) for n in self.image_probes]
        return pts + ([self.point(CC, "cue-conflict", "cue_conflict")] if self.cc is not None else [])

    def point(self, key: str, probe: str, pass_name: str = "images") -> Point:
        return Point(key, self.name, {"attack": key, "norm": "none", "eps_label": "", "steps": 0, "probe": probe},
                     pass_name)

    def cost_per_image(self, ctx) -> float:
        return float(len(self.image_probes))

    def predictions(self, ctx, point: str, images: list[np.ndarray], ids: list[int], examples) -> list[dict]:
        outs = predict(ctx.lm.model, [chw(x).to(ctx.device) for x in images])
        for iid, x in zip(ids, images):
            if iid in examples:
                write_png(self.out / "examples" / point / f"{iid}.png", x)
        return [r for o, iid in zip(outs, ids) for r in to_coco_results(o, iid, ctx.lm.category_ids)]

    def work(self, ctx, batch) -> BatchOut:
        clean = [hwc(x.cpu()) for x in batch.images]
        masks = [t["masks"].cpu().numpy().astype(bool) for t in batch.targets]
        out = BatchOut()
        for iid, x in zip(batch.ids, clean):
            if iid in self.example_ids:
                write_png(self.out / "examples" / "clean" / f"{iid}.png", x)
        for n in self.image_probes:
            batch.progress(0, f"probe-{n}")
            probed = [apply_probe(n, x, m, self.cfg, np.random.default_rng(derived_seed(ctx.seed, n, iid)))
                      for x, m, iid in zip(clean, masks, batch.ids)]
            out.predictions[f"probe-{n}"] = self.predictions(ctx, f"probe-{n}", probed, batch.ids, self.example_ids)
            batch.progress(len(batch.ids))
        return out

    def extra_passes(self, ctx, run_dir, failed: dict[int, str]) -> list[Pass]:
        """The cue-conflict set, after the images pass: an image found unreadable there is neither probed nor a
        texture donor (a resumed run rebuilds the same set from the same failures)."""
        if "cue-conflict" not in self.names:
            return []
        cc = cue_conflict_set(ctx.ds, ctx.lm, run_dir.path, self.cfg, ctx.seed, len(ctx.ds), skip=frozenset(failed))
        self.cc, self.cc_examples = cc, cc.image_ids[:int(self.cfg["examples"]["images"])]
        own = cc.info["source"] == "dataset"  # the dataset's own cue-conflict objects: its bad images stay out

        def work(batch) -> BatchOut:
            imgs = [hwc(x.cpu()) for x in batch.images]
            batch.progress(len(batch.ids))
            return BatchOut({CC: self.predictions(ctx, CC, imgs, batch.ids, self.cc_examples)})
        return [Pass("cue_conflict", Source(cc.image_ids, cc.load, lambda i: {}, cc.gt), work, 1.0,
                     failed if own else {})]

    def amend(self, ctx, run_dir, scored) -> None:
        """matched_objects per point; for the cue-conflict point the shape bias and its decision counts."""
        c = self.cfg["cue-conflict"]
        match = (c["iou"], c["score"], c["iou_type"])
        self.probe_rows = []
        for point in scored.points:
            gt = self.cc.gt if point.key == CC else ctx.ds.coco
            ids, results, m = scored.eval_ids[point.pass_name], scored.results[point.key], scored.evals[point.key]
            cnt = object_counts(gt, results, ids, ctx.lm.category_ids, *match)
            base = {**scored.base(point), "iou_type": c["iou_type"]}
            scored.rows.append({**base, "metric": "matched_objects", "value": cnt["matched"]})
            self.probe_rows.append({"point": point.key, **cnt,
                                    **{f"{t}_{k}": m[t][k] for t in IOU_TYPES for k in ("AP", "AP50")}})
            if point.key == CC:
                self.shape_bias(ctx, scored, results, ids, match, base)
        scored.extra.update(probes=self.probe_rows, shape_bias=getattr(self, "bias", None))

    def shape_bias(self, ctx, scored, results, ids, match, base) -> None:
        gt = self.cc.gt
        self.decisions = sb.decisions(results, gt, *match, image_ids=ids)
        cat_names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt.dataset["categories"]}
        textures = (gt.dataset.get("info") or {}).get("textures") or {}  # the synthetic generator's names
        self.bias = {**sb.summarise(self.decisions, cat_names, {int(k): v for k, v in textures.items()}),
                     "texture_false_positives": sb.texture_false_positives(results, gt, *match, image_ids=ids),
                     "iou": match[0], "score": match[1], "iou_type": match[2], "cue_conflict": self.cc.info,
                     "definition": "shape / (shape + texture) over matched cue-conflict objects "
                                   "(Geirhos et al., ICLR 2019); neither and unmatched are counted, not in the ratio"}
        o = self.bias["overall"]
        scored.rows.append({**base, "metric": "shape_bias",
                            "value": float("nan") if o["shape_bias"] is None else o["shape_bias"]})
        scored.rows += [{**base, "metric": f"{k}_decisions", "value": o[k]} for k in ("shape", "texture", "neither")]
        fp = self.bias["texture_false_positives"]["per_image"]
        scored.rows.append({**base, "metric": "texture_false_positives_per_image",
                            "value": float("nan") if fp is None else fp})

    def finish(self, ctx, run_dir, scored) -> dict:
        out = run_dir.path
        write_csv(out / "probes.csv", self.probe_rows, PROBES_COLUMNS)
        if self.cc is not None:
            write_json(out / "shape_bias.json", self.bias)
            write_csv(out / "shape_bias.csv", sb.summary_rows(self.bias),
                      ["group", "class", "shape", "texture", "neither", "unmatched", "objects", "shape_bias"])
            write_csv(out / "decisions.csv", self.decisions, DECISION_COLUMNS)
        points = ["clean"] + [p.key for p in self.points(ctx)]
        overview(out / "examples" / "overview.png", out / "examples", points, self.example_ids,
                 self.cc_examples if self.cc is not None else [])
        return {"cue_conflict": self.cc.info} if self.cc is not None else {}

    def summary(self, ctx, scored) -> str:
        lines = [f"{'point':26} {'bbox AP':>8} {'segm AP':>8} {'matched':>9}"]
        for r in self.probe_rows:
            lines.append(f"{r['point']:26} {r['bbox_AP']:8.3f} {r['segm_AP']:8.3f} {r['matched']:>4}/{r['objects']:<4}")
        if self.cc is not None:
            o = self.bias["overall"]
            bias = "n/a" if o["shape_bias"] is None else f"{o['shape_bias']:.3f}"
            lines.append(f"shape bias {bias} (shape {o['shape']}, texture {o['texture']}, neither {o['neither']}, "
                         f"unmatched {o['unmatched']} of {o['objects']} cue-conflict objects); "
                         f"{_fp_line(self.bias['texture_false_positives'])}")
        return "\n".join(lines)


def _fp_line(fp: dict) -> str:
    per = "n/a" if fp["per_image"] is None else f"{fp['per_image']:.2f}"
    return f"texture-class detections on no object: {fp['detections']} over {fp['images']} images ({per} per image)"


def run_probes(model=None, data=None, images=None, *, probes="all", config=None, out=None, force: bool = False,
               resume: bool = False, **options):
    """The shape-vs-texture probes (``all``, or names/groups: line, silhouette, scramble, grayscale, invert,
    cue-conflict, line-canny, scramble-8x8, ...) on a dataset (default: the first 100 images of the built-in
    synthetic split), into the results directory ``out``; the result has ``.probes`` and ``.shape_bias``."""
    return execute([Probes(probes, config)], model, data, images, out=out, opts=RunOptions(**options), force=force,
                   resume=resume, label="probes")
