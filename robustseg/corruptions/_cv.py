"""The OpenCV calls of the reference's spatter, on torch tensors, following OpenCV's own integer arithmetic.

Maps are (N,H,W) integer tensors (int32) unless said otherwise; borders are OpenCV's defaults (reflect-101,
'mirror' in _ops) except where the OpenCV function fixes another. Everything here is exact: the reference's
water drops go through a histogram equalisation that turns one grey level of difference into a dozen.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._ops import pad2d

CANNY_SHIFT = 15
TG22 = int(0.4142135623730950488016887242097 * (1 << CANNY_SHIFT) + 0.5)
DIST_SHIFT = 16
# cv2.DIST_L2 with a 5x5 mask: axis steps 1, diagonal 1.4, knight moves 2.1969, in 16-bit fixed point
DIST_A, DIST_B, DIST_C = (round(v * (1 << DIST_SHIFT)) for v in (1.0, 1.4, 2.1969))
DIST_BAND = 96  # rows per band of the distance transform (see distance_to_zero)


def sum3(t: torch.Tensor, weights=(1, 1, 1), dim: int = -1) -> torch.Tensor:
    """Weighted sum of each element and its two neighbours along ``dim`` of an already padded map (drops 2)."""
    n = t.shape[dim] - 2
    out = t.narrow(dim, 0, n) * weights[0] if weights[0] != 1 else t.narrow(dim, 0, n).clone()
    for k in (1, 2):
        if weights[k]:
            out.add_(t.narrow(dim, k, n), alpha=weights[k])
    return out


def box3_sum(t: torch.Tensor) -> torch.Tensor:
    """The 3x3 sum of every pixel with reflect-101 borders (cv2.blur's border), exact for integers."""
    return sum3(sum3(pad2d(t, 1, 1, 1, 1, "mirror"), dim=-2), dim=-1)


def blur3_uint8(t: torch.Tensor) -> torch.Tensor:
    """cv2.blur(uint8, (3,3)): OpenCV's fixed-point division of the 9-sum, ((s + 4) * 7282) >> 16."""
    return ((box3_sum(t) + 4) * 7282) >> 16


def blur3_float_floor(dist_fixed: torch.Tensor) -> torch.Tensor:
    """floor(cv2.blur(distances, (3,3))), the distances given in 16-bit fixed point.

    OpenCV sums the nine float32 distances in double and multiplies by 1/9 before the float32 result is truncated
    by ``astype(np.uint8)``; for multiples of 2^-16 up to 20 that is exactly the integer division below.
    """
    return torch.div(box3_sum(dist_fixed), 9 << DIST_SHIFT, rounding_mode="floor")


def emboss(t: torch.Tensor) -> torch.Tensor:
    """cv2.filter2D(uint8, CV_8U, [[-2,-1,0],[-1,1,1],[0,1,2]]): a correlation, saturated to 0..255."""
    p = pad2d(t, 1, 1, 1, 1, "mirror")
    top, mid, bottom = (p.narrow(-2, k, t.shape[-2]) for k in range(3))
    out = sum3(top, (-2, -1, 0)) + sum3(mid, (-1, 1, 1)) + sum3(bottom, (0, 1, 2))
    return out.clamp_(0, 255)


def canny(levels: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """cv2.Canny(image, low, high) with aperture 3 and L1 gradient: bool edges of (N,H,W) int32 levels.

    Sobel with replicated borders; non-maximum suppression in OpenCV's four directions with its fixed-point
    tan(22.5 deg) tests (and its mix of > and >=); hysteresis as repeated 8-neighbour growth from the strong
    pixels through the candidates, which reaches exactly the pixels OpenCV's stack-based flood fill reaches.
    """
    p = pad2d(levels, 1, 1, 1, 1, "nearest")
    gx = sum3(p.narrow(-1, 2, levels.shape[-1]) - p.narrow(-1, 0, levels.shape[-1]), (1, 2, 1), dim=-2)
    gy = sum3(p.narrow(-2, 2, levels.shape[-2]) - p.narrow(-2, 0, levels.shape[-2]), (1, 2, 1), dim=-1)
    ax, ay = gx.abs(), gy.abs()
    mag = ax + ay
    tg22x = ax * TG22
    ay = ay << CANNY_SHIFT
    mostly_x = ay < tg22x  # gradient within 22.5 deg of horizontal: compare with left and right
    mostly_y = ay > tg22x + (ax << (CANNY_SHIFT + 1))  # within 22.5 deg of vertical: above and below
    padded = F.pad(mag, (1, 1, 1, 1))  # OpenCV's magnitude buffer has zero borders
    h, w = mag.shape[-2:]

    def at(dy: int, dx: int) -> torch.Tensor:
        return padded[..., 1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w]

    same_sign = (gx ^ gy) >= 0  # OpenCV's s = +1: the previous row at j - 1, the next row at j + 1
    keep = torch.where(mostly_x, (mag > at(0, -1)) & (mag >= at(0, 1)),
                       torch.where(mostly_y, (mag > at(-1, 0)) & (mag >= at(1, 0)),
                                   torch.where(same_sign, (mag > at(-1, -1)) & (mag > at(1, 1)),
                                               (mag > at(-1, 1)) & (mag > at(1, -1)))))
    candidate = keep & (mag > low)
    edges = candidate & (mag > high)
    while True:
        grown = candidate & _dilate3(edges)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def _dilate3(mask: torch.Tensor) -> torch.Tensor:
    """8-neighbour dilation of a bool (N,H,W) map (separable ORs; max_pool2d is slow on one channel)."""
    p = F.pad(mask, (1, 1, 1, 1))
    h, w = mask.shape[-2:]
    rows = p[:, 0:h] | p[:, 1:h + 1] | p[:, 2:h + 2]
    return rows[..., 0:w] | rows[..., 1:w + 1] | rows[..., 2:w + 2]


INF = 1 << 30  # "infinitely far" that still fits int32 after adding a ramp and a step


def _min_plus_rows(rows: torch.Tensor, init: torch.Tensor, reverse: bool) -> torch.Tensor:
    """One of OpenCV's two raster passes of the 5x5 chamfer mask over (N,L,W) int32, top-down (or bottom-up).

    Row by row: each pixel first takes the best of the two rows before it (the 5 taps of the nearer row, the 2
    knight moves of the farther), then the running min-plus scan along the row (d[j] = min(t[j], d[j -+ 1] + 1)),
    which is j + cummin(t - j) in closed form. ``init``: the pass's starting values (0 on the zero pixels).
    """
    n, length, w = init.shape
    device = init.device
    ramp = torch.arange(w, device=device, dtype=torch.int32) * DIST_A
    if reverse:
        ramp = ramp.flip(0).contiguous()
    out = torch.full((n, length + 4, w + 4), INF, dtype=torch.int32, device=device)  # 2 INF rows, cols each side
    order = range(length - 1, -1, -1) if reverse else range(length)
    for r in order:
        near = out[:, r + 1] if not reverse else out[:, r + 3]  # the previous row in this pass, padded
        far = out[:, r] if not reverse else out[:, r + 4]
        t = torch.minimum(near[:, 0:w], near[:, 4:w + 4]).add_(DIST_C)
        t = torch.minimum(t, torch.minimum(near[:, 1:w + 1], near[:, 3:w + 3]).add_(DIST_B))
        t = torch.minimum(t, near[:, 2:w + 2] + DIST_A)
        t = torch.minimum(t, torch.minimum(far[:, 1:w + 1], far[:, 3:w + 3]).add_(DIST_C))
        t = torch.minimum(t, init[:, r]).sub_(ramp)
        scan = torch.cummin(t.flip(-1) if reverse else t, dim=-1).values
        out[:, r + 2, 2:w + 2] = (scan.flip(-1) if reverse else scan).add_(ramp)
    return out[:, 2:length + 2, 2:w + 2]


def distance_to_zero(zero: torch.Tensor, cap: float) -> torch.Tensor:
    """cv2.distanceTransform(DIST_L2, 5) to the True pixels of (N,H,W) ``zero``, truncated at ``cap``
    (cv2.threshold THRESH_TRUNC), in OpenCV's 16-bit fixed point (int64; divide by 2^16 for the float).

    OpenCV's two raster passes are sequential along rows; here bands of DIST_BAND rows run side by side, each with
    ``cap`` + 1 rows of context above and below: a distance up to the cap comes from a path of at most ``cap``
    rows, so the band's rows get the whole image's distances (capped), in far fewer sequential steps.
    """
    n, h, w = zero.shape
    margin = int(cap) + 1
    length = min(h, DIST_BAND + 2 * margin)
    starts = list(range(0, h, DIST_BAND))
    windows = [min(max(s - margin, 0), h - length) for s in starts]
    rows = torch.tensor([s + k for s in windows for k in range(length)], device=zero.device)
    banded = zero.index_select(1, rows).view(n * len(windows), length, w)
    forward = _min_plus_rows(banded, torch.where(banded, 0, INF).to(torch.int32), reverse=False)
    dist = _min_plus_rows(banded, forward, reverse=True).view(n, len(windows), length, w)
    band_of_row = torch.arange(h, device=zero.device) // DIST_BAND
    row_in_window = torch.arange(h, device=zero.device) - torch.tensor(windows, device=zero.device)[band_of_row]
    out = dist[:, band_of_row, row_in_window]
    return out.clamp_(max=int(cap) << DIST_SHIFT)


def equalize_hist(levels: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist, image by image: OpenCV's LUT from the cumulative histogram, float32 scale, rounded."""
    out = torch.empty_like(levels)
    for i, image in enumerate(levels):
        hist = torch.bincount(image.flatten(), minlength=256)
        first = int(torch.nonzero(hist)[0])
        total = image.numel()
        if int(hist[first]) == total:
            out[i] = first
            continue
        scale = torch.tensor(255.0, dtype=torch.float32) / float(total - int(hist[first]))
        cumulative = torch.cumsum(hist, 0) - hist[: first + 1].sum()
        lut = (cumulative.float() * scale.to(levels.device)).round().clamp(0, 255).to(levels.dtype)
        lut[: first + 1] = 0
        out[i] = lut[image]
    return out
