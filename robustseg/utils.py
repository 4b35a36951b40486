"""Tiny helpers shared by every part: eps/option parsing, per-(point, batch) seeds, index batches."""
from __future__ import annotations

import hashlib
import math
from fractions import Fraction

from .errors import RobustsegError


def parse_eps(value: str | float | int, norm: str = "linf") -> float:
    """An epsilon in [0,1] pixel units: ``8/255``, ``0.0314`` or a number.

    Linf: at most 1 (values > 1 are refused: eps is not in 0-255 units). L2 bounds the whole image's perturbation,
    so any finite value >= 0 is allowed (a 3x128x128 image can move up to sqrt(3*128*128) ~ 221).
    """
    try:
        if isinstance(value, bool):
            raise TypeError("a boolean is not an eps")
        if isinstance(value, str):
            v = float(Fraction(value.strip())) if "/" in value else float(value)
        else:
            v = float(value)
    except (ValueError, ZeroDivisionError, TypeError, OverflowError):
        raise RobustsegError(f"invalid eps {value!r}: give a number in [0,1] such as 8/255 or 0.03") from None
    if not math.isfinite(v) or v < 0:
        raise RobustsegError(f"invalid eps {value!r}: eps must be a finite number >= 0")
    if norm == "linf" and v > 1:
        raise RobustsegError(f"eps {value!r} is outside [0,1]: eps is in [0,1] pixel units (8/255, not 8)")
    return v


def parse_kv(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise RobustsegError(f"expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            import json
            out[k] = json.loads(v)
        except (ValueError, RecursionError):
            out[k] = v
    return out


def derived_seed(seed: int, *parts) -> int:
    """A seed for one (point, batch): results do not depend on the order points or batches run in."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()[:7], "big")


def batches(n: int, batch_size: int):
    """Consecutive index lists of at most ``batch_size`` covering range(n)."""
    for s in range(0, n, batch_size):
        yield list(range(s, min(n, s + batch_size)))
