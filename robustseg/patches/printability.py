"""What a printer can reproduce: the non-printability score (NPS; Sharif et al. 2016, in the nearest-colour form of
Thys et al. 2019), total variation (TV; smooth patches survive printing and a camera's resampling), the default set
of printable colours or a user's own from a CSV, and the print-quantised patch (every pixel its nearest printable
colour, 8 bits).
"""
from __future__ import annotations

import csv
import itertools
from pathlib import Path

import torch

from ..errors import RobustsegError

# Default printable colours: a 3-level RGB cube inside [0.1, 0.9] (27 colours). Pure black, pure white and fully
# saturated primaries are what an office printer on matte paper, photographed under room light, does *not* give
# back; a colour chart printed and photographed on the user's own printer is better (``colours = "chart.csv"``).
DEFAULT_LEVELS = (0.1, 0.5, 0.9)
DEFAULT_COLOURS = torch.tensor(list(itertools.product(DEFAULT_LEVELS, repeat=3)), dtype=torch.float32)
MAX_COLOURS = 1024  # a chart has tens to hundreds; each is a pass over the patch in every NPS
DISTANCE_ELEMENTS = 2 ** 24  # the nearest colour is searched in chunks of colours of at most this many differences


def load_colours(source: str | Path | None) -> torch.Tensor:
    """(K,3) printable colours in [0,1]: ``"default"``/None, or a CSV with one ``r,g,b`` row (0-255) per colour
    (a header row of names is allowed). A CSV whose every value is at most 1 is refused as a 0-1 chart."""
    if source in (None, "default"):
        return DEFAULT_COLOURS.clone()
    path = Path(source)
    if not path.is_file():
        raise RobustsegError(f"printable colours {path}: no such file")
    rows = _read_rows(path)
    if not rows:
        raise RobustsegError(f"printable colours {path}: no r,g,b rows")
    # a chart written in 0-1 would otherwise be read as near-black 0-255 colours, and train a near-black patch;
    # fractional 0-255 values (a photographed chart's averaged pixels) stay allowed
    if max(v for rgb in rows for v in rgb) <= 1:
        raise RobustsegError(f"printable colours {path}: every value is at most 1, as 0-1 colours would be; the CSV "
                             f"holds r,g,b in 0-255 (0.5,0.2,0.9 is 128,51,230)")
    return torch.tensor(rows, dtype=torch.float32) / 255


def _read_rows(path: Path) -> list[list[float]]:
    """The CSV's r,g,b rows, read up to the first colour over MAX_COLOURS: a huge file is refused at that line,
    not read to its end first."""
    rows = []
    try:
        # utf-8-sig: a spreadsheet's byte-order mark would otherwise make the first colour a "header", dropped
        with open(path, newline="", encoding="utf-8-sig") as f:
            for n, row in enumerate(csv.reader(f), 1):
                cells = [c.strip() for c in row if c.strip()]
                if not cells or (n == 1 and not _numeric(cells[0])):
                    continue  # a blank line, or the header
                if len(rows) == MAX_COLOURS:
                    raise RobustsegError(f"printable colours {path}: more than {MAX_COLOURS} colours (line {n}), "
                                         f"at most {MAX_COLOURS}")
                rows.append(_rgb(path, n, cells))
    except (UnicodeDecodeError, csv.Error):
        raise RobustsegError(f"printable colours {path}: not a text CSV file") from None
    except OSError as e:
        raise RobustsegError(f"printable colours {path}: cannot be read ({e.strerror or type(e).__name__})") from None
    return rows


def _numeric(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _rgb(path: Path, line: int, cells: list[str]) -> list[float]:
    if len(cells) != 3 or not all(_numeric(c) for c in cells):
        raise RobustsegError(f"printable colours {path}, line {line}: expected three numbers r,g,b, got "
                             f"{','.join(cells)!r}")
    rgb = [float(c) for c in cells]
    if not all(0 <= v <= 255 for v in rgb):
        raise RobustsegError(f"printable colours {path}, line {line}: r,g,b must be in 0-255, got {rgb}")
    return rgb


def _distances(pixels: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """(K, h, w) Euclidean RGB distance of every pixel of (3,h,w) ``pixels`` to every one of (K,3) ``colours``."""
    return ((pixels[None] - colours[:, :, None, None]) ** 2).sum(1).add(1e-12).sqrt()


def nearest_colour(patch: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """(h, w) index of every patch pixel's nearest printable colour (the first of equally near ones), searched a
    chunk of colours at a time (DISTANCE_ELEMENTS differences each) and without gradient: all (K,3,h,w) differences
    at once are 13 GB at 1024 colours and a 1024-pixel patch, and autograd would keep every chunk of them."""
    pixels, colours = patch.detach(), colours.to(patch)
    chunk = max(1, DISTANCE_ELEMENTS // patch[0].numel() // 3)
    best = index = None
    with torch.no_grad():
        for start in range(0, len(colours), chunk):
            d, i = _distances(pixels, colours[start:start + chunk]).min(0)
            if best is None:
                best, index = d, i
                continue
            closer = d < best  # strictly: a tie keeps the earlier colour, as one min over every colour does
            best, index = torch.where(closer, d, best), torch.where(closer, i + start, index)
    return index


def nearest_distance(patch: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """(h, w) distance of every patch pixel to its nearest printable colour, differentiable in the patch (the
    gradient of the minimum is that of the nearest colour's distance, as torch's min gives it)."""
    nearest = colours.to(patch)[nearest_colour(patch, colours)].permute(2, 0, 1)
    return ((patch - nearest) ** 2).sum(0).add(1e-12).sqrt()


def non_printability(patch: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of the distance to the nearest printable colour (0: every pixel printable). Sharif's
    product over colours underflows for 27 colours and has the same zeros; the minimum keeps a useful gradient."""
    return nearest_distance(patch, colours).mean()


def total_variation(patch: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontally and vertically neighbouring pixels."""
    return (patch[:, 1:, :] - patch[:, :-1, :]).abs().mean() + (patch[:, :, 1:] - patch[:, :, :-1]).abs().mean()


def quantise(patch: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """The print version: every pixel replaced by its nearest printable colour, rounded to 8 bits."""
    out = colours.to(patch)[nearest_colour(patch, colours)].permute(2, 0, 1)
    return (out * 255).round() / 255
