"""Architecture presets. Each builder takes a plain config dict so that a checkpoint can rebuild it exactly.

- ``tiny``: resnet18 trunk up to layer3 + a 64-channel FPN, small heads, 128 px inputs; trained from scratch on
  synthetic shapes in minutes on a CPU (the shipped model).
- ``maskrcnn_resnet50_fpn`` / ``maskrcnn_resnet50_fpn_v2``: torchvision's COCO architectures, built exactly as
  torchvision builds them for its pretrained weights, so official weight files load strictly.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

PRESETS = ("tiny", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")

TINY_DEFAULTS: dict[str, Any] = {
    "fpn_channels": 64,
    "box_head_dim": 256,
    "mask_head_channels": 64,
    "anchor_sizes": [16, 32, 64, 128],
    "min_size": 128,
    "max_size": 128,
    "box_detections_per_img": 50,
}


class TinyBackbone(nn.Module):
    """resnet18 conv1..layer3 + FPN over layer1..3 (+ max-pool level); exposes ``out_channels`` like torchvision."""

    def __init__(self, fpn_channels: int):
        super().__init__()
        trunk = resnet18(weights=None)
        self.body = nn.Sequential(OrderedDict(
            stem=nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool),
            layer1=trunk.layer1, layer2=trunk.layer2, layer3=trunk.layer3,
        ))
        self.fpn = FeaturePyramidNetwork([64, 128, 256], fpn_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = fpn_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.body.stem(x)
        feats = OrderedDict()
        for i, name in enumerate(("layer1", "layer2", "layer3")):
            x = getattr(self.body, name)(x)
            feats[str(i)] = x
        return self.fpn(feats)


def _maskrcnn(cls, *args, **kwargs):
    try:
        return cls(*args, **kwargs)
    except TypeError as e:  # an unknown option in arch_cfg / a --arch-opt
        from ..errors import RobustsegError
        raise RobustsegError(f"invalid architecture option: {e}") from None


def build_tiny(num_classes: int, **cfg: Any) -> MaskRCNN:
    c = {**TINY_DEFAULTS, **cfg}
    extra = {k: v for k, v in c.items() if k not in TINY_DEFAULTS}  # other MaskRCNN options, e.g. box_score_thresh
    backbone = TinyBackbone(c["fpn_channels"])
    anchors = AnchorGenerator(tuple((s,) for s in c["anchor_sizes"]), ((0.5, 1.0, 2.0),) * len(c["anchor_sizes"]))
    ch = c["fpn_channels"]
    return _maskrcnn(
        MaskRCNN, backbone,
        num_classes=None,
        min_size=c["min_size"], max_size=c["max_size"],
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(ch * 7 * 7, c["box_head_dim"]),
        box_predictor=FastRCNNPredictor(c["box_head_dim"], num_classes),
        mask_head=MaskRCNNHeads(ch, [c["mask_head_channels"]] * 4, 1),
        mask_predictor=MaskRCNNPredictor(c["mask_head_channels"], c["mask_head_channels"], num_classes),
        box_detections_per_img=c["box_detections_per_img"],
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=300,
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=600,
        rpn_batch_size_per_image=128, box_batch_size_per_image=128,
        **extra,
    )


def build_r50_fpn(num_classes: int, **cfg: Any) -> MaskRCNN:
    """torchvision's maskrcnn_resnet50_fpn exactly as built for pretrained weights: frozen BN, 3 trainable layers."""
    eps = cfg.pop("frozen_bn_eps", 1e-5)  # 0.0 for torchvision's official COCO v1 weights
    trunk = resnet50(weights=None, norm_layer=partial(FrozenBatchNorm2d, eps=eps))
    backbone = _resnet_fpn_extractor(trunk, cfg.pop("trainable_backbone_layers", 3))
    return _maskrcnn(MaskRCNN, backbone, num_classes=num_classes, **cfg)


def build_r50_fpn_v2(num_classes: int, **cfg: Any) -> MaskRCNN:
    return _maskrcnn(maskrcnn_resnet50_fpn_v2, weights=None, weights_backbone=None, num_classes=num_classes, **cfg)


_BUILDERS = {"tiny": build_tiny, "maskrcnn_resnet50_fpn": build_r50_fpn, "maskrcnn_resnet50_fpn_v2": build_r50_fpn_v2}


def build_model(arch: str, num_classes: int, **cfg: Any) -> MaskRCNN:
    """Build an untrained Mask R-CNN of a named preset. ``cfg`` overrides preset options (e.g. min_size)."""
    if arch not in _BUILDERS:
        from ..errors import RobustsegError
        raise RobustsegError(f"unknown architecture {arch!r}; choose one of {', '.join(PRESETS)}")
    return _BUILDERS[arch](num_classes, **dict(cfg))
