"""What an attack maximises. An objective maps (model, images, targets) to a scalar loss and its components.

The model must be in ``attack_mode`` (train-mode loss branches, frozen normalisation) when one is called.
Objectives (TOG, Chow et al. 2020; DAG, Xie et al. 2017), each a sign and a choice of targets:
- ``gt``: maximise the detector's own losses against the ground truth (default);
- ``pseudo``: the same against the clean model's confident detections (no labels needed);
- ``vanish``: minimise the scores of the model's own detections, so they disappear (DetectionScores);
- ``fabricate``: maximise objectness + classification losses against no objects, so spurious detections appear;
- ``mislabel``: minimise the losses against the ground truth relabelled to a target class (next class by
  default: label l -> l + 1, the last wraps to 1; or one fixed class for every object);
- ``mask``: maximise the mask loss alone, damaging masks while boxes stay;
- ``vanish-logit``: like ``vanish``, on every candidate detection's logit margin over background above a floor
  (LogitVanish), so a saturated softmax still has a gradient;
- ``margin``: CW-style margin of each ground-truth object's box logits, true class vs best other real class;
- ``mislabel-margin``: the targeted margin, the relabelled ground truth's class vs every other class.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch

from ..amp import AMP_DTYPES, FP16_LOSS_SCALE  # one table for attacks and training
from .logit_objectives import BoxMargin, LogitVanish, eval_forward

LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
_SHORT = {n.removeprefix("loss_"): n for n in LOSS_NAMES}
OBJECTIVES = ("gt", "pseudo", "vanish", "fabricate", "mislabel", "mask", "vanish-logit", "margin",
              "mislabel-margin")
PSEUDO_SCORE = 0.5   # clean detections at or above this score become pseudo ground truth
PLACEHOLDER_NAMES = ("N/A", "__background__")  # torchvision's empty COCO label slots: never a class to aim for


def resolve_losses(names: Sequence[str] | str | None) -> tuple[str, ...]:
    """Accept ``all``, full names (loss_mask) or short ones (mask, classifier, rpn_box_reg)."""
    from ..errors import RobustsegError
    if names is None:
        return LOSS_NAMES
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not isinstance(names, (list, tuple)):  # checked before list(names): an int or None-like must not crash
        raise RobustsegError(f"losses must be 'all' or a list of names, not {names!r}")
    if list(names) == ["all"]:
        return LOSS_NAMES
    out = []
    for n in names:
        full = n if n in LOSS_NAMES else _SHORT.get(n) if isinstance(n, str) else None
        if full is None:
            raise RobustsegError(f"unknown loss {n!r}; choose from {', '.join(_SHORT)} or all")
        out.append(full)
    if not out:
        raise RobustsegError("no losses selected")
    return tuple(dict.fromkeys(out))


class Objective(Protocol):
    name: str

    def __call__(self, model: torch.nn.Module, images: list[torch.Tensor], targets: list[dict]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


@contextmanager
def every_sample(model):
    """Let the RPN and RoI samplers take every anchor/proposal instead of a random few hundred.

    Against empty targets all of them are negatives; a random sample mostly misses the few proposals that cover
    objects, which are exactly the ones ``vanish`` must suppress (and ``fabricate`` must not need).
    """
    samplers = [getattr(getattr(model, name, None), "fg_bg_sampler", None) for name in ("rpn", "roi_heads")]
    samplers = [s for s in samplers if s is not None]
    old = [s.batch_size_per_image for s in samplers]
    try:
        for s in samplers:
            s.batch_size_per_image = 1 << 30
        yield
    finally:
        for s, b in zip(samplers, old):
            s.batch_size_per_image = b


@dataclass(frozen=True)
class DetectorLoss:
    """sign * weighted sum of Mask R-CNN's training losses against the targets it is given."""
    losses: tuple[str, ...] = LOSS_NAMES
    weights: dict = field(default_factory=dict)
    sign: float = 1.0
    name: str = "gt"
    sample_all: bool = False  # every anchor/proposal in the loss, not a random sample (vanish, fabricate)

    def __call__(self, model, images, targets):
        with every_sample(model) if self.sample_all else nullcontext():
            parts = model(images, targets)
        total = sum(self.weights.get(k, 1.0) * parts[k] for k in self.losses)
        return self.sign * total, parts


@dataclass(frozen=True)
class DetectionScores:
    """sign * the summed scores of the model's own detections (eval-mode forward, masks skipped), per image.

    ``vanish`` minimises it: every detection above the model's score threshold is pushed down, and any new one
    that rises above the threshold joins the sum, so suppressing some objects cannot pay for creating others.
    (Minimising the train-mode classification loss against no objects lowers the *mean* over proposals but
    raised the number of confident detections on the shipped model.)
    """
    sign: float = -1.0
    name: str = "vanish"

    def __call__(self, model, images, targets):
        with eval_forward(model):  # no mask branch: scores only
            outputs = model(images)
        total = sum(o["scores"].sum() for o in outputs) / len(images)
        return self.sign * total, {"detection_scores": total.detach()}

    @torch.no_grad()
    def per_image_objective(self, model, images) -> torch.Tensor:
        """The objective of each image on its own (it is a sum over images): lets PGD keep each image's best
        iterate, since a projected step can raise the scores of an image that had little left to suppress."""
        return torch.stack([self(model, [x], [{}])[0] for x in images])

    def image_losses(self, model, images, targets) -> torch.Tensor:
        """Each image's objective from one batched forward (APGD's per-image values; differentiable)."""
        with eval_forward(model):
            outputs = model(images)
        return torch.stack([self.sign * o["scores"].sum() for o in outputs])


@dataclass(frozen=True)
class Autocast:
    """``objective`` with the model's forward passes under autocast (mixed precision, ``amp`` bf16 or fp16). The
    images, the gradient with respect to them and the attack's step stay float32. The fp16 loss is multiplied by
    FP16_LOSS_SCALE so that small input gradients do not underflow: sign steps (FGSM, PGD-Linf) and normalised
    ones (PGD-L2, MI-FGSM) do not depend on the gradient's scale."""
    objective: Objective
    device_type: str
    amp: str

    @property
    def name(self) -> str:
        return self.objective.name

    @property
    def per_image_objective(self):  # vanish's best-iterate selection, computed in float32
        return getattr(self.objective, "per_image_objective", None)

    def image_losses(self, model, images, targets) -> torch.Tensor:  # APGD's per-image values, under autocast
        with torch.autocast(self.device_type, dtype=AMP_DTYPES[self.amp]):
            values = image_losses(self.objective, model, images, targets)
        return values.float() * (FP16_LOSS_SCALE if self.amp == "fp16" else 1.0)

    def __call__(self, model, images, targets):
        with torch.autocast(self.device_type, dtype=AMP_DTYPES[self.amp]):
            loss, info = self.objective(model, images, targets)
        scale = FP16_LOSS_SCALE if self.amp == "fp16" else 1.0
        return loss.float() * scale, info


def image_losses(objective: Objective, model, images: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
    """Each image's objective value, shape (N,), differentiable: what APGD keeps its per-image best by.

    Objectives whose value is a sum over images (vanish, vanish-logit, margin) give it from one batched forward.
    The detector's training losses are averages over the batch's sampled anchors and proposals, not a sum over
    images, so each image gets its own forward: the same work in N smaller passes, not extra passes.
    """
    own = getattr(objective, "image_losses", None)
    if own is not None:
        return own(model, images, targets)
    return torch.stack([objective(model, [x], [t])[0] for x, t in zip(images, targets)])


def with_amp(objective: Objective, amp: str | None, device) -> Objective:
    """The objective as the attack should use it: unchanged without ``amp``, else under autocast."""
    if not amp:
        return objective
    from ..errors import RobustsegError
    if amp not in AMP_DTYPES:
        raise RobustsegError(f"--amp must be one of {', '.join(AMP_DTYPES)}, not {amp!r}")
    kind = torch.device(device).type
    if amp == "fp16" and kind != "cuda":
        raise RobustsegError("--amp fp16 needs --device cuda; on a CPU use --amp bf16")
    return Autocast(objective, kind, amp)


def make_objective(name: str = "gt", losses: Sequence[str] | None = None, num_classes: int | None = None,
                   class_names: Sequence[str] | None = None) -> Objective:
    """The loss an attack maximises for objective ``name`` (targets come from ``attack_targets``). The margins
    skip the checkpoint's placeholder labels (see ``label_names``; ``num_classes`` or ``class_names`` tell them)."""
    if name in ("gt", "pseudo"):
        return DetectorLoss(tuple(losses or LOSS_NAMES), name=name)
    if name == "mask":
        return DetectorLoss(("loss_mask",), name=name)
    if name == "vanish":
        return DetectionScores()
    if name == "fabricate":
        return DetectorLoss(("loss_objectness", "loss_classifier"), name=name, sample_all=True)
    if name == "mislabel":
        return DetectorLoss(tuple(losses or LOSS_NAMES), sign=-1.0, name=name)
    if name == "vanish-logit":
        return LogitVanish()
    if name in ("margin", "mislabel-margin"):
        names = label_names(num_classes or 0, class_names)
        ignore = tuple(i + 1 for i, n in enumerate(names or []) if n in PLACEHOLDER_NAMES)
        return BoxMargin(targeted=name == "mislabel-margin", ignore_labels=ignore, name=name)
    from ..errors import RobustsegError
    raise RobustsegError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")


def _empty_like(t: dict) -> dict:
    h, w = t["masks"].shape[-2:]
    dev = t["boxes"].device
    return {**t, "boxes": torch.zeros((0, 4), device=dev), "labels": torch.zeros(0, dtype=torch.int64, device=dev),
            "masks": torch.zeros((0, h, w), dtype=torch.uint8, device=dev)}


def label_names(num_classes: int, class_names: Sequence[str] | None = None) -> list[str] | None:
    """The name of each label (label l is names[l - 1]), or None when every label is a real class.

    Without ``class_names``, a 91-class model is taken to use torchvision's COCO label space (label ==
    category id, with "N/A" in the unused slots): ``load_model`` names 91-class torchvision files that way, and
    callers that only pass ``num_classes`` (the run engine) must not aim at those slots either.
    """
    if class_names is not None:
        return list(class_names)
    from torchvision.models._meta import _COCO_CATEGORIES
    return list(_COCO_CATEGORIES[1:]) if num_classes == len(_COCO_CATEGORIES) else None


def real_labels(num_classes: int, class_names: Sequence[str] | None = None) -> list[int]:
    """The labels a mislabel attack may aim at: never background (0), never a placeholder ("N/A") slot."""
    names = label_names(num_classes, class_names)
    if names is None:
        return list(range(1, num_classes))
    return [i + 1 for i, n in enumerate(names) if n not in PLACEHOLDER_NAMES]


def target_label_for(target_class: str | None, class_names: Sequence[str]) -> int | None:
    """The label of a suite's ``target_class`` (None for "next"); a name that is not a real class is refused."""
    if target_class in (None, "next"):
        return None
    real = real_labels(len(class_names) + 1, class_names)
    if target_class in PLACEHOLDER_NAMES or target_class not in class_names:
        raise _not_a_target(repr(target_class), real, class_names)
    return list(class_names).index(target_class) + 1


def mislabel_to(labels: torch.Tensor, num_classes: int, target_label: int | None,
                class_names: Sequence[str] | None = None) -> torch.Tensor:
    """The documented rule: every object to ``target_label``, or to the next real class (l -> the next real
    label above l, the last wraps to the first). Placeholder slots are skipped; a placeholder, background or
    unknown ``target_label`` is refused (RobustsegError naming the real classes)."""
    real = real_labels(num_classes, class_names)
    if target_label is not None:
        if int(target_label) not in real:
            raise _not_a_target(f"label {int(target_label)}", real, label_names(num_classes, class_names))
        return torch.full_like(labels, int(target_label))
    following = [next((r for r in real if r > l), real[0]) for l in range(num_classes)]
    return torch.tensor(following, dtype=labels.dtype, device=labels.device)[labels]


def _not_a_target(what: str, real: list[int], names: Sequence[str] | None):
    from ..errors import RobustsegError
    shown = [names[r - 1] if names else f"label {r}" for r in real]
    return RobustsegError(f"mislabel target {what} is not a real class of the model (background and N/A slots "
                          f"are never targets); choose from {', '.join(shown)}")


def pseudo_targets(outputs: list[dict], like: list[dict], score: float = PSEUDO_SCORE) -> list[dict]:
    """The clean model's confident detections as targets (boxes, labels, masks binarised at 0.5)."""
    out = []
    for o, t in zip(outputs, like):
        keep = o["scores"] >= score
        out.append({**t, "boxes": o["boxes"][keep].detach(), "labels": o["labels"][keep].detach(),
                    "masks": (o["masks"][keep, 0] > 0.5).to(torch.uint8).detach()})
    return out


def attack_targets(name: str, gt: list[dict], clean_outputs: list[dict] | None, num_classes: int,
                   target_label: int | None = None, class_names: Sequence[str] | None = None) -> list[dict]:
    """The targets the objective's loss is computed against."""
    if name in ("gt", "mask", "margin"):
        return gt
    if name == "pseudo":
        return pseudo_targets(clean_outputs, gt)
    if name in ("vanish", "fabricate", "vanish-logit"):
        return [_empty_like(t) for t in gt]
    if name in ("mislabel", "mislabel-margin"):
        return [{**t, "labels": mislabel_to(t["labels"], num_classes, target_label, class_names)} for t in gt]
    from ..errors import RobustsegError
    raise RobustsegError(f"unknown objective {name!r}")
