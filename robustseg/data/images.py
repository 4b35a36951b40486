"""Decode one image file into a float RGB tensor in [0,1], CHW, whatever its mode, safely."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DatasetError

# Refuse decompression bombs outright instead of only warning (PIL's default limit, ~89 Mpx, made an error).
Image.MAX_IMAGE_PIXELS = 89_478_485


def safe_join(root: Path, file_name: str) -> Path:
    """``root/file_name``, refusing names that escape ``root`` (``../``, absolute paths, symlinks out)."""
    if not isinstance(file_name, str) or not file_name or "\x00" in file_name:
        raise DatasetError(f"invalid image file_name {file_name!r}")
    rel = Path(file_name)
    if rel.is_absolute() or file_name.startswith(("/", "\\")) or ".." in rel.parts or ":" in rel.parts[0]:
        raise DatasetError(f"image file_name {file_name!r} points outside the image folder: refused")
    root = root.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise DatasetError(f"image file_name {file_name!r} resolves outside the image folder (symlink?): refused")
    return path


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale by the actual bit depth
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / peak, 0, 1)
        return np.repeat(a[..., None], 3, axis=2).astype(np.float32)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))  # composite transparency on white
        img = Image.alpha_composite(bg, img)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


@contextmanager
def _open(path: Path):
    """PIL.Image.open with every failure turned into one DatasetError, and decompression bombs refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DatasetError(f"image {path.name}: refused as a decompression bomb ({e})") from None
    except FileNotFoundError:
        raise DatasetError(f"image {path.name}: file not found in the image folder") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"image {path.name}: cannot decode ({str(e).splitlines()[0][:120]})") from None


def load_image(path: str | Path) -> torch.Tensor:
    """RGB float tensor (3,H,W) in [0,1]; EXIF orientation applied; clear DatasetError for unreadable files."""
    with _open(Path(path)) as img:
        arr = _to_rgb_array(ImageOps.exif_transpose(img))
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as ``load_image`` will return it, from the header only (no pixel decoding)."""
    with _open(Path(path)) as img:
        w, h = img.size
        return (h, w) if img.getexif().get(0x0112) in _SWAPS_SIDES else (w, h)
