"""Load any Mask R-CNN checkpoint a user has, and save robustseg's own format.

Accepted files (always read with ``torch.load(weights_only=True)``: no code in a file is ever run):
- a torchvision state_dict (the official COCO weight files of maskrcnn_resnet50_fpn / _v2);
- a torchvision reference ``train.py`` checkpoint: a dict whose ``model`` key holds the state_dict;
- robustseg's own format: ``{"format": "robustseg-checkpoint", arch, arch_cfg, class_names, category_ids, meta,
  state_dict}``, which alone rebuilds the exact model.
"""
from __future__ import annotations

import argparse
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.torch_version import TorchVersion
from torchvision.models._meta import _COCO_CATEGORIES
from torchvision.models.detection import MaskRCNN

from ..errors import CheckpointError
from ..fileio import atomic_write, sha256_file
from .builders import PRESETS, build_model

FORMAT = "robustseg-checkpoint"
FORMAT_VERSION = 1
SHIPPED = Path(__file__).resolve().parent.parent / "weights" / "tiny_shapes.pt"
# sha256 prefix of torchvision's official maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth: trained with BN eps 0.
_TV_COCO_V1_SHA = "bf2d0c1e"


@dataclass
class LoadedModel:
    """A ready-to-use detector plus what is needed to read its outputs against a dataset."""
    model: MaskRCNN
    arch: str
    arch_cfg: dict
    class_names: list[str]          # name of label i is class_names[i - 1]; label 0 is background
    category_ids: list[int]         # label i is written as category_ids[i - 1] in COCO results
    meta: dict = field(default_factory=dict)
    path: str | None = None
    sha256: str | None = None
    source_format: str = FORMAT

    @property
    def num_classes(self) -> int:
        return len(self.category_ids) + 1

    def describe(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "format": self.source_format, "arch": self.arch,
                "arch_cfg": self.arch_cfg, "num_classes": self.num_classes, "class_names": self.class_names,
                "category_ids": self.category_ids, "meta": self.meta}


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: file is empty")
    try:
        # Plain data classes only: argparse.Namespace (reference train.py's "args") and TorchVersion (a str).
        with torch.serialization.safe_globals([argparse.Namespace, TorchVersion]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        detail = next((ln for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        raise CheckpointError(f"checkpoint {path}: refused, it holds objects other than weights "
                              f"(not loaded, nothing executed): {detail.strip()[:200]}") from None
    except Exception as e:  # BadZipFile, EOFError, and KeyError/IndexError/struct.error from garbage bytes
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path}: not a readable torch file (truncated or corrupt?): {msg}") from None


def _strip_prefix(sd: dict, prefix: str) -> dict:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def detect_arch(sd: dict) -> str:
    if "backbone.body.stem.0.weight" in sd:
        return "tiny"
    if "roi_heads.box_head.0.0.weight" in sd:
        return "maskrcnn_resnet50_fpn_v2"
    if "roi_heads.box_head.fc6.weight" in sd and "backbone.body.layer4.0.conv1.weight" in sd:
        return "maskrcnn_resnet50_fpn"
    raise CheckpointError("checkpoint is not a recognised Mask R-CNN state_dict (no known backbone/box-head keys; "
                          f"first keys: {', '.join(list(sd)[:4])})")


def _num_classes_from(sd: dict) -> int:
    w = sd.get("roi_heads.box_predictor.cls_score.weight")
    if w is None or "roi_heads.mask_predictor.mask_fcn_logits.weight" not in sd:
        raise CheckpointError("checkpoint has no Mask R-CNN predictor weights "
                              "(roi_heads.box_predictor / roi_heads.mask_predictor): not a Mask R-CNN?")
    return int(w.shape[0])


def _check_finite(sd: dict, path: Path) -> None:
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path}: {len(bad)} tensor(s) hold NaN/inf values, e.g. {bad[0]}")


def _load_strict(model: torch.nn.Module, sd: dict, arch: str) -> None:
    # FrozenBatchNorm2d drops num_batches_tracked itself; compare the rest so a mismatch names what differs.
    own = {k: v for k, v in model.state_dict().items()}
    theirs = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked") or k in own}
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shapes = [f"{k} {tuple(theirs[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[0]}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) e.g. {shapes[0]} (file vs {arch})")
        raise CheckpointError(f"weights do not fit architecture {arch}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def _coco_labels(num_classes: int) -> tuple[list[str], list[int]]:
    if num_classes == len(_COCO_CATEGORIES):  # torchvision's 91-slot COCO label space: label == category_id
        return list(_COCO_CATEGORIES[1:]), list(range(1, num_classes))
    return [f"class_{i}" for i in range(1, num_classes)], list(range(1, num_classes))


def load_model(path: str | Path | None = None, *, arch: str | None = None, num_classes: int | None = None,
               device: str | torch.device = "cpu", **arch_overrides: Any) -> LoadedModel:
    """Load a checkpoint (any accepted format) into an eval-mode float32 Mask R-CNN.

    ``path=None`` (or ``"shipped"``, unless a file of that name exists) loads the shipped tiny model.
    ``arch``/``num_classes`` are only needed to override what the file says or implies; ``arch_overrides`` (e.g.
    ``min_size=512``) change inference options, not weights.
    """
    path = SHIPPED if path is None or (str(path) == "shipped" and not Path(path).is_file()) else Path(path)
    if path == SHIPPED and not SHIPPED.is_file():
        raise CheckpointError(f"the shipped model {SHIPPED} is missing; reinstall robustseg or pass --model")
    obj = _torch_load(path)
    meta: dict = {}
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        fmt = FORMAT
        sd = obj.get("state_dict")
        if not _is_state_dict(sd):
            raise CheckpointError(f"checkpoint {path}: robustseg checkpoint without a valid state_dict")
        file_arch, cfg = obj.get("arch"), dict(obj.get("arch_cfg") or {})
        names, cat_ids, meta = list(obj.get("class_names") or []), list(obj.get("category_ids") or []), \
            dict(obj.get("meta") or {})
        if file_arch not in PRESETS:
            raise CheckpointError(f"checkpoint {path}: unknown architecture {file_arch!r}")
        if arch and arch != file_arch:
            raise CheckpointError(f"checkpoint {path} is a {file_arch} model, not {arch}")
        arch = file_arch
    else:
        if isinstance(obj, dict) and _is_state_dict(obj.get("model")):
            fmt, sd = "torchvision-reference", obj["model"]
        elif _is_state_dict(obj):
            fmt, sd = "torchvision-state-dict", obj
        else:
            keys = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"checkpoint {path}: not a Mask R-CNN checkpoint (found {keys})")
        sd = _strip_prefix(sd, "module.")  # saved from DistributedDataParallel
        detected = detect_arch(sd)
        if arch and arch != detected:
            raise CheckpointError(f"checkpoint {path} holds a {detected} model, not {arch}")
        arch, cfg = detected, {}
        names, cat_ids = _coco_labels(_num_classes_from(sd))
    n_file = _num_classes_from(sd)
    if num_classes is not None and num_classes != n_file:
        raise CheckpointError(f"checkpoint {path} has {n_file} classes (incl. background), not {num_classes}")
    if len(cat_ids) != n_file - 1 or len(names) != n_file - 1:
        raise CheckpointError(f"checkpoint {path}: {len(cat_ids)} category ids / {len(names)} names for "
                              f"{n_file - 1} foreground classes")
    _check_finite(sd, path)
    digest = sha256_file(path)
    if arch == "maskrcnn_resnet50_fpn" and digest.startswith(_TV_COCO_V1_SHA):
        cfg.setdefault("frozen_bn_eps", 0.0)  # what torchvision's builder does for these weights; kept in arch_cfg
    cfg = {**cfg, **arch_overrides}
    model = build_model(arch, n_file, **cfg)
    _load_strict(model, {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, arch)
    model.eval().to(device)
    return LoadedModel(model, arch, cfg, names, [int(c) for c in cat_ids], meta, str(path), digest, fmt)


def save_checkpoint(path: str | Path, model: torch.nn.Module, *, arch: str, arch_cfg: dict, class_names: list[str],
                    category_ids: list[int], meta: dict | None = None, half: bool = False,
                    extra: dict | None = None) -> Path:
    """Write robustseg's own checkpoint atomically. ``extra`` holds resume state (optimizer, scheduler, RNG)."""
    sd = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
          for k, v in model.state_dict().items()}
    obj = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch, "arch_cfg": dict(arch_cfg),
           "class_names": list(class_names), "category_ids": [int(c) for c in category_ids],
           "meta": dict(meta or {}), "state_dict": sd, **(extra or {})}
    return atomic_write(path, lambda f: torch.save(obj, f), mode="wb")


