"""Shape-vs-texture probes: line drawings, silhouettes, texture scramble, grayscale/invert controls and a
cue-conflict shape-bias score for detectors (docs/probes.md)::

    from robustseg.probes import run_probes
    res = run_probes("model.pt", "ann.json", "images/", probes="all", out="reports/probes")
    print(res.summary()); res.shape_bias["overall"]["shape_bias"]
"""
from .run import DEFAULT_CONFIG, ProbeResult, load_config, resolve_probes, run_probes
from .shape_bias import decisions, summarise

__all__ = ["DEFAULT_CONFIG", "ProbeResult", "load_config", "resolve_probes", "run_probes", "decisions", "summarise"]
