"""Adversarial patches for Mask R-CNN: universal (EOT), per-image and per-object, with baselines (docs/patches.md)."""
from .apply import EOT, POLICIES, Placement, paste, sample_placement
from .run import load_patch_file, run_patches
from .suite import PatchSuite, load_patch_suite, parse_patch_suite

__all__ = ["EOT", "POLICIES", "Placement", "paste", "sample_placement", "load_patch_file", "run_patches",
           "PatchSuite", "load_patch_suite", "parse_patch_suite"]
