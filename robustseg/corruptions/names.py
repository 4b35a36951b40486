"""The corruptions of COCO-C (Michaelis et al. 2019), in imagecorruptions' order, and their severities."""
from __future__ import annotations

BENCHMARK: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL: tuple[str, ...] = BENCHMARK + EXTRA
SEVERITIES = (1, 2, 3, 4, 5)
