"""A grid of example images read back from their PNGs (so a resumed run draws the same), one PNG out."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..fileio import write_png

PAD = 4


def image_grid(path: Path, cells: list[list[Path | None]], cell: int = 128, row_labels: list[str] | None = None,
               col_labels: list[str] | None = None) -> bool:
    """Each existing file fitted into ``cell`` px on white at its row and column (a missing one leaves a blank);
    optional row labels on the left and column labels on top. False (nothing written) when no file exists."""
    if not any(f is not None and f.is_file() for row in cells for f in row):
        return False
    left = 8 * max(map(len, row_labels)) + PAD if row_labels else 0
    top = 14 if col_labels else 0
    rows, cols = len(cells), max(len(r) for r in cells)
    grid = np.ones((top + rows * (cell + PAD), left + cols * (cell + PAD), 3), dtype=np.float32)
    for i, row in enumerate(cells):
        for j, f in enumerate(row):
            if f is None or not f.is_file():
                continue
            with Image.open(f) as im:
                im = im.convert("RGB")
                im.thumbnail((cell, cell))
                a = np.asarray(im, dtype=np.float32) / 255
            y, x = top + i * (cell + PAD), left + j * (cell + PAD)
            grid[y:y + a.shape[0], x:x + a.shape[1]] = a
    if row_labels or col_labels:
        im = Image.fromarray((grid * 255 + 0.5).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for i, label in enumerate(row_labels or []):
            draw.text((2, top + i * (cell + PAD) + cell // 2 - 5), label, fill=(0, 0, 0))
        for j, label in enumerate(col_labels or []):
            draw.text((left + j * (cell + PAD) + 2, 1), label, fill=(0, 0, 0))
        grid = np.asarray(im, dtype=np.float32) / 255
    write_png(path, grid)
    return True
