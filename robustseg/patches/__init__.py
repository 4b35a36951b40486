"""Adversarial patches for Mask R-CNN: universal (EOT), per-image and per-object, with baselines, and the physical
sticker (printable, judged under a camera's viewing conditions) (docs/patches.md).
The run itself is a kind on the run engine: robustseg/kinds/patch.py."""
from .apply import EOT, POLICIES, Placement, paste, sample_placement
from .files import export_print_png, load_patch_file, read_patch_png
from .physical import COMPONENTS, PhysicalEOT
from .printability import load_colours, non_printability, quantise, total_variation
from .suite import PatchSuite, load_patch_suite, parse_patch_suite

__all__ = ["EOT", "POLICIES", "Placement", "paste", "sample_placement", "load_patch_file", "PatchSuite",
           "load_patch_suite", "parse_patch_suite", "COMPONENTS", "PhysicalEOT", "export_print_png", "read_patch_png",
           "load_colours", "non_printability", "quantise", "total_variation"]
