"""Image transforms of the shape-vs-texture probes. Images are HxWx3 float arrays in [0,1]; sizes never change.

- line drawings: Canny edges and XDoG (Winnemöller et al. 2012), dark lines on white;
- silhouettes: ground-truth masks filled black on white;
- texture scramble: the image cut into a grid of tiles, shuffled (local texture kept, global shape lost);
- grayscale and colour inversion (controls);
- cue-conflict for real data: each object's mask filled with texture from another image's object.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import rgb2gray
from skimage.feature import canny
from skimage.filters import gaussian


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2).astype(np.float32)


def grayscale(img: np.ndarray) -> np.ndarray:
    return _rgb(rgb2gray(img))


def invert(img: np.ndarray) -> np.ndarray:
    return (1.0 - img).astype(np.float32)


def canny_lines(img: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Canny edges of the luminance (skimage, default hysteresis thresholds) as black lines on white."""
    return _rgb(1.0 - canny(rgb2gray(img), sigma=sigma))


def xdog(img: np.ndarray, sigma: float = 1.0, k: float = 1.6, tau: float = 0.98, epsilon: float = -0.005,
         phi: float = 200.0) -> np.ndarray:
    """XDoG stylisation (Winnemöller, Kyprianidis & Olsen 2012, eq. 3-4): D = G_sigma - tau * G_{k sigma} of the
    luminance, then the soft threshold T = 1 if D >= epsilon else 1 + tanh(phi * (D - epsilon)).

    With ``tau`` just below 1 flat regions give D slightly above 0 (white) and the dark side of every edge a
    negative D (ink): a line drawing, dark lines on white.
    """
    gray = rgb2gray(img)
    d = gaussian(gray, sigma) - tau * gaussian(gray, k * sigma)
    t = np.where(d >= epsilon, 1.0, 1.0 + np.tanh(phi * (d - epsilon)))
    return _rgb(np.clip(t, 0.0, 1.0))


def silhouette(shape: tuple[int, int], masks: np.ndarray) -> np.ndarray:
    """Objects (N,H,W masks) filled black on a white background: only the outline of each object is left."""
    fg = masks.any(axis=0) if len(masks) else np.zeros(shape, dtype=bool)
    return _rgb(np.where(fg, 0.0, 1.0))


def tile_size(h: int, w: int, grid: int) -> int:
    """Tile edge for a ``grid`` x ``grid`` cut of the short side (8 px for grid 16 on 128 px images)."""
    return max(1, min(h, w) // grid)


def scramble(img: np.ndarray, tile: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffle the image's ``tile`` x ``tile`` tiles (a seeded permutation). A border narrower than a tile, where
    the size is not a multiple of ``tile``, stays in place, so the image keeps its size and the multiset of tiles."""
    h, w = img.shape[:2]
    ny, nx = h // tile, w // tile
    out = img.copy()
    if ny * nx < 2:
        return out
    core = img[:ny * tile, :nx * tile]
    tiles = core.reshape(ny, tile, nx, tile, -1).transpose(0, 2, 1, 3, 4).reshape(ny * nx, tile, tile, -1)
    tiles = tiles[rng.permutation(ny * nx)]
    out[:ny * tile, :nx * tile] = tiles.reshape(ny, nx, tile, tile, -1).transpose(0, 2, 1, 3, 4).reshape(
        ny * tile, nx * tile, -1)
    return out


def object_texture(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bounding-box crop of an object and its mask there (a texture donor)."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return img[y0:y1, x0:x1], mask[y0:y1, x0:x1]


def fill_with_texture(img: np.ndarray, mask: np.ndarray, donor: np.ndarray, donor_mask: np.ndarray) -> np.ndarray:
    """Fill ``mask`` of ``img`` with a donor object's texture (real-data cue-conflict), at the donor's scale.

    Crop pixels outside the donor's own mask (its background) are first replaced by the nearest donor-object
    pixel, so only the donor object's surface is used; the crop is mirrored (``np.pad`` symmetric) where the
    object's bounding box is larger, centre-cropped where it is smaller, and pasted inside the object's mask
    only: the object keeps its shape and wears the donor's texture.
    """
    if donor_mask.any() and not donor_mask.all():
        _, (iy, ix) = ndimage.distance_transform_edt(~donor_mask, return_indices=True)
        donor = donor[iy, ix]
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    dh, dw = donor.shape[:2]
    tex = np.pad(donor, ((0, max(0, h - dh)), (0, max(0, w - dw)), (0, 0)), mode="symmetric")
    oy, ox = (tex.shape[0] - h) // 2, (tex.shape[1] - w) // 2
    tex = tex[oy:oy + h, ox:ox + w]
    out = img.copy()
    m = mask[y0:y1, x0:x1]
    out[y0:y1, x0:x1][m] = tex[m]
    return out
