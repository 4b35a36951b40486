"""``robustseg patch``: universal, per-image and per-object adversarial patches, each evaluated beside
random-noise / grey (/ natural-crop) baselines at the very same placements, written in the results-directory
contract of ``robustseg attack`` (docs/results.md, docs/patches.md):

    metrics.csv         clean and patch-<kind>[-<baseline>] rows; norm "patch", eps = mean realised area
                        fraction (patch area / image area), steps = optimisation steps
    patches.csv         per point: kind, variant, requested side, realised area fraction (mean, max), placement
                        policy and how often it held, objective at the start/end of optimisation, bbox/segm AP
    per_class.csv       per-category AP per point
    predictions/*.json  COCO results per point (clean.json too)
    patches/            universal.pt/.png, universal-<baseline>.pt, per-image.pt/.png, per-object.pt/.png,
                        examples.png; every .pt loads with torch.load(weights_only=True)
    patch_training.csv  the universal patch's objective at every training step
    run.json            command, seed, versions, checkpoint/dataset/train-split sha256, patch suite, status
    report.html

A run is resumable: the universal patch's training state is saved every ``save_every`` steps and each finished
kind is kept under work/ until the run completes.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..api import batches
from ..attacks.objectives import resolve_losses
from ..data.coco import CocoDataset
from ..errors import RobustsegError
from ..eval.coco_eval import IOU_TYPES, METRICS, evaluate, predict, to_coco_results
from ..fileio import atomic_write, sha256_file, write_json
from ..models.checkpoint import LoadedModel, load_model
from ..results import (check_resumable, model_fingerprint, prepare_out_dir, versions, write_csv, write_metrics,
                       write_run_json)
from ..runner import derived_seed, summary_table
from .apply import paste, sample_placement, side_pixels
from .per_image import image_placement, optimise_fixed, render, start_patches
from .per_object import area_fraction, placements_for
from .suite import PatchSuite, load_patch_suite
from .universal import init_patch, train_universal

TRAIN_SEED = 777  # default training split: neither 0 (the shipped model's training data) nor 12345 (evaluation)
ATTACK = {"universal": "patch-universal", "per-image": "patch-image", "per-object": "patch-object"}
PATCHES_COLUMNS = ["point", "attack", "kind", "variant", "objective", "steps", "side", "side_of", "area_fraction",
                   "area_fraction_max", "policy", "policy_held", "images", "objective_start", "objective_end",
                   "bbox_AP", "bbox_drop", "segm_AP", "segm_drop"]
EXAMPLES = 4  # images shown in patches/examples.png


@dataclass
class PatchRunResult:
    out: Path
    metrics: "object"  # pandas DataFrame of metrics.csv

    def summary(self) -> str:
        return summary_table(self.metrics)


def load_patch_file(path: str | Path) -> dict:
    """A saved patch (patches/universal.pt): {"patch": (3,h,w) tensor in [0,1], "side": ..., ...}; a bare tensor
    is accepted too (its side then comes from the suite)."""
    p = Path(path)
    if not p.is_file():
        raise RobustsegError(f"--apply {p}: no such file")
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # garbage, truncated, or pickled objects other than tensors (refused, never run)
        raise RobustsegError(f"--apply {p}: not a readable patch tensor file ({type(e).__name__})") from None
    d = {"patch": d} if torch.is_tensor(d) else d
    t = d.get("patch") if isinstance(d, dict) else None
    if not torch.is_tensor(t) or t.dim() != 3 or t.shape[0] != 3 or not t.is_floating_point():
        raise RobustsegError(f"--apply {p}: holds no (3,h,w) float patch under 'patch' (a per-image/per-object "
                             f"file cannot be re-applied: its patches belong to their images)")
    return {**d, "patch": t.float().clamp(0, 1), "path": str(p.resolve()), "sha256": sha256_file(p)}


def _png(path: Path, img: torch.Tensor, scale: int = 1) -> None:
    a = (img.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    im = Image.fromarray(a)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    atomic_write(path, lambda f: im.save(f, format="PNG"), mode="wb")


def _grid(tiles: list[torch.Tensor], size: int = 24, cols: int = 8) -> torch.Tensor:
    """Patches (or images) of any sizes tiled into one (3,H,W) image, nearest-neighbour resized."""
    tiles = [torch.nn.functional.interpolate(t[None].float().cpu(), size=(size, size), mode="nearest")[0]
             for t in tiles] or [torch.ones(3, size, size)]
    cols = min(cols, len(tiles))
    tiles += [torch.ones(3, size, size)] * (-len(tiles) % cols)
    return torch.cat([torch.cat(tiles[i:i + cols], 2) for i in range(0, len(tiles), cols)], 1)


def _save_pt(path: Path, obj) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), mode="wb")


class _PatchRun:
    def __init__(self, lm: LoadedModel, ds: CocoDataset, suite: PatchSuite, out: Path, device, seed: int,
                 batch_size: int, progress: bool):
        self.lm, self.ds, self.suite, self.out, self.device = lm, ds, suite, out, device
        self.seed, self.batch_size, self.progress = seed, batch_size, progress
        self.target_label = None if suite["target_class"] == "next" else \
            lm.class_names.index(suite["target_class"]) + 1
        self.losses = resolve_losses(suite["losses"])
        self.examples: dict[str, list[torch.Tensor]] = {}

    def load(self, i: int):
        img = self.ds.load_image(i).to(self.device)
        tgt = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self.ds.target(i).items()}
        return img, tgt

    def eval_batches(self):
        for idx in batches(len(self.ds), self.batch_size):
            loaded = [self.load(i) for i in idx]
            yield [self.ds.image_ids[i] for i in idx], [x for x, _ in loaded], [t for _, t in loaded]

    def results(self, images: list[torch.Tensor], ids: list[int]) -> list[dict]:
        out = predict(self.lm.model, images)
        return [r for o, iid in zip(out, ids) for r in to_coco_results(o, iid, self.lm.category_ids)]

    def keep_examples(self, kind: str, ids: list[int], images: list[torch.Tensor]) -> None:
        ex = self.examples.setdefault(kind, [])
        ex += [x.detach().cpu() for iid, x in zip(ids, images) if iid in self.ds.image_ids[:EXAMPLES]]

    def clean(self) -> dict:
        results = []
        bar = tqdm(total=len(self.ds), desc="clean", unit="img", disable=not self.progress, dynamic_ncols=True)
        for ids, imgs, _ in self.eval_batches():
            results += self.results(imgs, ids)
            self.keep_examples("clean", ids, imgs)
            bar.update(len(ids))
        bar.close()
        return {"clean": {"kind": "clean", "variant": "", "steps": 0, "areas": [0.0], "held": [], "results": results}}

    def _points(self, kind: str, steps: int, baselines: list[str]) -> dict:
        return {ATTACK[kind] + (f"-{b}" if b else ""): {"kind": kind, "variant": b or "adversarial", "steps": steps,
                                                        "areas": [], "held": [], "results": []}
                for b in ["", *baselines]}

    def universal(self, train: tuple | None, applied: dict | None, resume: bool) -> tuple[dict, dict]:
        """Train (or take the --apply) patch, then evaluate it and the baselines at seeded EOT placements."""
        s, u, eot = self.suite, self.suite["universal"], self.suite.eot
        side, policy = (float(applied.get("side", u["side"])) if applied else u["side"]), u["policy"]
        natural = None
        if applied:
            patch, history = applied["patch"].to(self.device), []
            steps = int(applied.get("steps", 0))
        else:
            tds, cache = train, {}

            def load(i):  # training images are few and reused every step: keep them
                if i not in cache:
                    img, tgt = tds.load_image(i).to(self.device), tds.target(i)
                    cache[i] = (img, {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in tgt.items()})
                return cache[i]
            patch, history = train_universal(
                self.lm.model, load, len(tds), {**u, "side": side}, eot, s["objective"], self.losses,
                self.lm.num_classes, self.target_label, self.seed, self.device,
                self.out / "work" / "universal.state.pt", resume, self.progress)
            steps = u["steps"]
            natural = load(0)[0]
        res = patch.shape[-1]
        variants = {"": patch}
        for b in s["baselines"]:
            if b == "natural" and natural is None:
                natural = self.load(0)[0]
            variants[b] = init_patch(b, res, derived_seed(self.seed, "universal-init"), natural).to(self.device)
        points = self._points("universal", steps, s["baselines"])
        bar = tqdm(total=len(self.ds), desc="eval universal", unit="img", disable=not self.progress,
                   dynamic_ncols=True)
        for ids, imgs, tgts in self.eval_batches():
            pls = []
            for iid, x, t in zip(ids, imgs, tgts):
                h, w = x.shape[1:]
                g = torch.Generator().manual_seed(derived_seed(self.seed, "place", iid))
                pls.append(sample_placement(g, h, w, side_pixels(h, w, side), t["boxes"], policy, eot))
            for name, (b, p) in zip(points, variants.items()):
                xs = [paste(x, p, pl) for x, pl in zip(imgs, pls)]
                points[name]["results"] += self.results(xs, ids)
                points[name]["areas"] += [pl.area_fraction(*x.shape[1:]) for x, pl in zip(imgs, pls)]
                points[name]["held"] += [pl.ok for pl in pls]
                if not b:
                    self.keep_examples("universal", ids, xs)
            bar.update(len(ids))
        bar.close()
        for pt in points.values():
            pt.update(side=side, side_of="image", policy=policy)
        if history:  # one step is one noisy batch: the mean of the first and of the last ten steps
            points[ATTACK["universal"]].update(objective_start=float(np.mean(history[:10])),
                                               objective_end=float(np.mean(history[-10:])))
        meta = {"kind": "universal", "side": side, "policy": policy, "resolution": res, "steps": steps,
                "objective": s["objective"], "losses": s["losses"], "eot": s["eot"],
                "model_sha256": self.lm.sha256, "applied_from": applied["path"] if applied else None}
        _save_pt(self.out / "patches" / "universal.pt", {"patch": patch.detach().cpu(), **meta})
        _png(self.out / "patches" / "universal.png", patch, scale=max(1, 128 // res))
        for b in s["baselines"]:
            _save_pt(self.out / "patches" / f"universal-{b}.pt", {"patch": variants[b].cpu(), **meta, "steps": 0,
                                                                    "baseline": b})
        return points, {"history": history}

    def fixed(self, kind: str) -> dict:
        """Per-image or per-object patches, batch by batch, and the baselines at the same placements."""
        s = self.suite
        cfg = s["per-image"] if kind == "per-image" else s["per-object"]
        points = self._points(kind, cfg["steps"], s["baselines"])
        saved: dict[str, list[torch.Tensor]] = {}
        where: dict[str, list[list[float]]] = {}
        starts: list[float] = []
        ends: list[float] = []
        natural = self.load(0)[0] if "natural" in s["baselines"] else None
        bar = tqdm(total=len(self.ds), desc=ATTACK[kind], unit="img", disable=not self.progress, dynamic_ncols=True)
        for ids, imgs, tgts in self.eval_batches():
            if kind == "per-image":
                pls = [[image_placement(torch.Generator().manual_seed(derived_seed(self.seed, "image-place", iid)),
                                        *x.shape[1:], t["boxes"], cfg)] for iid, x, t in zip(ids, imgs, tgts)]
            else:
                pls = placements_for(tgts, cfg["relative_side"])
            adv, history = optimise_fixed(self.lm.model, imgs, tgts, pls, ids, s["objective"], self.losses,
                                          self.lm.num_classes, self.target_label, cfg["steps"], cfg["lr"],
                                          self.seed, bar)
            variants = {"": adv, **{b: start_patches(pls, ids, self.seed, b, self.device, natural)
                                    for b in s["baselines"]}}
            for name, (b, ps) in zip(points, variants.items()):
                xs = [render(x, p, pl) for x, p, pl in zip(imgs, ps, pls)]
                points[name]["results"] += self.results(xs, ids)
                points[name]["areas"] += [area_fraction(pl, *x.shape[1:]) for x, pl in zip(imgs, pls)]
                points[name]["held"] += [all(q.ok for q in pl) for pl in pls]
                if not b:
                    self.keep_examples(kind, ids, xs)
            if history:  # per batch: the objective before and after its optimisation
                starts += [history[0]] * len(ids)
                ends += [history[-1]] * len(ids)
            for iid, ps, pl in zip(ids, adv, pls):
                saved[str(iid)] = [p.cpu() for p in ps]
                where[str(iid)] = [[q.cx, q.cy, q.side, q.angle] for q in pl]
            bar.update(len(ids))
        bar.close()
        if starts:
            points[ATTACK[kind]].update(objective_start=float(np.mean(starts)), objective_end=float(np.mean(ends)))
        side = cfg["side"] if kind == "per-image" else cfg["relative_side"]
        for p in points.values():
            p.update(side=side, side_of="image" if kind == "per-image" else "object",
                     policy=cfg["policy"] if kind == "per-image" and cfg["location"] == "chosen" else
                     ("fixed" if kind == "per-image" else "object-centres"))
        payload = {"kind": kind, "objective": s["objective"], "steps": cfg["steps"], "side": side,
                   "model_sha256": self.lm.sha256, "placements_cx_cy_side_angle": where,
                   "patches": {k: v[0] for k, v in saved.items()} if kind == "per-image" else saved}
        _save_pt(self.out / "patches" / f"{kind}.pt", payload)
        _png(self.out / "patches" / f"{kind}.png", _grid([p for ps in list(saved.values())[:16] for p in ps][:32]))
        return points


def _fingerprint(suite: PatchSuite, seed: int, batch_size: int, lm: LoadedModel, device, data, ds: CocoDataset,
                 train_sha: str | None, applied: dict | None) -> dict:
    return {"suite": {k: v for k, v in suite.as_dict().items() if k not in ("source", "name", "description")},
            "seed": seed, "batch_size": batch_size, **model_fingerprint(lm, device),
            "dataset_sha256": sha256_file(data), "image_ids": ds.image_ids, "train_sha256": train_sha,
            "applied_sha256": applied["sha256"] if applied else None}


def _rows(points: dict, ds: CocoDataset, lm: LoadedModel, eval_ids: list[int]):
    rows, class_rows, evals = [], [], {}
    names = dict(zip(lm.category_ids, lm.class_names))
    for name, pt in points.items():
        m = evaluate(ds.coco, pt["results"], eval_ids)
        evals[name] = m
        eps = float(np.mean(pt["areas"])) if pt["areas"] else 0.0
        clean = pt["kind"] == "clean"
        # the attack is the point itself: patch-<kind>[-<baseline>]
        base = {"attack": "clean" if clean else name, "norm": "none" if clean else "patch", "eps": eps,
                "eps_label": "0" if clean else f"{100 * eps:.2f}%", "steps": pt["steps"], "point": name}
        for t in IOU_TYPES:
            rows += [{**base, "iou_type": t, "metric": k, "value": m[t][k]} for k in METRICS]
            class_rows += [{**base, "iou_type": t, "category_id": c, "category": names.get(c, str(c)), "AP": ap}
                           for c, ap in m["per_class"][t].items()]
    return rows, class_rows, evals


def _patch_rows(points: dict, evals: dict, objective: str) -> list[dict]:
    clean = evals["clean"]
    out = []
    for name, pt in points.items():
        if pt["kind"] == "clean":
            continue
        m = evals[name]
        out.append({"point": name, "attack": name, "kind": pt["kind"], "variant": pt["variant"],
                    "objective": objective if pt["variant"] == "adversarial" else "", "steps": pt["steps"],
                    "side": pt["side"], "side_of": pt["side_of"], "area_fraction": float(np.mean(pt["areas"])),
                    "area_fraction_max": float(np.max(pt["areas"])), "policy": pt["policy"],
                    "policy_held": float(np.mean(pt["held"])) if pt["held"] else 1.0, "images": len(pt["areas"]),
                    "objective_start": pt.get("objective_start"), "objective_end": pt.get("objective_end"),
                    "bbox_AP": m["bbox"]["AP"], "bbox_drop": clean["bbox"]["AP"] - m["bbox"]["AP"],
                    "segm_AP": m["segm"]["AP"], "segm_drop": clean["segm"]["AP"] - m["segm"]["AP"]})
    return out


def _usable(ds: CocoDataset, on_error: str, what: str) -> list[dict]:
    """Decode every image once, up front (a patch run passes over the data several times, so a bad image found
    half-way would leave the kinds evaluated on different images). ``on_error="skip"`` drops the bad ones from
    ``ds`` and returns them, logged; ``"fail"`` stops with every problem named."""
    problems = ds.check_images()
    for idx, iid in enumerate(ds.image_ids):
        if iid not in problems:
            try:
                ds.load_image(idx)
            except RobustsegError as e:  # corrupt past a valid header
                problems[iid] = str(e)
    if problems and on_error == "fail":
        shown = "; ".join(f"image {i}: {e}" for i, e in list(problems.items())[:5])
        raise RobustsegError(f"{len(problems)} {what}(s) cannot be used: {shown}")
    for iid, err in problems.items():
        tqdm.write(f"skipping {what} {iid}: {err}", file=sys.stderr)
    ds.image_ids = [i for i in ds.image_ids if i not in problems]
    if not ds.image_ids:
        raise RobustsegError(f"no usable {what}s left: every one failed to load")
    return [{"image_id": i, "error": e} for i, e in problems.items()]


def run_patches(model: str | Path | LoadedModel | None = None, suite: str | Path | PatchSuite | None = None,
                data: str | Path | None = None, images: str | Path | None = None, *,
                train_data: str | Path | None = None, train_images: str | Path | None = None,
                apply: str | Path | None = None, out: str | Path | None = None, limit: int | None = None,
                batch_size: int = 4, device: str = "cpu", seed: int = 0, force: bool = False, resume: bool = False,
                on_error: str = "skip", progress: bool = True, command: str | None = None) -> PatchRunResult:
    """Optimise and evaluate the suite's patches (or, with ``apply``, evaluate a saved universal patch) on a
    held-out dataset (default: the built-in synthetic split) and write the results directory ``out``.
    ``on_error="skip"`` leaves unreadable images out of every point (listed in run.json); ``"fail"`` stops."""
    t_start = time.time()
    if on_error not in ("skip", "fail"):
        raise RobustsegError(f"on_error must be skip or fail, not {on_error!r}")
    suite = suite if isinstance(suite, PatchSuite) else load_patch_suite(suite)
    if resume and out is None:
        raise RobustsegError("--resume needs the --out directory of the interrupted run")
    if bool(train_data) != bool(train_images):
        raise RobustsegError("--train-data and --train-images go together")
    if apply and train_data:
        raise RobustsegError("--apply evaluates a saved patch: it trains nothing, so --train-data has no use")
    if out is not None:  # refuse early, before loading anything
        prepare_out_dir(out, force=force, resume=resume, check_only=True)
    applied = load_patch_file(apply) if apply else None
    kinds = ["universal"] if applied else suite["kinds"]
    if not kinds:
        raise RobustsegError(f"{suite.source}: kinds is empty; nothing to run")
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    lm.model.to(device)
    if suite["target_class"] != "next" and suite["target_class"] not in lm.class_names:
        raise RobustsegError(f"target_class {suite['target_class']!r} is not a class of the model "
                             f"({', '.join(lm.class_names[:10])})")
    if data is None:
        from ..data.synth import default_split
        data, images = default_split()
    ds = CocoDataset(data, images, category_ids=lm.category_ids, limit=limit)
    if len(ds) == 0:
        raise RobustsegError(f"{data}: no images to attack")
    if not ds.has_annotations:
        raise RobustsegError(f"{data}: patch runs need ground truth (objectives, placements and AP); "
                             f"the dataset has no annotations")
    failed = _usable(ds, on_error, "image")
    train, train_info = None, None
    if "universal" in kinds and not applied:
        u = suite["universal"]
        if train_data is None:
            from ..data.synth import default_split
            train_data, train_images = default_split(n=max(u["train_images"], 1), seed=TRAIN_SEED)
        train = CocoDataset(train_data, train_images, category_ids=lm.category_ids, limit=u["train_images"] or None)
        failed += [{**f, "dataset": "train"} for f in _usable(train, on_error, "training image")]
        train_info = {"annotations": str(Path(train_data).resolve()), "images": str(Path(train_images).resolve()),
                      "sha256": sha256_file(train_data), "num_images": len(train)}
        if train_info["sha256"] == sha256_file(data):
            tqdm.write("warning: the universal patch trains on the evaluation dataset itself: not held out")
    if out is None:
        out = Path("reports") / f"{Path(lm.path or 'model').stem}-patch-{time.strftime('%Y%m%d-%H%M%S')}"
    out = prepare_out_dir(out, force=force, resume=resume)
    fingerprint = _fingerprint(suite, seed, batch_size, lm, device, data, ds, train_info and train_info["sha256"], applied)
    work = out / "work"
    if resume:
        check_resumable(out, fingerprint)
    else:
        for stale in ("work", "predictions", "patches"):
            shutil.rmtree(out / stale, ignore_errors=True)
    for d in (work, out / "predictions", out / "patches"):
        d.mkdir(exist_ok=True)
    run_info = {
        "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or " ".join(["robustseg", "patch"] + sys.argv[2:]), "seed": seed,
        "batch_size": batch_size, "device": str(device), "limit": limit, "on_error": on_error, "kinds": kinds,
        "patch": suite.as_dict(), "applied": {k: v for k, v in applied.items() if k != "patch"} if applied else None,
        "versions": versions(),
        "model": {k: v for k, v in lm.describe().items() if k != "meta"} | {"meta": lm.meta},
        "dataset": {"annotations": str(Path(data).resolve()), "images": str(Path(images).resolve()),
                    "sha256": fingerprint["dataset_sha256"], "num_images": len(ds), "skipped_annotations": ds.skipped},
        "train_dataset": train_info, "fingerprint": fingerprint,
    }
    write_run_json(out, run_info)

    run = _PatchRun(lm, ds, suite, out, device, seed, batch_size, progress)
    points: dict = {}
    training: dict = {}
    for stage in ["clean", *kinds]:
        done = work / f"{stage}.json"
        if resume and done.is_file():  # a kind finished before the interruption: take it as it was
            saved = json.loads(done.read_text())
            points.update(saved["points"])
            training.update(saved.get("training", {}))
            ex = work / f"{stage}.examples.pt"
            if ex.is_file():
                run.examples[stage] = list(torch.load(ex, weights_only=True))
            continue
        extra: dict = {}
        if stage == "clean":
            got = run.clean()
        elif stage == "universal":
            got, extra = run.universal(train, applied, resume)
        else:
            got = run.fixed(stage)
        points.update(got)
        training.update(extra)
        write_json(done, {"points": got, "training": extra})
        if stage in run.examples:
            _save_pt(work / f"{stage}.examples.pt", run.examples[stage])

    eval_ids = list(ds.image_ids)
    for name, pt in points.items():
        write_json(out / "predictions" / f"{name}.json", pt["results"])
    rows, class_rows, evals = _rows(points, ds, lm, eval_ids)
    df = write_metrics(out, rows)
    write_csv(out / "per_class.csv", class_rows)
    write_csv(out / "patches.csv", _patch_rows(points, evals, suite["objective"]), PATCHES_COLUMNS)
    if training.get("history"):
        write_csv(out / "patch_training.csv", [{"step": i + 1, "objective": v}
                                                for i, v in enumerate(training["history"])])
    cols = ["clean", *[k for k in kinds if k in run.examples]]
    if len(cols) > 1:  # a row per image: clean, then each kind's adversarial patch
        n = len(run.examples["clean"])
        tiles = [run.examples[c][i] for i in range(n) for c in cols]
        _png(out / "patches" / "examples.png", _grid(tiles, size=128, cols=len(cols)))
    shutil.rmtree(work, ignore_errors=True)
    run_info.update(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    wall_seconds=round(time.time() - t_start, 1), failed_images=failed,
                    num_failed_images=len(failed), num_evaluated_images=len(eval_ids))
    write_run_json(out, run_info)
    try:
        from ..report.html import write_report
        write_report(out)
    except Exception as e:  # the results stand without their HTML view; say why it is missing
        tqdm.write(f"warning: report.html not written: {type(e).__name__}: {e}")
    return PatchRunResult(out, df)
