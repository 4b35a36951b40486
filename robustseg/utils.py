"""Tiny parsing helpers shared by the CLI and suites."""
from __future__ import annotations

from fractions import Fraction

from .errors import RobustsegError


def parse_eps(value: str | float | int) -> float:
    """An epsilon in [0,1] pixel units: ``8/255``, ``0.0314`` or a number. Values > 1 are refused (not 0-255)."""
    try:
        if isinstance(value, str):
            v = float(Fraction(value.strip())) if "/" in value else float(value)
        else:
            v = float(value)
    except (ValueError, ZeroDivisionError):
        raise RobustsegError(f"invalid eps {value!r}: give a number in [0,1] such as 8/255 or 0.03") from None
    if not 0 <= v <= 1:
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
        except ValueError:
            out[k] = v
    return out
