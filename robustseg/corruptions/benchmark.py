"""The COCO-C protocol (Michaelis et al. 2019, "Benchmarking Robustness in Object Detection", section 3):
which corruptions and severities a run covers, and its performance figures from per-point AP.

    P   = AP on clean data
    mPC = (1/N_c) sum_c (1/N_s) sum_s AP_{c,s}     over the 15 benchmark corruptions and severities 1-5
    rPC = mPC / P

The 4 extra corruptions are held out in the paper (its "validation" set): their mean is reported apart, never
mixed into mPC. A run over fewer corruptions or severities gets the same means over what it ran, marked
``complete=False`` so that nobody reads it as the benchmark's mPC.
"""
from __future__ import annotations

import math

from ..errors import RobustsegError
from .names import ALL, BENCHMARK, EXTRA, SEVERITIES

GROUPS = {"benchmark": BENCHMARK, "extra": EXTRA}


def parse_corruptions(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """``benchmark`` (the 15), ``extra`` (the 4 held-out ones), ``all`` (19), or comma-separated names (and groups),
    in the benchmark's order; a one-line error names an unknown one."""
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    parts = [p for p in parts if p]
    if not parts:
        raise RobustsegError("--corruptions: give benchmark, extra, all or corruption names")
    chosen: set[str] = set()
    for p in parts:
        name = p.lower().replace("-", "_")
        if name == "all":
            chosen |= set(ALL)
        elif name in GROUPS:
            chosen |= set(GROUPS[name])
        elif name in ALL:
            chosen.add(name)
        else:
            raise RobustsegError(f"unknown corruption {p!r}; known: benchmark, extra, all, {', '.join(ALL)}")
    return [c for c in ALL if c in chosen]


def parse_severities(spec: str | int | list[int] | tuple[int, ...]) -> list[int]:
    """``1-5``, ``3``, ``1,3,5`` (or a list of ints) -> sorted severities, each 1-5."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = [spec]
    out: set[int] = set()
    if isinstance(spec, str):
        for part in filter(None, (p.strip() for p in spec.split(","))):
            lo, _, hi = part.partition("-")
            try:
                a, b = int(lo), int(hi or lo)
            except ValueError:
                raise RobustsegError(f"--severities: {part!r} is not a severity or range (e.g. 1-5, 3, 1,3,5)") \
                    from None
            if a > b:
                raise RobustsegError(f"--severities: empty range {part!r}")
            out |= set(range(a, b + 1))
    else:
        for s in spec:
            if isinstance(s, bool) or not isinstance(s, int):
                raise RobustsegError(f"severities must be integers 1-5, got {s!r}")
            out.add(s)
    bad = sorted(s for s in out if s not in SEVERITIES)
    if bad or not out:
        raise RobustsegError(f"severities must be within 1-5, got {spec!r}")
    return sorted(out)


def group_of(name: str) -> str:
    return "benchmark" if name in BENCHMARK else "extra"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values and all(math.isfinite(v) for v in values) else float("nan")


def performance(clean: float, ap: dict[tuple[str, int], float], group: str) -> dict | None:
    """P, mPC and rPC of one group (benchmark or extra) from AP per (corruption, severity); None when the run
    holds no corruption of the group. An AP COCO could not compute (-1: no ground truth) makes the means NaN."""
    names = [c for c in GROUPS[group] if any(k[0] == c for k in ap)]
    if not names:
        return None
    fix = lambda v: float("nan") if v is None or v < 0 else float(v)  # noqa: E731 - COCO's -1: nothing to score
    per = {c: _mean([fix(v) for (n, _), v in sorted(ap.items()) if n == c]) for c in names}
    severities = sorted({s for (n, s) in ap if n in names})
    mpc = _mean(list(per.values()))
    p = fix(clean)
    complete = names == list(GROUPS[group]) and severities == list(SEVERITIES) and \
        all((c, s) in ap for c in names for s in severities)
    return {"group": group, "P": p, "mPC": mpc, "rPC": mpc / p if p and math.isfinite(p) and p > 0 else float("nan"),
            "per_corruption": per, "corruptions": names, "severities": severities, "complete": complete}
