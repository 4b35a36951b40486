"""Run the shape-vs-texture probes on a model and write a results directory (docs/probes.md, docs/results.md).

Every image probe transforms each dataset image (size unchanged) and is evaluated against the original
annotations; the cue-conflict probe runs on a cue-conflict set (generated, the dataset's own, or built from the
dataset's objects) and adds the shape-bias decisions. Written into ``out``:

    metrics.csv        clean and probe-<name> rows (norm none, eps 0, steps 0) in the attack-run contract, plus
                       matched_objects rows and, for probe-cue-conflict, shape_bias and decision counts
    probes.csv         per probe: images, objects, detections, matched and correctly classified objects, AP, AP50
    per_class.csv      per-category AP of every point
    shape_bias.json    overall, per shape class and per texture class, with the counts; shape_bias.csv the same
    decisions.csv      one row per cue-conflict object: shape/texture class, predicted class, decision
    predictions/*.json COCO results per point
    examples/          <point>/<image_id>.png for the first images, and overview.png (a row per image)
    cue_conflict/      the cue-conflict set's annotations.json (and images, when generated)
    run.json           command, seed, versions, checkpoint and dataset sha256, probe options, cue-conflict params
"""
from __future__ import annotations

import copy
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..api import batches
from ..data.coco import CocoDataset, coco_from_dict
from ..errors import RobustsegError
from ..eval.coco_eval import IOU_TYPES, METRICS, evaluate, predict, to_coco_results
from ..fileio import atomic_write, sha256_file, write_json
from ..models.checkpoint import LoadedModel, load_model
from ..results import (append_jsonl, check_resumable, model_fingerprint, prepare_out_dir, read_jsonl,
                       read_run_json, trim_to_done, versions, write_csv, write_metrics, write_run_json)
from ..runner import derived_seed
from ..suites import REPO_SUITES
from . import shape_bias as sb
from . import transforms as T

CONFIG_FILE = REPO_SUITES / "probes.toml"
DEFAULT_CONFIG: dict = {
    "probes": ["line-canny", "line-xdog", "silhouette", "scramble", "grayscale", "invert", "cue-conflict"],
    "line-canny": {"sigma": 2.0},
    "line-xdog": {"sigma": 1.0, "k": 1.6, "tau": 0.98, "epsilon": -0.005, "phi": 200.0},
    "scramble": {"grids": [16, 8, 4]},
    "cue-conflict": {"images": 0, "iou": 0.5, "score": 0.5, "iou_type": "bbox", "min_area": 64},
    "examples": {"images": 4},
}
GROUPS = {"line": ["line-canny", "line-xdog"]}
SYNTH_DESCRIPTION = "robustseg synthetic shapes"
PROBES_COLUMNS = ["point", "images", "objects", "detections", "matched", "correct", "bbox_AP", "bbox_AP50",
                  "segm_AP", "segm_AP50"]


def load_config(path: str | Path | None = None) -> dict:
    """Probe options: built-in defaults, overridden by a TOML file (``attacks/probes.toml`` when present)."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    p = Path(path) if path else CONFIG_FILE
    if path is None and not p.is_file():
        return cfg
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RobustsegError(f"probe config {p}: {e}") from None
    for key, value in data.items():
        if key not in cfg:
            raise RobustsegError(f"probe config {p}: unknown key {key!r} (known: {', '.join(cfg)})")
        if isinstance(cfg[key], dict):
            unknown = set(value) - set(cfg[key])
            if unknown:
                raise RobustsegError(f"probe config {p}: [{key}] has unknown options {sorted(unknown)}")
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def scramble_names(cfg: dict) -> list[str]:
    return [f"scramble-{g}x{g}" for g in cfg["scramble"]["grids"]]


def resolve_probes(spec: str | list[str] | None, cfg: dict) -> list[str]:
    """``all`` / None (the config's list), or names and groups (line, scramble) -> concrete probe names."""
    groups = {**GROUPS, "scramble": scramble_names(cfg)}
    known = ["line-canny", "line-xdog", "silhouette", *groups["scramble"], "grayscale", "invert", "cue-conflict"]
    items = spec.split(",") if isinstance(spec, str) else list(spec or ["all"])
    out: list[str] = []
    for item in (s.strip() for s in items if s.strip()):
        names = cfg["probes"] if item == "all" else [item]
        for n in names:
            expanded = groups.get(n, [n])
            bad = [e for e in expanded if e not in known]
            if bad:
                raise RobustsegError(f"unknown probe {bad[0]!r}; known: all, line, scramble, {', '.join(known)}")
            out += expanded
    if not out:
        raise RobustsegError("no probes selected")
    return list(dict.fromkeys(out))


def apply_probe(name: str, img: np.ndarray, masks: np.ndarray, cfg: dict, rng: np.random.Generator) -> np.ndarray:
    """One image probe on an HxWx3 [0,1] image; ``masks`` (N,H,W) are its ground-truth objects."""
    if name == "line-canny":
        return T.canny_lines(img, **cfg["line-canny"])
    if name == "line-xdog":
        return T.xdog(img, **cfg["line-xdog"])
    if name == "silhouette":
        return T.silhouette(img.shape[:2], masks)
    if name == "grayscale":
        return T.grayscale(img)
    if name == "invert":
        return T.invert(img)
    if name.startswith("scramble-"):
        grid = int(name.split("-")[1].split("x")[0])
        return T.scramble(img, T.tile_size(*img.shape[:2], grid), rng)
    raise RobustsegError(f"unknown image probe {name!r}")


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy().astype(np.float32)


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()


# ---------------------------------------------------------------------------------------------- cue-conflict set

@dataclass
class CueConflictSet:
    gt: object                              # pycocotools COCO with shape_category_id / texture_category_id
    image_ids: list[int]
    load: Callable[[int], torch.Tensor]     # position -> [0,1] CHW image
    info: dict                              # how it was made (recorded in run.json and shape_bias.json)


def _conflicting(anns: list[dict]) -> bool:
    return any(a.get("texture_category_id") not in (None, a.get("shape_category_id")) for a in anns)


def cue_conflict_set(ds: CocoDataset, lm: LoadedModel, out: Path, cfg: dict, seed: int,
                     n_images: int, skip: frozenset[int] = frozenset()) -> CueConflictSet:
    """The dataset itself if it holds cue-conflict objects; a generated one for robustseg synthetic data; else
    one built from the dataset's own objects (each mask filled with another class's object texture)."""
    c = cfg["cue-conflict"]
    n = int(c["images"]) or n_images
    s = derived_seed(seed, "cue-conflict") % 2**31
    anns = ds.data["annotations"]
    if _conflicting(anns):
        info = {"source": "dataset", "note": "the dataset's own objects whose texture_category_id differs from "
                                              "their shape_category_id"}
        return CueConflictSet(ds.coco, ds.image_ids, ds.load_image, info)
    params = ds.data.get("info", {}).get("params") if isinstance(ds.data.get("info"), dict) else None
    if ds.data.get("info", {}).get("description") == SYNTH_DESCRIPTION and params:
        from ..data.synth import generate
        size = int(params.get("size", ds.image_info(0)["width"]))
        gen = {"n": n, "seed": s, "size": size, "fill": "texture", "cue_conflict": 1.0, "shape_mode": "class"}
        ann = generate(out / "cue_conflict", **gen)
        cc = CocoDataset(ann, out / "cue_conflict" / "images", category_ids=lm.category_ids)
        info = {"source": "generated", "generator": "robustseg.data.synth.generate", "params": gen,
                "annotations": str(ann), "sha256": sha256_file(ann)}
        return CueConflictSet(cc.coco, cc.image_ids, cc.load_image, info)
    return _real_cue_conflict(ds, out, c, s, n, skip)


def _real_cue_conflict(ds: CocoDataset, out: Path, c: dict, seed: int, n: int,
                       skip: frozenset[int] = frozenset()) -> CueConflictSet:
    """Shape from each object's mask, texture from an object of another class in another image (seeded).
    Images in ``skip`` (unreadable) are neither probed nor texture donors."""
    rng = np.random.default_rng(seed)
    usable = [iid for iid in ds.image_ids if iid not in skip]
    ids = usable[:n]
    pos = {iid: i for i, iid in enumerate(ds.image_ids)}
    objs = [a for iid in usable for a in ds.coco.imgToAnns.get(iid, [])
            if not a.get("iscrowd", 0) and int(a["category_id"]) in ds.label_of and a.get("area", 0) >= c["min_area"]]
    if len({a["category_id"] for a in objs}) < 2:
        raise RobustsegError("cue-conflict on real data needs objects of at least two classes "
                             f"(area >= {c['min_area']} px); leave it out with --probes")
    new_anns, donor_of = [], {}
    for iid in ids:
        for a in ds.coco.imgToAnns.get(iid, []):
            a2 = {**a, "shape_category_id": a["category_id"], "texture_category_id": a["category_id"]}
            pool = [d for d in objs if d["category_id"] != a["category_id"] and d["image_id"] != iid] or \
                   [d for d in objs if d["category_id"] != a["category_id"]]
            if a in objs and pool:
                d = pool[int(rng.integers(len(pool)))]
                a2.update(texture_category_id=d["category_id"], texture_donor={"image_id": d["image_id"],
                                                                              "annotation_id": d["id"]})
                donor_of[a["id"]] = d
            new_anns.append(a2)
    data = {"info": {"description": "robustseg cue-conflict set (real data)", "seed": seed},
            "images": [ds.coco.imgs[i] for i in ids], "annotations": new_anns, "categories": ds.data["categories"]}
    ann_path = write_json(out / "cue_conflict" / "annotations.json", data)
    gt = coco_from_dict(data)
    cache: dict[int, np.ndarray] = {}

    def image(iid: int) -> np.ndarray:
        if iid not in cache:
            if len(cache) > 32:
                cache.clear()
            cache[iid] = _hwc(ds.load_image(pos[iid]))
        return cache[iid]

    def load(i: int) -> torch.Tensor:
        iid = ids[i]
        img = image(iid).copy()
        for a in sorted(gt.imgToAnns.get(iid, []), key=lambda a: -a["area"]):  # small objects stay on top
            d = donor_of.get(a["id"])
            if d is not None:
                tex, tmask = T.object_texture(image(d["image_id"]), ds.coco.annToMask(d).astype(bool))
                img = T.fill_with_texture(img, ds.coco.annToMask(a).astype(bool), tex, tmask)
        return _chw(img)

    info = {"source": "built", "seed": seed, "min_area": c["min_area"], "annotations": str(ann_path),
            "objects_with_foreign_texture": len(donor_of),
            "method": "each object's mask filled with the bounding-box crop of a random object of another class "
                      "from another image at its own scale (donor background replaced by the nearest donor-object "
                      "pixel, mirrored to cover larger objects); texture class = the donor's class"}
    return CueConflictSet(gt, ids, load, info)


# --------------------------------------------------------------------------------------------------- counting

def object_counts(gt, results: list[dict], image_ids: list[int], category_ids: list[int], iou: float, score: float,
                  iou_type: str) -> dict:
    """Objects (non-crowd, of the model's classes), confident detections, matched objects (any class, IoU >= iou)
    and correctly classified matched objects."""
    by_image: dict[int, list[dict]] = {}
    for r in results:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    objects = matched = correct = 0
    cats = set(category_ids)
    for iid in image_ids:
        anns = [a for a in gt.imgToAnns.get(iid, []) if not a.get("iscrowd", 0) and a["category_id"] in cats]
        if iou_type == "segm":
            anns = [{**a, "rle": gt.annToRLE(a)} for a in anns]
        found = sb.match(by_image.get(iid, []), anns, iou, score, iou_type)
        objects += len(anns)
        matched += sum(d is not None for d in found)
        correct += sum(d is not None and d["category_id"] == a["category_id"] for a, d in zip(anns, found))
    return {"images": len(image_ids), "objects": objects,
            "detections": sum(r["score"] >= score for r in results), "matched": matched, "correct": correct}


# ------------------------------------------------------------------------------------------------------ examples

def _png(path: Path, img: np.ndarray) -> None:
    data = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    atomic_write(path, lambda f: Image.fromarray(data).save(f, format="PNG"), mode="wb")


def _overview(path: Path, ex_dir: Path, points: list[str], ids: list[int], cc_ids: list[int],
              cell: int = 128) -> None:
    """One row per example image (read back from ex_dir/<point>/<id>.png, so a resumed run gets the same), a
    column per point, each cell fitted into ``cell`` px on white; the cue-conflict column holds its own images."""
    cells = [[ex_dir / p / f"{iid}.png" for p in points if p != "probe-cue-conflict"] for iid in ids]
    for r, iid in enumerate(cc_ids[:len(cells)]):
        cells[r].append(ex_dir / "probe-cue-conflict" / f"{iid}.png")
    cells = [[f for f in row if f.is_file()] for row in cells]
    if not any(cells):
        return
    grid = np.ones((len(cells) * (cell + 4), max(len(r) for r in cells) * (cell + 4), 3), dtype=np.float32)
    for i, row in enumerate(cells):
        for j, f in enumerate(row):
            with Image.open(f) as im:
                im = im.convert("RGB")
                im.thumbnail((cell, cell))
                a = np.asarray(im, dtype=np.float32) / 255
            grid[i * (cell + 4):i * (cell + 4) + a.shape[0], j * (cell + 4):j * (cell + 4) + a.shape[1]] = a
    _png(path, grid)


# ----------------------------------------------------------------------------------------------------------- run

@dataclass
class ProbeResult:
    out: Path
    metrics: object          # pandas DataFrame of metrics.csv
    probes: list[dict]       # probes.csv rows
    shape_bias: dict | None  # shape_bias.json

    def summary(self) -> str:
        lines = [f"{'point':26} {'bbox AP':>8} {'segm AP':>8} {'matched':>9}"]
        for r in self.probes:
            lines.append(f"{r['point']:26} {r['bbox_AP']:8.3f} {r['segm_AP']:8.3f} "
                         f"{r['matched']:>4}/{r['objects']:<4}")
        if self.shape_bias:
            o = self.shape_bias["overall"]
            bias = "n/a" if o["shape_bias"] is None else f"{o['shape_bias']:.3f}"
            lines.append(f"shape bias {bias} (shape {o['shape']}, texture {o['texture']}, neither {o['neither']}, "
                         f"unmatched {o['unmatched']} of {o['objects']} cue-conflict objects)")
        return "\n".join(lines)


def run_probes(model: str | Path | LoadedModel | None = None, data: str | Path | None = None,
               images: str | Path | None = None, *, probes: str | list[str] | None = "all",
               out: str | Path | None = None, limit: int | None = None, batch_size: int = 4, device: str = "cpu",
               seed: int = 0, force: bool = False, resume: bool = False, on_error: str = "skip",
               config: str | Path | dict | None = None, progress: bool = True,
               command: str | None = None) -> ProbeResult:
    """Run the shape-vs-texture probes (``all``, or names/groups: line, silhouette, scramble, grayscale, invert,
    cue-conflict, line-canny, scramble-8x8, ...) on a dataset (None: the built-in synthetic split) and write
    the results directory ``out``. Returns the metrics, the per-probe counts and the shape-bias summary.

    Predictions stream to ``out/work/`` batch by batch, so ``resume=True`` continues an interrupted run from the
    images already done. ``on_error="skip"`` logs an unreadable image, counts it in run.json and leaves it out of
    every point's evaluation alike; ``"fail"`` stops the run."""
    t_start = time.time()
    if on_error not in ("skip", "fail"):
        raise RobustsegError(f"on_error must be skip or fail, not {on_error!r}")
    if resume and out is None:
        raise RobustsegError("--resume needs the --out directory of the interrupted run")
    cfg = config if isinstance(config, dict) else load_config(config)
    names = resolve_probes(probes, cfg)
    if out is not None:
        prepare_out_dir(out, force=force, resume=resume, check_only=True)
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    lm.model.to(device)
    if data is None:
        from ..data.synth import default_split
        data, images = default_split()
    if images is None:
        raise RobustsegError("data and images go together: give the image folder too")
    ds = CocoDataset(data, images, category_ids=lm.category_ids, limit=limit)
    if len(ds) == 0:
        raise RobustsegError(f"{data}: no images to probe")
    if not ds.has_annotations:
        raise RobustsegError(f"{data}: the probes need ground-truth annotations (none in the file)")
    problems = ds.check_images()  # every unreadable/missing/mis-sized image, found before any work
    if problems and on_error == "fail":
        shown = "; ".join(f"image {i}: {e}" for i, e in list(problems.items())[:5])
        raise RobustsegError(f"{len(problems)} image(s) cannot be used: {shown}")
    if out is None:
        out = Path("reports") / f"{Path(lm.path or 'model').stem}-probes-{time.strftime('%Y%m%d-%H%M%S')}"
    cc_cfg, n_examples = cfg["cue-conflict"], int(cfg["examples"]["images"])
    match_args = (cc_cfg["iou"], cc_cfg["score"], cc_cfg["iou_type"])
    image_probes = [n for n in names if n != "cue-conflict"]
    points = ["clean"] + [f"probe-{n}" for n in names]
    fingerprint = {"probes": names, "config": cfg, "seed": seed, "batch_size": batch_size,
                   **model_fingerprint(lm, device), "dataset_sha256": sha256_file(data), "image_ids": ds.image_ids}
    out = prepare_out_dir(out, force=force, resume=resume)
    work = {"images": out / "work" / "images", "cue_conflict": out / "work" / "cue_conflict"}
    if resume:
        check_resumable(out, fingerprint)
        for w in work.values():
            trim_to_done(w)
    else:
        for stale in ("work", "predictions", "examples", "cue_conflict"):
            shutil.rmtree(out / stale, ignore_errors=True)
    for w in work.values():
        w.mkdir(parents=True, exist_ok=True)
    run_info = {
        "kind": "probe", "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or " ".join(["robustseg"] + sys.argv[1:]), "seed": seed, "batch_size": batch_size,
        "device": str(device), "limit": limit, "on_error": on_error,
        "suite": {"name": "probes", "description": "shape-vs-texture probes (docs/probes.md)", "points": points},
        "probes": names, "config": cfg, "versions": versions(),
        "model": {k: v for k, v in lm.describe().items() if k != "meta"} | {"meta": lm.meta},
        "dataset": {"annotations": str(Path(data).resolve()), "images": str(Path(images).resolve()),
                    "sha256": fingerprint["dataset_sha256"], "num_images": len(ds),
                    "skipped_annotations": ds.skipped},
        "score_threshold_for_counts": cc_cfg["score"], "fingerprint": fingerprint,
    }
    if resume:  # keep the command and start time of the run that began it
        old = read_run_json(out)
        run_info.update(command=old.get("command", run_info["command"]), started=old.get("started"),
                        resumed=list(old.get("resumed", [])) + [time.strftime("%Y-%m-%dT%H:%M:%S%z")])
    write_run_json(out, run_info)
    ok_ids = [i for i in ds.image_ids if i not in problems]
    example_ids = set(ok_ids[:n_examples])
    ex_dir = out / "examples"
    cc_example_ids: set[int] = set()

    def predict_points(w: Path, load: Callable[[int], torch.Tensor], ids: list[int], pre_failed: dict,
                       probe_points: Callable[[list[np.ndarray], list[int], list[int]], dict], n_points: int,
                       desc: str, log_pre_failed: bool = True) -> None:
        """Every batch: load, make each point's images, predict, append each point's results to w/<point>.jsonl,
        then the batch's ids to w/done.jsonl (a resume redoes a batch that did not get that far)."""
        done = {int(r["image_id"]) for r in read_jsonl(w / "done.jsonl")}
        failed = {int(r["image_id"]) for r in read_jsonl(w / "failed.jsonl")}
        for iid, err in pre_failed.items():
            if iid not in failed:
                if log_pre_failed:
                    tqdm.write(f"skipping image {iid}: {err}", file=sys.stderr)
                append_jsonl(w / "failed.jsonl", [{"image_id": iid, "error": err}])
                failed.add(iid)
        bar = tqdm(total=len(ids) * n_points, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
        for idx in batches(len(ids), batch_size):
            todo = [i for i in idx if ids[i] not in done | failed]
            imgs, pos = [], []
            for i in todo:
                try:
                    imgs.append(_hwc(load(i)))
                    pos.append(i)
                except RobustsegError as e:  # e.g. a truncated file whose header looked fine
                    if on_error == "fail":
                        raise
                    tqdm.write(f"skipping image {ids[i]}: {e}", file=sys.stderr)
                    append_jsonl(w / "failed.jsonl", [{"image_id": ids[i], "error": str(e)}])
            if imgs:
                batch_ids = [ids[i] for i in pos]
                by_point = probe_points(imgs, pos, batch_ids)
                for point, point_imgs in by_point.items():
                    outs = predict(lm.model, [_chw(x).to(device) for x in point_imgs])
                    append_jsonl(w / f"{point}.jsonl", [r for o, iid in zip(outs, batch_ids)
                                                        for r in to_coco_results(o, iid, lm.category_ids)])
                    for iid, x in zip(batch_ids, point_imgs):
                        if iid in example_ids or (point == "probe-cue-conflict" and iid in cc_example_ids):
                            _png(ex_dir / point / f"{iid}.png", x)
                append_jsonl(w / "done.jsonl", [{"image_id": iid} for iid in batch_ids])
            bar.update(len(idx) * n_points)
        bar.close()

    def image_points(clean: list[np.ndarray], pos: list[int], ids: list[int]) -> dict:
        masks = [ds.target(i)["masks"].numpy().astype(bool) for i in pos]
        return {"clean": clean, **{f"probe-{n}": [apply_probe(n, x, m, cfg, np.random.default_rng(
            derived_seed(seed, n, iid))) for x, m, iid in zip(clean, masks, ids)] for n in image_probes}}

    predict_points(work["images"], ds.load_image, ds.image_ids, problems, image_points, 1 + len(image_probes),
                   "probe")
    # the cue-conflict set after the images pass: an image found unreadable there is neither probed nor a texture
    # donor (a resumed run rebuilds the same set from the same failed.jsonl)
    failed = {k: read_jsonl(w / "failed.jsonl") for k, w in work.items()}
    bad_images = {int(r["image_id"]): r["error"] for r in failed["images"]}
    cc = None
    if "cue-conflict" in names:
        cc = cue_conflict_set(ds, lm, out, cfg, seed, len(ds), skip=frozenset(bad_images))
        run_info["cue_conflict"] = cc.info
        write_run_json(out, run_info)
        cc_example_ids = set(cc.image_ids[:n_examples])
        own = cc.info["source"] == "dataset"  # the dataset's own cue-conflict objects: its bad images, logged
        predict_points(work["cue_conflict"], cc.load, cc.image_ids, bad_images if own else {},
                       lambda imgs, pos, ids: {"probe-cue-conflict": imgs}, 1, "cue-conflict",
                       log_pre_failed=False)
        failed["cue_conflict"] = read_jsonl(work["cue_conflict"] / "failed.jsonl")
    _overview(ex_dir / "overview.png", ex_dir, points, sorted(example_ids, key=ok_ids.index),
              sorted(cc_example_ids, key=cc.image_ids.index) if cc else [])

    # evaluation: the same COCO code as robustseg eval / attack, one pass per point
    names_of = dict(zip(lm.category_ids, lm.class_names))
    rows, class_rows, probe_rows = [], [], []
    (out / "predictions").mkdir(exist_ok=True)
    summary = None
    for point in points:
        is_cc = point == "probe-cue-conflict"
        key = "cue_conflict" if is_cc else "images"
        gt, all_ids = (cc.gt, cc.image_ids) if is_cc else (ds.coco, ds.image_ids)
        bad = {int(r["image_id"]) for r in failed[key]}
        ids = [i for i in all_ids if i not in bad]
        results = read_jsonl(work[key] / f"{point}.jsonl")
        write_json(out / "predictions" / f"{point}.json", results)
        m = evaluate(gt, results, ids)
        base = {"attack": point, "norm": "none", "eps": 0.0, "eps_label": "0", "steps": 0, "point": point}
        for t in IOU_TYPES:
            rows += [{**base, "iou_type": t, "metric": k, "value": m[t][k]} for k in METRICS]
            class_rows += [{**base, "iou_type": t, "category_id": c, "category": names_of.get(c, str(c)), "AP": ap}
                           for c, ap in m["per_class"][t].items()]
        cnt = object_counts(gt, results, ids, lm.category_ids, *match_args)
        rows.append({**base, "iou_type": cc_cfg["iou_type"], "metric": "matched_objects", "value": cnt["matched"]})
        probe_rows.append({"point": point, **cnt, **{f"{t}_{k}": m[t][k] for t in IOU_TYPES for k in ("AP", "AP50")}})
        if is_cc:
            dec = sb.decisions(results, gt, *match_args, image_ids=ids)
            cat_names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt.dataset["categories"]}
            textures = (gt.dataset.get("info") or {}).get("textures") or {}  # the synthetic generator's names
            summary = {**sb.summarise(dec, cat_names, {int(k): v for k, v in textures.items()}),
                       "iou": cc_cfg["iou"], "score": cc_cfg["score"],
                       "iou_type": cc_cfg["iou_type"], "cue_conflict": cc.info,
                       "definition": "shape / (shape + texture) over matched cue-conflict objects "
                                     "(Geirhos et al., ICLR 2019); neither and unmatched are counted, not in the ratio"}
            o = summary["overall"]
            rows.append({**base, "iou_type": cc_cfg["iou_type"], "metric": "shape_bias",
                         "value": float("nan") if o["shape_bias"] is None else o["shape_bias"]})
            rows += [{**base, "iou_type": cc_cfg["iou_type"], "metric": f"{k}_decisions", "value": o[k]}
                     for k in ("shape", "texture", "neither")]
            write_json(out / "shape_bias.json", summary)
            write_csv(out / "shape_bias.csv", sb.summary_rows(summary),
                      ["group", "class", "shape", "texture", "neither", "unmatched", "objects", "shape_bias"])
            write_csv(out / "decisions.csv", dec, ["image_id", "annotation_id", "shape_category_id",
                                                   "texture_category_id", "predicted_category_id", "score",
                                                   "decision"])
    df = write_metrics(out, rows)
    write_csv(out / "per_class.csv", class_rows)
    write_csv(out / "probes.csv", probe_rows, PROBES_COLUMNS)
    all_failed = failed["images"] + ([{**f, "set": "cue_conflict"} for f in failed["cue_conflict"]
                                      if int(f["image_id"]) not in bad_images]
                                     if cc and cc.info["source"] != "dataset" else [])
    shutil.rmtree(out / "work", ignore_errors=True)  # the predictions are in predictions/ now
    run_info.update(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    wall_seconds=round(time.time() - t_start, 1), failed_images=all_failed,
                    num_failed_images=len(all_failed), num_evaluated_images=len(ds) - len(failed["images"]))
    write_run_json(out, run_info)
    try:
        from ..report.html import write_report
        write_report(out)
    except Exception as e:  # the report is a convenience; the results directory is complete without it
        tqdm.write(f"note: report.html not written ({type(e).__name__}: {e}); run 'robustseg report {out}'")
    return ProbeResult(out, df, probe_rows, summary)
