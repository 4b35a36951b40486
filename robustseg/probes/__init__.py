"""Shape-vs-texture probes: line drawings, silhouettes, texture scramble, grayscale/invert controls and a
cue-conflict shape-bias score for detectors (docs/probes.md). The run itself is a kind on the run engine
(robustseg/kinds/probe.py)::

    import robustseg as rs
    res = rs.run_probes("model.pt", "ann.json", "images/", probes="all", out="reports/probes")
    print(res.summary()); res.shape_bias["overall"]["shape_bias"]
"""
from .config import DEFAULT_CONFIG, load_config, resolve_probes
from .shape_bias import decisions, summarise

__all__ = ["DEFAULT_CONFIG", "load_config", "resolve_probes", "decisions", "summarise"]
