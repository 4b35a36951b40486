"""COCO-C / ImageNet-C corruptions (Michaelis et al. 2019; Hendrycks & Dietterich 2019) on torch tensors.

A faithful port of ``imagecorruptions`` 1.1.2, the package the COCO-C benchmark uses: the same 15 benchmark and
4 extra corruptions, the same severity parameters, the same maths, run on the image's own device. Deliberate
differences and their measured size are in docs/corruptions.md.

    corrupt(image, "fog", 3, seed=7)            # float (3,H,W) in [0,1] -> float (3,H,W) in [0,1]
    corrupt_batch(images, "fog", 3, seeds)      # batched where sizes agree; same results as one by one

Like the reference, the output is quantised to uint8 levels by truncation (``np.uint8(float)``), so every output
value is k/255. Randomness comes only from a torch.Generator seeded with the image's own seed, on the image's
device: a (image, corruption, severity) gets the same output on the same device whatever it is batched with, but
a CPU and a GPU draw different noise for the same seed.
"""
from __future__ import annotations

import torch

from ..errors import RobustsegError
from . import blur, digital, glass, noise, spatter, weather
from .names import ALL, BENCHMARK, EXTRA, SEVERITIES

MIN_SIDE = 32  # the reference refuses smaller images; several corruptions assume at least this much room

# name -> fn(batch (B,3,H,W) float32 in [0,1], severity, generators) -> grey levels: float (clipped to [0,255]
# and truncated here, as the reference's final np.uint8 does) or exact uint8
_FUNCTIONS = {
    "gaussian_noise": noise.gaussian_noise, "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise, "speckle_noise": noise.speckle_noise,
    "defocus_blur": blur.defocus_blur, "glass_blur": glass.glass_blur, "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur, "gaussian_blur": blur.gaussian_blur,
    "snow": weather.snow, "frost": weather.frost, "fog": weather.fog,
    "brightness": digital.brightness, "contrast": digital.contrast, "saturate": digital.saturate,
    "elastic_transform": digital.elastic_transform, "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression, "spatter": spatter.spatter,
}
assert set(_FUNCTIONS) == set(ALL)


def check(name: str, severity: int) -> None:
    """Raise RobustsegError unless ``name`` is a known corruption and ``severity`` an integer 1-5."""
    if name not in _FUNCTIONS:
        raise RobustsegError(f"unknown corruption {name!r}; known: {', '.join(ALL)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise RobustsegError(f"corruption severity must be an integer 1-5, got {severity!r}")


def _check_image(image, i: int) -> None:
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise RobustsegError(f"image {i}: expected a float tensor, got {getattr(image, 'dtype', type(image))}")
    if image.dim() != 3 or image.shape[0] != 3:
        raise RobustsegError(f"image {i}: expected shape (3,H,W), got {tuple(image.shape)}")
    if min(image.shape[1:]) < MIN_SIDE:
        raise RobustsegError(f"image {i}: sides must be at least {MIN_SIDE} pixels, got {tuple(image.shape[1:])}")


def _quantise(levels: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Grey levels (float, possibly out of range) or exact uint8 levels to floats k/255, in place where possible
    (``batch``, the private copy of the inputs, is free to hold uint8 results).

    The reference ends with np.uint8(float image): truncation, not rounding (a -0.5 level bias it has too).
    """
    if levels.dtype == torch.uint8:
        return batch.copy_(levels).div_(255.0)
    if not levels.is_contiguous():  # a crop of a bigger buffer: the first op writes a compact copy
        levels = torch.clamp(levels, 0, 255)
    else:
        levels.clamp_(0, 255)
    return levels.floor_().div_(255.0)


@torch.no_grad()
def corrupt_batch(images: list[torch.Tensor], name: str, severity: int, seeds: list[int]) -> list[torch.Tensor]:
    """Corrupt each image with its own seed; images of one size and device are processed as one batch.

    Values outside [0,1] are clipped first. Outputs keep each input's shape, dtype and device.
    """
    check(name, severity)
    if len(seeds) != len(images):
        raise RobustsegError(f"corrupt_batch: {len(images)} images but {len(seeds)} seeds")
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        _check_image(image, i)
        groups.setdefault((image.device, tuple(image.shape)), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(images)
    for (device, _), members in groups.items():
        batch = torch.stack([images[i] for i in members]).to(torch.float32).clamp_(0, 1)
        gens = [torch.Generator(device=device).manual_seed(int(seeds[i])) for i in members]
        result = _quantise(_FUNCTIONS[name](batch, severity, gens), batch)
        for j, i in enumerate(members):
            out[i] = result[j].to(images[i].dtype)
    return out


def corrupt(image: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """One float (3,H,W) image in [0,1] corrupted by ``name`` at ``severity`` (1-5), seeded by ``seed``."""
    return corrupt_batch([image], name, severity, [seed])[0]


__all__ = ["ALL", "BENCHMARK", "EXTRA", "SEVERITIES", "check", "corrupt", "corrupt_batch"]
