"""Attack mode: the model computes its training losses while nothing in it can change.

torchvision's Mask R-CNN only returns losses in train mode, but train mode would update BatchNorm running
statistics and enable dropout. So: train() for the loss branches, eval() for every normalisation/dropout layer,
and no parameter gradients (only the input needs one).
"""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn

_FROZEN_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.modules.dropout._DropoutNd)


@contextmanager
def attack_mode(model: nn.Module):
    # every module's own flag: a model may mix modes (e.g. BatchNorm frozen in eval() while fine-tuning)
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, _FROZEN_TYPES):
                m.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        for m, flag in modes:
            m.training = flag
