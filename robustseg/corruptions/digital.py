"""Digital: brightness, contrast, saturate, pixelate, JPEG, elastic transform.

Inputs and outputs as in noise.py. The HSV round trips of brightness and saturate are written in closed form (the
same numbers as skimage.color's rgb2hsv / hsv2rgb, up to float rounding), pixelate follows Pillow's BOX and
NEAREST resizes step by step (both round to uint8 in between), JPEG is libjpeg itself.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from ._ops import correlate_separable, gaussian_kernel1d

BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to V in HSV
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor on the distance to each channel's mean
SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))  # S -> S * a + b
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # size factor of the intermediate image
JPEG_QUALITY = (25, 18, 15, 10, 7)
ELASTIC_ALPHA = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)


def brightness(x: torch.Tensor, severity: int, gens=None) -> torch.Tensor:
    """skimage rgb2hsv, V += c clipped to 1, hsv2rgb. Hue and saturation are kept and every channel is
    V * (1 - S * k(hue)), so the round trip is exactly a scaling of the pixel by V'/V; black (V = 0) has S = 0
    and becomes grey c. Written as V' - (V - channel) V'/V so that the brightest channel is V' exactly, as in
    skimage (a channel computed as channel * V'/V can land a rounding error below an integer and truncate)."""
    c = BRIGHTNESS[severity - 1]
    v = x.amax(dim=1, keepdim=True)
    lit = (v + c).clamp_(max=1.0)
    ratio = torch.where(v > 0, lit / torch.where(v > 0, v, 1.0), 0.0).mul_(-255.0)
    return torch.addcmul(lit.mul_(255.0), v - x, ratio)


def saturate(x: torch.Tensor, severity: int, gens=None) -> torch.Tensor:
    """skimage rgb2hsv, S -> clip(S * a + b, 0, 1), hsv2rgb. With hue and V kept, each channel moves along its
    line to V: channel' = V - (S'/S) (V - channel), exact for every hue sector (and V stays V exactly). Grey pixels
    (S = 0) have hue 0 in skimage, so a positive b turns them red: (V, V(1-b), V(1-b))."""
    a, b = SATURATE[severity - 1]
    v = x.amax(dim=1, keepdim=True)
    delta = v - x.amin(dim=1, keepdim=True)
    grey = delta == 0
    s = delta / torch.where(grey, 1.0, v)
    ratio = torch.where(grey, 0.0, (s * a + b).clamp_(0, 1).div_(torch.where(grey, 1.0, s))).mul_(-255.0)
    out = torch.addcmul(v * 255.0, v - x, ratio)
    if b:
        out[:, 1:] -= torch.where(grey, v * (255.0 * b), 0.0)
    return out


def contrast(x: torch.Tensor, severity: int, gens=None) -> torch.Tensor:
    # ((x - mean) c + mean) * 255 = 255 c x + 255 (1 - c) mean, per channel
    c = CONTRAST[severity - 1]
    means = x.mean(dim=(2, 3), keepdim=True)
    return torch.add(means * (255.0 * (1 - c)), x, alpha=255.0 * c)


# ---- pixelate ----

PRECISION_BITS = 22  # Pillow's fixed-point resampling precision for 8-bit images (32 - 8 - 2)


@functools.lru_cache(maxsize=64)
def _box_windows(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's BOX downscale of one axis as (first pixel, pixel count, tie direction) per output pixel.

    Pillow (precompute_coeffs, box_filter) averages the input pixels whose centres fall in (c - s/2, c + s/2],
    c = (j + 0.5) s, s = in/out, with equal weights rounded to 22-bit fixed point: kk = int(0.5 + 2^22 / n),
    output (kk * sum + 2^21) >> 22. That equals floor((2 sum + n - tie) / 2n): round half up, except that where kk
    rounded down (tie = 1) an exact half rounds down.
    """
    scale = in_size / out_size
    support = 0.5 * max(scale, 1.0)
    first = np.zeros(out_size, dtype=np.int64)
    count = np.zeros(out_size, dtype=np.int64)
    for j in range(out_size):
        centre = (j + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        t = (np.arange(lo, hi) - centre + 0.5) / max(scale, 1.0)
        inside = np.flatnonzero((t > -0.5) & (t <= 0.5)) + lo
        first[j], count[j] = inside[0], len(inside)
    kk = (0.5 + (1 << PRECISION_BITS) / count).astype(np.int64)
    tie = (kk * count < (1 << PRECISION_BITS)).astype(np.int64)
    return first, count, tie


def _box_downscale_rows(x: torch.Tensor, out_size: int, scale: float) -> torch.Tensor:
    """One Pillow BOX pass along dim -2 of ``x * scale`` (integer levels), rounded as Pillow rounds.

    Along dim -2 so that every gather copies whole rows: gathering columns is several times slower on a CPU.
    """
    first, count, tie = _box_windows(x.shape[-2], out_size)
    device = x.device
    total = None
    for t in range(int(count.max())):
        rows = torch.as_tensor(np.minimum(first + t, x.shape[-2] - 1), device=device)
        weight = torch.as_tensor((t < count) * scale, dtype=x.dtype, device=device).view(-1, 1)
        taken = x.index_select(-2, rows).mul_(weight)
        total = taken if total is None else total.add_(taken)
    # the sums are integers (up to float error for inputs on the uint8 grid): round, then Pillow's rounding
    numerator = torch.as_tensor(count - tie, dtype=x.dtype, device=device).view(-1, 1)
    denominator = torch.as_tensor(2 * count, dtype=x.dtype, device=device).view(-1, 1)
    return total.round_().mul_(2).add_(numerator).div_(denominator).floor_()


def _nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's NEAREST resize (ImagingScaleAffine): source of pixel i is floor of an accumulated
    0.5 * s + i * s, s = in/out, summed step by step in double precision as Pillow does."""
    s = in_size / out_size
    positions = np.cumsum(np.r_[0.5 * s, np.full(out_size - 1, s)])
    return np.clip(np.floor(positions).astype(np.int64), 0, in_size - 1)


def pixelate(x: torch.Tensor, severity: int, gens=None) -> torch.Tensor:
    """Pillow's resize(BOX) to int(W c) x int(H c), then resize(NEAREST) back; both passes round to uint8.
    Returns uint8 (B,3,H,W) (a transposed view)."""
    c = PIXELATE[severity - 1]
    h, w = x.shape[-2:]
    small_w, small_h = int(w * c), int(h * c)
    # Pillow resamples horizontally first: work on the transposed image, then transpose back
    small = _box_downscale_rows(x.transpose(-1, -2).contiguous(), small_w, 255.0)
    small = _box_downscale_rows(small.transpose(-1, -2).contiguous(), small_h, 1.0).to(torch.uint8)
    rows = torch.as_tensor(_nearest_index(small_h, h), device=x.device)
    cols = torch.as_tensor(_nearest_index(small_w, w), device=x.device)
    tall = small.index_select(-2, rows).transpose(-1, -2).contiguous()
    return tall.index_select(-2, cols).transpose(-1, -2)


# ---- JPEG ----

def jpeg_compression(x: torch.Tensor, severity: int, gens=None) -> torch.Tensor:
    """A real JPEG round trip through libjpeg at the benchmark's quality: torchvision's encode_jpeg and
    decode_jpeg, which give byte for byte the files and pixels of the reference's Pillow calls (both libjpeg-turbo
    with its defaults: 4:2:0 chroma, baseline, islow DCT). Always on the CPU: a GPU encoder is another codec."""
    quality = JPEG_QUALITY[severity - 1]
    levels = x.mul(255.0).round_().to(device="cpu", dtype=torch.uint8)
    return torch.stack(decode_jpeg(encode_jpeg(list(levels), quality=quality))).to(x.device)


# ---- elastic transform ----

def elastic_given(x: torch.Tensor, severity: int, fields: torch.Tensor) -> torch.Tensor:
    """``fields``: (B,2,H,W) uniform draws in [-1,1) for the (dx, dy) displacement noise, before scaling.

    The reference (1.1.2's own variant, not ImageNet-C's): displacement = Gaussian(U(-m, m)) * alpha with
    m = 0.005 * H for both axes, sigma = 0.01 * (H, W), scipy 'reflect' borders and truncate=3; then bilinear
    resampling with 'reflect' borders, i.e. grid_sample(padding_mode='reflection', align_corners=False).
    """
    h, w = x.shape[-2:]
    sigma_y, sigma_x = h * 0.01, w * 0.01
    strength = h * 0.005 * ELASTIC_ALPHA[severity - 1]
    d = correlate_separable(fields, gaussian_kernel1d(sigma_y, 3.0), gaussian_kernel1d(sigma_x, 3.0) * strength,
                            "reflect")
    # grid_sample's align_corners=False coordinates: pixel i sits at (i + 0.5) / n * 2 - 1
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) * (2.0 / h) - 1
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) * (2.0 / w) - 1
    base = torch.stack(torch.broadcast_tensors(xs.view(1, w), ys.view(h, 1)), dim=-1)
    per_pixel = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=x.dtype)
    grid = torch.addcmul(base, d.permute(0, 2, 3, 1), per_pixel)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.mul_(255.0)


def elastic_transform(x: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    b, _, h, w = x.shape
    fields = torch.empty(b, 2, h, w, device=x.device, dtype=x.dtype)
    for i, g in enumerate(gens):
        fields[i].uniform_(-1.0, 1.0, generator=g)
    return elastic_given(x, severity, fields)
