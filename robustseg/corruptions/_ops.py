"""Shared torch building blocks, each matching the numpy/scipy/OpenCV call the reference makes.

Images inside the package are float32 (B,C,H,W) batches. Border modes are named after scipy/OpenCV because the
reference mixes both, and the names disagree: scipy's "reflect" (a b | b a) is OpenCV's BORDER_REFLECT, scipy's
"mirror" (a b | c b) is OpenCV's BORDER_REFLECT_101 and torch's "reflect".
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F


def _pad_dim(x: torch.Tensor, before: int, after: int, mode: str, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    if mode == "reflect" and max(before, after) <= n:  # the edge pixel repeated: flipped slices
        parts = [x.narrow(dim, 0, before).flip(dim), x, x.narrow(dim, n - after, after).flip(dim)]
        return torch.cat(parts, dim)
    i = torch.arange(-before, n + after, device=x.device)
    if mode == "nearest":  # scipy nearest / OpenCV BORDER_REPLICATE
        i = i.clamp(0, n - 1)
    elif mode == "reflect":  # scipy reflect / OpenCV BORDER_REFLECT, pads longer than the image
        i = i % (2 * n)
        i = torch.where(i >= n, 2 * n - 1 - i, i)
    elif mode == "mirror":  # scipy mirror / OpenCV BORDER_REFLECT_101
        i = i % (2 * n - 2)
        i = torch.where(i >= n, 2 * n - 2 - i, i)
    else:
        raise ValueError(mode)
    return x.index_select(dim, i)


def pad2d(x: torch.Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> torch.Tensor:
    """Pad the last two dims of (N,C,H,W) (or (N,H,W)) with a scipy/OpenCV border mode, any pad size."""
    h, w = x.shape[-2:]
    torch_mode = {"nearest": "replicate", "mirror": "reflect"}.get(mode)
    if torch_mode and (mode == "nearest" or max(top, bottom) < h and max(left, right) < w):
        squeeze = x.dim() == 3  # F.pad's replicate/reflect want a channel dim
        y = F.pad(x[:, None] if squeeze else x, (left, right, top, bottom), mode=torch_mode)
        return y[:, 0] if squeeze else y
    return _pad_dim(_pad_dim(x, top, bottom, mode, x.dim() - 2), left, right, mode, x.dim() - 1)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage.gaussian_filter1d's weights: radius int(truncate * sigma + 0.5), normalised to sum 1."""
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (float(sigma) ** 2) * t**2)
    return phi / phi.sum()


def _correlate_rows(x: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate (N,H,W) along H with an odd 1-D kernel.

    Laid out as a depthwise convolution whose channels are the W columns: (N,H,W) memory is already
    channels-last for a logical (N,W,H,1) tensor, and channels-last depthwise convolution is vectorised over the
    channels. It is 10-20x faster on a CPU than a (N,1,H,W) convolution with a (k,1) kernel.
    """
    r = len(kernel) // 2
    w = x.shape[-1]
    padded = pad2d(x, r, r, 0, 0, mode)
    weight = torch.as_tensor(kernel, dtype=x.dtype, device=x.device).view(1, 1, -1, 1).expand(w, 1, -1, 1)
    out = F.conv2d(padded.permute(0, 2, 1).unsqueeze(-1), weight, groups=w)
    return out[..., 0].permute(0, 2, 1)


def correlate_separable(x: torch.Tensor, k_rows: np.ndarray, k_cols: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate every channel of (B,C,H,W) with k_rows along H, then k_cols along W (odd lengths)."""
    b, c, h, w = x.shape
    flat = _correlate_rows(x.reshape(b * c, h, w), k_rows, mode)
    flat = _correlate_rows(flat.transpose(1, 2).contiguous(), k_cols, mode).transpose(1, 2)
    return flat.reshape(b, c, h, w)


def gaussian_filter(x: torch.Tensor, sigma, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian / scipy.ndimage.gaussian_filter over H and W; sigma a number or (sy, sx)."""
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    return correlate_separable(x, gaussian_kernel1d(sy, truncate), gaussian_kernel1d(sx, truncate), mode)


def _smooth_size(n: int) -> int:
    """The smallest multiple of 16 >= n with no prime factor above 5: pocketfft is several times faster on
    such sizes than on sizes with a large prime factor (664 = 8 * 83 takes ~3x as long as 720)."""
    m = -(-n // 16) * 16
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 16


@functools.lru_cache(maxsize=32)
def _kernel_spectrum(kernel_bytes: bytes, size: int, fh: int, fw: int, device: str) -> torch.Tensor:
    kernel = np.frombuffer(kernel_bytes, dtype=np.float64).reshape(size, size)
    r = size // 2
    k = torch.zeros(fh, fw, dtype=torch.float64)
    # correlation = convolution with the flipped kernel, centred on (0, 0) with wrap-around
    k[:size, :size] = torch.from_numpy(np.ascontiguousarray(kernel[::-1, ::-1]))
    k = torch.roll(k, shifts=(-r, -r), dims=(0, 1))
    return torch.fft.rfft2(k.to(device=device, dtype=torch.float32))


def fft_correlate(x: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate every channel of (B,C,H,W) with an odd square 2-D kernel, through the FFT.

    For defocus blur's 17x17 and 21x21 disks this is far cheaper than a direct convolution on a CPU; the float32
    rounding it adds (~1e-4 of a grey level) is far below the output's uint8 step. The border padding runs on
    to an FFT-friendly size: only the outputs that are cropped away see the wrap-around or the extra border.
    Returns a crop (a view) of the padded result.
    """
    r = kernel.shape[0] // 2
    h, w = x.shape[-2:]
    fh, fw = _smooth_size(h + 2 * r), _smooth_size(w + 2 * r)
    if mode == "mirror" and max(fh - h - r, fw - w - r) >= min(h, w):
        padded = F.pad(pad2d(x, r, r, r, r, mode), (0, fw - w - 2 * r, 0, fh - h - 2 * r))
    else:
        padded = pad2d(x, r, fh - h - r, r, fw - w - r, mode)
    spectrum = _kernel_spectrum(np.asarray(kernel, np.float64).tobytes(), kernel.shape[0], fh, fw, str(x.device))
    out = torch.fft.irfft2(torch.fft.rfft2(padded).mul_(spectrum), s=(fh, fw))
    return out[..., r: r + h, r: r + w]


def shift_offsets(radius: int, angle_deg: float) -> list[tuple[int, int]]:
    """The reference's motion-blur taps: (dy, dx) of tap i along the angle, by its -ceil(v - 0.5) rounding."""
    width = 2 * radius + 1
    py, px = width * np.sin(np.deg2rad(angle_deg)), width * np.cos(np.deg2rad(angle_deg))
    hyp = math.hypot(py, px)
    return [(-math.ceil(i * py / hyp - 0.5), -math.ceil(i * px / hyp - 0.5)) for i in range(width)]


def motion_kernel(radius: int, sigma: float) -> np.ndarray:
    """One-sided Gaussian weights of the reference's motion blur, tap 0 the heaviest."""
    t = np.arange(2 * radius + 1, dtype=np.float64)
    k = np.exp(-(t**2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    return k / k.sum()


def motion_blur_one(x: torch.Tensor, radius: int, sigma: float, angle_deg: float, scale: float = 1.0,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """The reference's ``_motion_blur`` on one (C,H,W) image, times ``scale``: a sum of shifted copies.

    Tap i holds the pixel ``(y - dy_i, x - dx_i)`` (clamped to the image), like the reference's ``shift``; taps
    stop where a shift would leave the image, as in the reference.
    """
    h, w = x.shape[-2:]
    weights = motion_kernel(radius, sigma) * scale
    taps = []
    for (dy, dx), weight in zip(shift_offsets(radius, angle_deg), weights):
        if abs(dy) >= h or abs(dx) >= w:
            break
        taps.append((dy, dx, float(weight)))
    my = max(abs(t[0]) for t in taps)
    mx = max(abs(t[1]) for t in taps)
    padded = pad2d(x[None], my, my, mx, mx, "nearest")[0]
    out = torch.zeros_like(x) if out is None else out.zero_()
    for dy, dx, weight in taps:
        out.add_(padded[..., my - dy: my - dy + h, mx - dx: mx - dx + w], alpha=weight)
    return out


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """The reference's ``clipped_zoom``: centre crop of ceil(n / zoom), scipy ``zoom(order=1)`` back up.

    scipy's zoom (grid_mode=False) maps the corners onto the corners, i.e. bilinear with align_corners=True, to a
    size of round(crop * zoom), which can exceed the input by a pixel; callers crop, as the reference does.
    """
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top: top + ch, left: left + cw]
    size = (round(ch * zoom), round(cw * zoom))  # Python's round, as scipy's zoom
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=True)


def to_uint8_levels(x01: torch.Tensor) -> torch.Tensor:
    """[0,1] floats to the integer grey levels the reference starts from (exact for images read as uint8)."""
    return (x01 * 255.0).round().clamp(0, 255)
