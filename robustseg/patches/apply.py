"""Differentiable patch placement with expectation over transformation (EOT; Athalye et al. 2018).

A placement is a centre, a side in pixels, a rotation and a brightness/contrast change. ``paste`` renders the
patch into the image with ``affine_grid`` + ``grid_sample`` (bilinear), so the gradient of any loss on the
pasted image reaches the patch pixels; the square's outline is computed exactly (a one-pixel soft edge), so no
colour spills past it whatever the patch resolution. Sides only ever shrink (EOT scale <= 1): the realised area
fraction is never above the requested one. Geometry is in continuous pixel coordinates (pixel i spans [i, i+1]),
as COCO boxes are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

POLICIES = ("anywhere", "avoid-objects", "on-objects")
TRIES = 200  # random candidates before a policy gives up (the placement is then flagged, never silently wrong)


@dataclass(frozen=True)
class EOT:
    """Ranges the transformation is drawn from (uniformly)."""
    scale: tuple[float, float] = (0.8, 1.0)      # side multiplier, <= 1
    rotation: float = 20.0                       # degrees, in [-rotation, rotation]
    brightness: float = 0.1                      # added, in [-brightness, brightness]
    contrast: tuple[float, float] = (0.8, 1.2)   # multiplies the deviation from mid-grey


FIXED = EOT(scale=(1.0, 1.0), rotation=0.0, brightness=0.0, contrast=(1.0, 1.0))


@dataclass(frozen=True)
class Placement:
    cx: float
    cy: float
    side: float               # pixels
    angle: float = 0.0        # radians
    brightness: float = 0.0
    contrast: float = 1.0
    ok: bool = True           # False when the policy could not be met (counted in patches.csv)

    @property
    def radius(self) -> float:
        """Half the side of the axis-aligned box around the rotated square."""
        return self.side / 2 * (abs(math.cos(self.angle)) + abs(math.sin(self.angle)))

    def footprint(self) -> tuple[float, float, float, float]:
        r = self.radius
        return self.cx - r, self.cy - r, self.cx + r, self.cy + r

    def area_fraction(self, h: int, w: int) -> float:
        return self.side ** 2 / (h * w)


def side_pixels(h: int, w: int, side: float) -> float:
    """``side`` is relative to sqrt(image area), so the area fraction is side**2 whatever the aspect ratio."""
    return side * math.sqrt(h * w)


def relit(patch: torch.Tensor, brightness, contrast) -> torch.Tensor:
    """The patch under other light, unclamped: its deviation from mid-grey times ``contrast``, plus ``brightness``
    (numbers, or tensors that broadcast: the physical sticker's per-image light)."""
    return contrast * (patch - 0.5) + 0.5 + brightness


def adjust(patch: torch.Tensor, brightness: float, contrast: float) -> torch.Tensor:
    return relit(patch, brightness, contrast).clamp(0, 1)


def paste(image: torch.Tensor, patch: torch.Tensor, pl: Placement) -> torch.Tensor:
    """``image`` (3,H,W) with ``patch`` (3,h,w) composited at ``pl``; differentiable in both."""
    _, h, w = image.shape
    c, s = math.cos(pl.angle), math.sin(pl.angle)
    k = 2.0 / pl.side
    # output pixel (u, v) -> patch coordinates: rotate (u - cx, v - cy) by -angle, scale to [-1, 1]
    theta = torch.tensor([[c * w / 2, s * h / 2, c * (w / 2 - pl.cx) + s * (h / 2 - pl.cy)],
                          [-s * w / 2, c * h / 2, -s * (w / 2 - pl.cx) + c * (h / 2 - pl.cy)]],
                         dtype=image.dtype, device=image.device) * k
    grid = F.affine_grid(theta[None], [1, 3, h, w], align_corners=False)
    p = adjust(patch, pl.brightness, pl.contrast)
    colour = F.grid_sample(p[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    cover = cover_of(grid, pl.side)
    return image * (1 - cover) + colour * cover


def cover_of(grid: torch.Tensor, side: float) -> torch.Tensor:
    """(H,W) share of each pixel inside the square, from its centre's distance to the edges (one-pixel soft edge):
    exact whatever the patch resolution, and zero on any pixel that does not touch the square."""
    inside = (1 - grid[0].abs()) * side / 2 + 0.5  # output pixels from each edge, per axis
    return inside.clamp(0, 1).prod(-1)


def coverage(h: int, w: int, pl: Placement) -> torch.Tensor:
    """(H,W) fraction of each pixel the patch covers (for tests and policy checks)."""
    return paste(torch.zeros(3, h, w), torch.ones(3, 2, 2), pl)[0]


def _overlaps(fp, boxes: torch.Tensor, margin: float) -> bool:
    if len(boxes) == 0:
        return False
    x0, y0, x1, y1 = fp
    b = boxes
    return bool(((b[:, 0] < x1 + margin) & (b[:, 2] > x0 - margin) & (b[:, 1] < y1 + margin)
                 & (b[:, 3] > y0 - margin)).any())


def uniform(g: torch.Generator, lo: float, hi: float) -> float:
    """One seeded draw from [lo, hi) (one number from ``g``, whatever the range)."""
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def sample_placement(g: torch.Generator, h: int, w: int, side_px: float, boxes: torch.Tensor,
                     policy: str = "anywhere", eot: EOT = FIXED) -> Placement:
    """A random placement inside the image that obeys ``policy`` with respect to the GT ``boxes`` (N,4 xyxy).

    avoid-objects: the patch's bounding box (plus a pixel for bilinear edges) touches no GT box;
    on-objects: the centre lies inside a GT box (images without objects fall back to anywhere).
    """
    if policy not in POLICIES:
        from ..errors import RobustsegError
        raise RobustsegError(f"unknown placement policy {policy!r}; choose from {', '.join(POLICIES)}")
    boxes = boxes.detach().float().cpu().reshape(-1, 4)
    pl = None
    for _ in range(TRIES):
        side = side_px * uniform(g, *eot.scale)
        angle = math.radians(uniform(g, -eot.rotation, eot.rotation))
        bright, contrast = uniform(g, -eot.brightness, eot.brightness), uniform(g, *eot.contrast)
        r = side / 2 * (abs(math.cos(angle)) + abs(math.sin(angle)))
        lo_x, hi_x, lo_y, hi_y = min(r, w / 2), max(w - r, w / 2), min(r, h / 2), max(h - r, h / 2)
        if policy == "on-objects" and len(boxes):
            b = boxes[int(torch.randint(len(boxes), (), generator=g))].tolist()
            # the centre inside the box, and the patch inside the image where both can hold
            cx = uniform(g, max(b[0], lo_x), min(b[2], hi_x)) if max(b[0], lo_x) < min(b[2], hi_x) else \
                min(max((b[0] + b[2]) / 2, lo_x), hi_x)
            cy = uniform(g, max(b[1], lo_y), min(b[3], hi_y)) if max(b[1], lo_y) < min(b[3], hi_y) else \
                min(max((b[1] + b[3]) / 2, lo_y), hi_y)
            ok = b[0] <= cx <= b[2] and b[1] <= cy <= b[3]
        else:
            cx, cy = uniform(g, lo_x, hi_x), uniform(g, lo_y, hi_y)
            ok = True
        pl = Placement(cx, cy, side, angle, bright, contrast)
        if policy == "avoid-objects":
            ok = not _overlaps(pl.footprint(), boxes, margin=1.0)
        if ok:
            return pl
    return Placement(pl.cx, pl.cy, pl.side, pl.angle, pl.brightness, pl.contrast, ok=False)


def object_placements(boxes: torch.Tensor, relative_side: float, min_side: float = 2.0) -> list[Placement]:
    """ARES-style per-object patches: one at the centre of every GT box, side relative_side * sqrt(box area)."""
    out = []
    for x0, y0, x1, y1 in boxes.detach().float().cpu().reshape(-1, 4).tolist():
        side = max(relative_side * math.sqrt(max(x1 - x0, 0) * max(y1 - y0, 0)), min_side)
        out.append(Placement((x0 + x1) / 2, (y0 + y1) / 2, side))
    return out
