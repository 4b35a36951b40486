"""Example images of a probe run: one PNG per (point, image) and an overview grid read back from them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import write_png


def overview(path: Path, ex_dir: Path, points: list[str], ids: list[int], cc_ids: list[int],
              cell: int = 128) -> None:
    """One row per example image (read back from ex_dir/<point>/<id>.png, so a resumed run gets the same), a
    column per point, each cell fitted into ``cell`` px on white; the cue-conflict column holds its own images."""
    cells = [[ex_dir / p / f"{iid}.png" for p in points if p != "probe-cue-conflict"] for iid in ids]
    for r, iid in enumerate(cc_ids[:len(cells)]):
        cells[r].append(ex_dir / "probe-cue-conflict" / f"{iid}.png")
    cells = [[f for f in row if f.is_file()] for row in cells]
    if not any(cells):
        return
    grid = np.ones((len(cells) * (cell + 4), max(len(r) for r in cells) * (cell + 4), 3), dtype=np.float32)
    for i, row in enumerate(cells):
        for j, f in enumerate(row):
            with Image.open(f) as im:
                im = im.convert("RGB")
                im.thumbnail((cell, cell))
                a = np.asarray(im, dtype=np.float32) / 255
            grid[i * (cell + 4):i * (cell + 4) + a.shape[0], j * (cell + 4):j * (cell + 4) + a.shape[1]] = a
    write_png(path, grid)
