"""Adversarial patches for Mask R-CNN: universal (EOT), per-image and per-object, with baselines (docs/patches.md).
The run itself is a kind on the run engine: robustseg/kinds/patch.py."""
from .apply import EOT, POLICIES, Placement, paste, sample_placement
from .files import load_patch_file
from .suite import PatchSuite, load_patch_suite, parse_patch_suite

__all__ = ["EOT", "POLICIES", "Placement", "paste", "sample_placement", "load_patch_file", "PatchSuite",
           "load_patch_suite", "parse_patch_suite"]
