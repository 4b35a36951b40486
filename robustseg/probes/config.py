"""Probe options (attacks/probes.toml over built-in defaults), probe names and groups, and one image probe."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ..errors import RobustsegError
from ..fileio import read_toml
from ..suites import REPO_SUITES
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


def load_config(path: str | Path | None = None) -> dict:
    """Probe options: built-in defaults, overridden by a TOML file (``attacks/probes.toml`` when present)."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    p = Path(path) if path else CONFIG_FILE
    if path is None and not p.is_file():
        return cfg
    data = read_toml(p, "probe config")
    for key, value in data.items():
        if key not in cfg:
            raise RobustsegError(f"probe config {p}: unknown key {key!r} (known: {', '.join(cfg)})")
        if isinstance(cfg[key], dict):
            if not isinstance(value, dict):
                raise RobustsegError(f"probe config {p}: {key} must be a table of options, not {value!r}")
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


def hwc(x) -> np.ndarray:
    return x.permute(1, 2, 0).numpy().astype(np.float32)


def chw(a: np.ndarray):
    import torch
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()
