"""robustseg: how much a Mask R-CNN loses to adversarial perturbations, and why.

Python API (the CLI is a thin layer over it)::

    import robustseg as rs
    lm = rs.load_model("model.pt")                 # any Mask R-CNN checkpoint; None = shipped tiny model
    metrics = rs.evaluate_model(lm, "ann.json", "images/")
    adv = rs.attack(lm, images, targets, kind="pgd", eps=8/255, steps=10)
    result = rs.run_suite(lm, "quick", out="reports/my-run")
    probes = rs.run_probes(lm, out="reports/my-probes")      # shape vs texture
    patches = rs.run_patches(lm, out="reports/my-patches")   # adversarial patches
"""
__version__ = "0.1.0"

from .api import evaluate_model  # noqa: E402
from .attacks import attack  # noqa: E402
from .data import CocoDataset, generate_synthetic  # noqa: E402
from .models import load_model, save_checkpoint  # noqa: E402
from .patches import run_patches  # noqa: E402
from .probes import run_probes  # noqa: E402
from .runner import run_suite  # noqa: E402
from .suites import load_suite  # noqa: E402

__all__ = ["__version__", "evaluate_model", "attack", "CocoDataset", "generate_synthetic", "load_model",
           "save_checkpoint", "run_suite", "run_probes", "run_patches", "load_suite"]
