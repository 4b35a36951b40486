"""robustseg: how much a Mask R-CNN loses to adversarial perturbations, and why.

Python API (the CLI is a thin layer over it)::

    import robustseg as rs
    lm = rs.load_model("model.pt")                 # any Mask R-CNN checkpoint; None = shipped tiny model
    metrics = rs.evaluate_model(lm, "ann.json", "images/")
    adv = rs.attack(lm, images, targets, kind="pgd", eps=8/255, steps=10)
    result = rs.run_suite(lm, "quick", out="reports/my-run")      # every run kind returns a RunResult
    probes = rs.run_probes(lm, out="reports/my-probes")           # shape vs texture
    patches = rs.run_patches(lm, out="reports/my-patches")        # adversarial patches
    cc = rs.run_corruptions(lm, out="reports/my-coco-c")          # natural corruptions: P / mPC / rPC
    norms = rs.run_gradnorms(lm, out="reports/my-gradnorms")      # input-gradient norms
    rs.compare_checkpoints(["a.pt", "b.pt"], "reports/a-vs-b")    # before/after, side by side
    rs.write_report("reports/my-run")                            # rebuild a report from the files
"""
from .version import __version__
from .api import evaluate_model
from .attacks import attack
from .compare import compare_checkpoints
from .data import CocoDataset, generate_synthetic
from .kinds.attack import run_suite
from .kinds.corruption import run_corruptions
from .kinds.gradnorm import run_gradnorms
from .kinds.patch import run_patches
from .kinds.probe import run_probes
from .models import load_model, save_checkpoint
from .models.defence import as_model
from .report.html import write_report
from .run import RunOptions, RunResult, execute
from .suites import load_suite
from .transfer import run_transfer
from .training import TrainConfig, train

__all__ = ["__version__", "as_model", "evaluate_model", "attack", "compare_checkpoints", "CocoDataset", "generate_synthetic",
           "run_suite", "run_gradnorms", "run_patches", "run_probes", "run_corruptions", "load_model", "save_checkpoint",
           "write_report", "RunOptions", "RunResult", "execute", "load_suite", "run_transfer", "TrainConfig", "train"]
