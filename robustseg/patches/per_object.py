"""Per-object patches (ARES 2.0 style): a small patch at the centre of every ground-truth object, its side
``relative_side * sqrt(box area)``, all of one image's patches optimised together (per_image.optimise_fixed)."""
from __future__ import annotations

from .apply import Placement, object_placements


def placements_for(targets: list[dict], relative_side: float) -> list[list[Placement]]:
    return [object_placements(t["boxes"], relative_side) for t in targets]


def area_fraction(placements: list[Placement], h: int, w: int) -> float:
    """Summed patch area over image area (an upper bound where patches of overlapping objects overlap)."""
    return sum(pl.area_fraction(h, w) for pl in placements)

