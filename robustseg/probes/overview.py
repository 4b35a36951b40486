"""Example images of a probe run: one PNG per (point, image) and an overview grid read back from them."""
from __future__ import annotations

from pathlib import Path

from ..report.grid import image_grid


def overview(path: Path, ex_dir: Path, points: list[str], ids: list[int], cc_ids: list[int],
             cell: int = 128) -> None:
    """One row per example image, a column per point; the cue-conflict column holds its own images."""
    cells = [[ex_dir / p / f"{iid}.png" for p in points if p != "probe-cue-conflict"] for iid in ids]
    for r, iid in enumerate(cc_ids[:len(cells)]):
        cells[r].append(ex_dir / "probe-cue-conflict" / f"{iid}.png")
    image_grid(path, [[f for f in row if f.is_file()] for row in cells], cell)
