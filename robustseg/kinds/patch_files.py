"""What the patch kind writes beside the engine's files: the universal patch and its baselines (trained once,
read by every rank), example tiles, per-image / per-object patch files, patches.csv rows."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import RobustsegError
from ..fileio import write_png as save_png
from ..patches.files import grid, read_png, save_pt
from ..patches.universal import init_patch
from ..results import write_csv

EXAMPLES = 4  # images shown in patches/examples.png
PATCHES_COLUMNS = ["point", "attack", "kind", "variant", "view", "objective", "steps", "side", "side_of",
                   "area_fraction", "area_fraction_max", "policy", "policy_held", "images", "objective_start",
                   "objective_end", "nps", "tv", "bbox_AP", "bbox_drop", "segm_AP", "segm_drop"]


def cached_loader(train, device, on_error: str):
    """Training images, decoded once up front (a bad one found half-way through training would change which
    images the patch saw) and kept: they are few and reused every step."""
    problems = train.check_images()
    cache = {}
    for idx, iid in enumerate(train.image_ids):
        if iid in problems:
            continue
        try:
            cache[iid] = train.load_image(idx).to(device)
        except RobustsegError as e:  # corrupt past a valid header
            problems[iid] = str(e)
    if problems and on_error == "fail":
        shown = "; ".join(f"image {i}: {e}" for i, e in list(problems.items())[:5])
        raise RobustsegError(f"{len(problems)} training image(s) cannot be used: {shown}")
    for iid, err in problems.items():
        tqdm.write(f"skipping training image {iid}: {err}", file=sys.stderr)
    usable = [iid for iid in train.image_ids if iid not in problems]
    if not usable:
        raise RobustsegError("no usable training images left: every one failed to load")
    train.image_ids = usable  # train_universal draws positions in range(len(train))

    def load(i: int):
        tgt = {k: v.to(device) if torch.is_tensor(v) else v for k, v in train.target(i).items()}
        return cache[usable[i]], tgt
    return load


def save_universal(out: Path, patch, history: list[float], meta: dict, baselines: list[str], natural,
                   init_seed: int) -> None:
    res = patch.shape[-1]
    save_pt(out / "patches" / "universal.pt", {"patch": patch.detach().cpu(), **meta, "resolution": res})
    save_png(out / "patches" / "universal.png", patch, scale=max(1, 128 // res))
    for b in baselines:
        p = init_patch(b, res, init_seed, natural)
        save_pt(out / "patches" / f"universal-{b}.pt", {"patch": p.cpu(), **meta, "resolution": res, "steps": 0,
                                                         "baseline": b})
    if history:
        write_csv(out / "patch_training.csv", [{"step": i + 1, "objective": v} for i, v in enumerate(history)])
    (out / "work").mkdir(exist_ok=True)
    (out / "work" / "universal_history.json").write_text(json.dumps(history))


def load_universal(out: Path, baselines: list[str], device) -> dict:
    d = torch.load(out / "patches" / "universal.pt", map_location="cpu", weights_only=True)
    v = {"": d["patch"].to(device), "meta": {k: d[k] for k in ("side", "steps", "policy")}}
    for b in baselines:
        v[b] = torch.load(out / "patches" / f"universal-{b}.pt", map_location="cpu", weights_only=True)["patch"] \
            .to(device)
    hist = out / "work" / "universal_history.json"
    v["history"] = json.loads(hist.read_text()) if hist.is_file() else []
    return v


def save_example_tiles(out: Path, kind: str, ids, images, example_ids) -> None:
    for iid, x in zip(ids, images):
        if iid in example_ids:
            save_png(out / "work" / "patch_examples" / kind / f"{iid}.png", x)


def save_examples_grid(out: Path, kinds: list[str], example_ids: list[int]) -> None:
    """A row per example image: clean, then each kind's adversarial patch."""
    folder = out / "work" / "patch_examples"
    cols = [k for k in kinds if (folder / k).is_dir()]
    if not cols:
        return
    tiles = []
    for iid in example_ids:
        row = [folder / "clean" / f"{iid}.png", *[folder / k / f"{iid}.png" for k in cols]]
        if all(p.is_file() for p in row):
            tiles += [read_png(p) for p in row]
    if tiles:
        save_png(out / "patches" / "examples.png", grid(tiles, size=128, cols=1 + len(cols)))


def save_fixed(out: Path, kind: str, rows: list[dict], suite, model_sha: str | None) -> None:
    cfg = suite[kind]
    saved = {str(r["image_id"]): [torch.tensor(p) for p in r["patches"]] for r in rows}
    side = cfg["side"] if kind == "per-image" else cfg["relative_side"]
    payload = {"kind": kind, "objective": suite["objective"], "steps": cfg["steps"], "side": side,
               "model_sha256": model_sha, "placements_cx_cy_side_angle": {str(r["image_id"]): r["placements"]
                                                                         for r in rows},
               "patches": {k: v[0] for k, v in saved.items()} if kind == "per-image" else saved}
    save_pt(out / "patches" / f"{kind}.pt", payload)
    save_png(out / "patches" / f"{kind}.png", grid([p for ps in list(saved.values())[:16] for p in ps][:32]))


def patches_rows(kind_obj, ctx, scored, per_image: list[dict], objective: list[dict]) -> list[dict]:
    clean, s, out = scored.evals["clean"], kind_obj.suite, []
    for kind in (k for k in kind_obj.kinds if k != "physical"):  # physical rows: patch_physical.py
        for b in ["", *s["baselines"]]:
            name = kind_obj.point_name(kind, b)
            mine = [r for r in per_image if r["point"] == name]
            areas, m = [r["area"] for r in mine], scored.evals[name]
            row = {"point": name, "attack": name, "kind": kind, "variant": b or "adversarial",
                   "objective": s["objective"] if not b else "", "steps": kind_obj.steps(kind),
                   **_placement(kind_obj, kind), "area_fraction": or_nan(np.mean, areas),
                   "area_fraction_max": or_nan(np.max, areas),
                   "policy_held": or_nan(np.mean, [r["held"] for r in mine]),
                   "images": len(mine), "bbox_AP": m["bbox"]["AP"], "bbox_drop": clean["bbox"]["AP"] - m["bbox"]["AP"],
                   "segm_AP": m["segm"]["AP"], "segm_drop": clean["segm"]["AP"] - m["segm"]["AP"]}
            if not b:
                row.update(_objective_trend(kind_obj, kind, objective))
            out.append(row)
    return out


def or_nan(reduce, values: list) -> float:
    """``reduce`` (np.mean, np.max) of a point's per-image values, NaN where it has none (every image failed):
    np.max([]) raises, and np.mean([]) warns."""
    return float(reduce(values)) if values else float("nan")


def _placement(kind_obj, kind: str) -> dict:
    s = kind_obj.suite
    if kind == "universal":
        return {"side": kind_obj.variants["meta"]["side"], "side_of": "image", "policy": s["universal"]["policy"]}
    if kind == "per-image":
        cfg = s["per-image"]
        return {"side": cfg["side"], "side_of": "image",
                "policy": cfg["policy"] if cfg["location"] == "chosen" else "fixed"}
    return {"side": s["per-object"]["relative_side"], "side_of": "object", "policy": "object-centres"}


def _objective_trend(kind_obj, kind: str, objective: list[dict]) -> dict:
    """The objective at the start and end of optimisation: universal, the mean of its first and last ten steps
    (one step is one noisy batch); per-image/per-object, the mean over images of each batch's first/last."""
    if kind == "universal":
        h = kind_obj.variants.get("history") or []
        return {"objective_start": float(np.mean(h[:10])), "objective_end": float(np.mean(h[-10:]))} if h else {}
    mine = [r for r in objective if r["kind"] == kind]
    if not mine:
        return {}
    return {"objective_start": float(np.mean([r["start"] for r in mine])),
            "objective_end": float(np.mean([r["end"] for r in mine]))}
