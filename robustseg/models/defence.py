"""Defences are models too: a Mask R-CNN with a preprocessing step of its own, handed to any kind's Python API
as a LoadedModel (docs/defences.md).

A defence is any object with a torchvision ``MaskRCNN`` (the object itself, or its ``detector`` attribute) and,
optionally, ``preprocess(image) -> image`` on one [0,1] (3, H, W) image (JPEG, bit-depth reduction, a random
resize, a denoiser...). ``as_model`` runs ``preprocess`` inside the detector's transform, just before its
normalisation, so every forward pass robustseg makes (predictions, every objective, the sanity checks) sees the
defence: no attack can bypass it by reaching past a wrapper into the detector.

- A non-differentiable step (rounding, JPEG) gives attacks a zero or useless gradient: declare it with
  ``bpda=True`` and its backward becomes the identity (BPDA, Athalye et al. 2018), forward unchanged.
- A randomised step needs the gradient averaged over its randomness: ``--eot N`` (attacks/eot.py).
"""
from __future__ import annotations

import copy
import hashlib
from typing import Callable, Sequence

import torch
from torchvision.models.detection import MaskRCNN

from ..errors import RobustsegError
from .checkpoint import LoadedModel, _coco_labels


def straight_through(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """BPDA with the identity: forward ``fn(x)``, backward as if it were ``x``."""
    def step(x: torch.Tensor) -> torch.Tensor:
        return x + (fn(x.detach()) - x).detach()
    return step


class _Preprocessed(torch.nn.Module):
    """The detector's own transform, with the defence's step before each image's normalisation."""

    def __init__(self, transform: torch.nn.Module, preprocess: Callable):
        super().__init__()
        self.inner, self.preprocess = transform, preprocess

    def __getattr__(self, name):  # image_mean, min_size, batch_images, ...: the inner transform's
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, images, targets=None):
        return self.inner([self.preprocess(x) for x in images], targets)


def _detector(defence) -> MaskRCNN:
    if isinstance(defence, MaskRCNN):
        return defence
    found = getattr(defence, "detector", None)
    if isinstance(found, MaskRCNN):
        return found
    raise RobustsegError(f"{type(defence).__name__}: a defence must be a torchvision MaskRCNN or have one as its "
                         f"'detector' attribute (docs/defences.md)")


def as_model(defence, class_names: Sequence[str] | None = None, category_ids: Sequence[int] | None = None, *,
             bpda: bool = False, name: str | None = None) -> LoadedModel:
    """A LoadedModel of ``defence`` for run_suite, run_patches, run_corruptions, run_transfer's Transfer kind...
    Labels default to COCO's when the head has 91 outputs, else ``class_1``... ``bpda``: the preprocess step's
    backward is the identity. The defence's own modules are not changed."""
    detector = _detector(defence)
    num_classes = detector.roi_heads.box_predictor.cls_score.out_features
    default_names, default_ids = _coco_labels(num_classes)
    class_names = list(class_names) if class_names is not None else default_names
    category_ids = list(category_ids) if category_ids is not None else default_ids
    if len(class_names) != num_classes - 1 or len(category_ids) != num_classes - 1:
        raise RobustsegError(f"the detector has {num_classes - 1} classes besides background; got "
                             f"{len(class_names)} names and {len(category_ids)} category ids")
    model = detector
    preprocess = getattr(defence, "preprocess", None)
    if preprocess is not None:
        model = copy.copy(detector)  # shares the weights; only its transform is the defended one
        model._modules = dict(detector._modules)
        model.transform = _Preprocessed(detector.transform, straight_through(preprocess) if bpda else preprocess)
    cfg = {"defence": type(defence).__name__, "preprocess": preprocess is not None, "bpda": bpda}
    return LoadedModel(model, "defence", cfg, list(class_names), [int(c) for c in category_ids],
                       meta={"defence": name or type(defence).__name__}, path=name or type(defence).__name__,
                       sha256=_weights_sha256(detector, cfg))


def _weights_sha256(detector: torch.nn.Module, cfg: dict) -> str:
    """What stands for a checkpoint's file hash in run.json and the resume fingerprint: the weights and the
    defence's configuration (its preprocessing code itself cannot be hashed: name the defence apart)."""
    h = hashlib.sha256(repr(sorted(cfg.items())).encode())
    for k, v in detector.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
