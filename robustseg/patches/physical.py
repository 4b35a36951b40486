"""Expectation over the physical world: a printed sticker seen by a camera. Differentiable, batched and seeded.

A sticker lies on the scene at a site (centre and side, ``sticker.py``), its plane tilted away from the camera (a
homography), turned in its plane, nearer or further (scale), lit differently from the print (brightness, contrast,
colour temperature); the camera then blurs, adds sensor noise and JPEG-compresses the whole photo. Warp, blur and
JPEG are kornia's (``get_perspective_transform``, ``gaussian_blur2d``, ``jpeg_codec_differentiable``): batched,
with per-image parameters and gradients to the patch pixels, where torchvision's v2 functionals take one parameter
per call and have no differentiable JPEG. The warp itself (``warp_sticker``) is ours: kornia's
``warp_perspective`` divides by the homogeneous coordinate, which is zero on the tilted plane's horizon; where the
horizon crosses the image a pixel on it came out NaN, and the patch with it after the backward pass.

Every component is drawn for every image whichever are applied (``Conditions.only``), so "perspective alone"
is exactly the perspective of "all", at the same site: the per-component rows isolate one viewing condition.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import get_perspective_transform
from torch.nn.functional import grid_sample

from .apply import relit

COMPONENTS = ("perspective", "rotation", "scale", "brightness", "contrast", "temperature", "blur", "noise", "jpeg")
CAMERA_DISTANCE = 4.0  # pinhole distance in half-sides of the sticker: a sticker filling a tenth of the view


@dataclass(frozen=True)
class PhysicalEOT:
    """Ranges the viewing conditions are drawn from (uniformly); docs/patches.md says why these."""
    tilt: float = 50.0                        # degrees the sticker's plane turns from facing the camera, [0, tilt]
    rotation: float = 30.0                    # degrees in the plane, [-rotation, rotation]
    scale: tuple[float, float] = (0.7, 1.0)   # side multiplier (further away), <= 1
    brightness: float = 0.15                  # added to the sticker, [-brightness, brightness]
    contrast: tuple[float, float] = (0.7, 1.2)
    temperature: float = 0.1                  # red gain 1+t, blue gain 1-t, t in [-temperature, temperature]
    blur: float = 1.0                         # Gaussian sigma in pixels, [0, blur]
    noise: float = 0.03                       # sensor noise std, [0, noise]
    jpeg: tuple[float, float] = (50.0, 95.0)  # JPEG quality


@dataclass(frozen=True)
class Conditions:
    """One row per image: the site and every drawn condition; ``active`` says which conditions are applied."""
    cx: torch.Tensor
    cy: torch.Tensor
    side: torch.Tensor          # pixels, before scale
    tilt: torch.Tensor          # radians
    tilt_axis: torch.Tensor     # radians: the in-plane axis the sticker turns about
    angle: torch.Tensor         # radians
    scale: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    temperature: torch.Tensor
    blur: torch.Tensor
    noise_std: torch.Tensor
    quality: torch.Tensor
    noise: list[torch.Tensor]   # a standard-normal (3,H,W) field per image
    blur_limit: float           # the largest sigma the EOT draws (PhysicalEOT.blur): it sizes the blur kernel
    active: frozenset = frozenset(COMPONENTS)

    def only(self, components) -> "Conditions":
        return replace(self, active=frozenset(components))

    def select(self, idx: list[int]) -> "Conditions":
        """The rows of images ``idx``: every per-image field (a tensor or a list) is indexed, whatever fields are
        added; the others (``blur_limit``, ``active``) belong to the whole batch and are kept."""
        rows = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if torch.is_tensor(value):
                rows[f.name] = value[idx]
            elif isinstance(value, list):
                rows[f.name] = [value[i] for i in idx]
        return replace(self, **rows)

    def on(self, component: str, value: torch.Tensor, identity: float) -> torch.Tensor:
        return value if component in self.active else torch.full_like(value, identity)


def draw(g: torch.Generator, site: tuple[float, float, float], shape: tuple[int, int], eot: PhysicalEOT) -> dict:
    """One image's conditions, in a fixed order from ``g`` (the same draws whichever components are applied)."""
    u = torch.rand(10, generator=g).tolist()
    lo, hi = eot.scale
    return {"cx": site[0], "cy": site[1], "side": site[2], "tilt": math.radians(eot.tilt) * u[0],
            "tilt_axis": math.pi * u[1], "angle": math.radians(eot.rotation) * (2 * u[2] - 1),
            "scale": lo + (hi - lo) * u[3], "brightness": eot.brightness * (2 * u[4] - 1),
            "contrast": eot.contrast[0] + (eot.contrast[1] - eot.contrast[0]) * u[5],
            "temperature": eot.temperature * (2 * u[6] - 1), "blur": eot.blur * u[7], "noise_std": eot.noise * u[8],
            "quality": eot.jpeg[0] + (eot.jpeg[1] - eot.jpeg[0]) * u[9],
            "noise": torch.randn(3, *shape, generator=g), "blur_limit": eot.blur}


def stack(draws: list[dict], device="cpu") -> Conditions:
    cols = {k: torch.tensor([d[k] for d in draws], dtype=torch.float32, device=device)
            for k in draws[0] if k not in ("noise", "blur_limit")}
    return Conditions(**cols, noise=[d["noise"].to(device) for d in draws],
                      blur_limit=max(d["blur_limit"] for d in draws))


def corners(c: Conditions) -> torch.Tensor:
    """(B,4,2) image positions (continuous pixel coordinates) of the sticker's corners, clockwise from top-left."""
    ux = torch.tensor([-1.0, 1.0, 1.0, -1.0], device=c.cx.device)[None]
    uy = torch.tensor([-1.0, -1.0, 1.0, 1.0], device=c.cx.device)[None]
    tilt, axis = c.on("perspective", c.tilt, 0.0)[:, None], c.tilt_axis[:, None]
    along, across = ux * axis.cos() + uy * axis.sin(), -ux * axis.sin() + uy * axis.cos()
    depth = across * tilt.sin()  # turning the plane about the axis moves its far side away from the camera
    k = CAMERA_DISTANCE / (CAMERA_DISTANCE + depth)
    across = across * tilt.cos()
    x, y = (along * axis.cos() - across * axis.sin()) * k, (along * axis.sin() + across * axis.cos()) * k
    a = c.on("rotation", c.angle, 0.0)[:, None]
    half = (c.side * c.on("scale", c.scale, 1.0))[:, None] / 2
    return torch.stack([c.cx[:, None] + half * (x * a.cos() - y * a.sin()),
                        c.cy[:, None] + half * (x * a.sin() + y * a.cos())], -1)


def reach(tilt: float) -> float:
    """The farthest any corner of the sticker lands from its centre, in half-sides, over every tilt in [0, tilt]
    degrees about every axis (rotation keeps distances; scale only shrinks): more than the half-diagonal sqrt(2),
    since the pinhole enlarges the near side. A corner at (along, across) of the axis, along**2 + across**2 = 2,
    lands at distance D*sqrt(2 - s**2)/(D + s) with s = across*sin(tilt); that grows as s falls to -2/D."""
    s = -min(2 / CAMERA_DISTANCE, math.sqrt(2) * math.sin(math.radians(tilt)))
    return CAMERA_DISTANCE * math.sqrt(2 - s * s) / (CAMERA_DISTANCE + s)


def area_fractions(c: Conditions, sizes: list[tuple[int, int]]) -> torch.Tensor:
    """(B,) realised sticker area (shoelace formula of the projected corners) over the area of each image, of
    (h, w) ``sizes``."""
    q = corners(c)
    x, y = q[..., 0], q[..., 1]
    pixels = torch.tensor([h * w for h, w in sizes], dtype=q.dtype, device=q.device)
    return 0.5 * (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1).abs() / pixels


def light(patch: torch.Tensor, c: Conditions) -> torch.Tensor:
    """(B,3,r,r): the sticker under each image's light."""
    b = c.on("brightness", c.brightness, 0.0)[:, None, None, None]
    k = c.on("contrast", c.contrast, 1.0)[:, None, None, None]
    t = c.on("temperature", c.temperature, 0.0)
    gains = torch.stack([1 + t, torch.ones_like(t), 1 - t], 1)[:, :, None, None]
    return (relit(patch[None], b, k) * gains).clamp(0, 1)  # clamped once, after the colour temperature


def camera(x: torch.Tensor, c: Conditions, noise: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) photos through the camera: blur, sensor noise, JPEG."""
    if "blur" in c.active and float(c.blur.max()) > 0:
        # one kernel size for the whole distribution, not the batch's largest sigma: an image's photo must not
        # depend on its batchmates (nor on --batch-size); a sigma of ~0 is then an exact identity kernel, and a
        # sigma set by hand above the range still gets its 3 sigma
        sigma = c.blur.clamp_min(1e-3)[:, None].expand(-1, 2)
        size = 2 * math.ceil(3 * max(c.blur_limit, float(c.blur.max()))) + 1
        x = gaussian_blur2d(x, size, sigma, border_type="replicate")
    if "noise" in c.active:
        x = (x + c.noise_std[:, None, None, None] * noise).clamp(0, 1)
    if "jpeg" in c.active:
        x = jpeg_codec_differentiable(x, c.quality).clamp(0, 1)
    return x


def render(images: list[torch.Tensor], patch: torch.Tensor, c: Conditions) -> list[torch.Tensor]:
    """Every image with the (3,r,r) ``patch`` stuck on under its conditions; differentiable in the patch. Images of
    one size are one batch."""
    r_h, r_w = patch.shape[1:]
    src = torch.tensor([[-0.5, -0.5], [r_w - 0.5, -0.5], [r_w - 0.5, r_h - 0.5], [-0.5, r_h - 0.5]],
                       device=patch.device)
    homography = get_perspective_transform(src[None].expand(len(images), -1, -1), corners(c) - 0.5)
    lit = light(patch, c)
    out: list[torch.Tensor | None] = [None] * len(images)
    for shape in dict.fromkeys(x.shape for x in images):
        idx = [i for i, x in enumerate(images) if x.shape == shape]
        sub = c.select(idx)
        colour, cover = warp_sticker(lit[idx], homography[idx], sub, *shape[1:])
        x = torch.stack([images[i] for i in idx])
        photos = camera(x * (1 - cover) + colour * cover, sub, torch.stack([c.noise[i] for i in idx]))
        for i, p in zip(idx, photos):
            out[i] = p
    return out



def warp_sticker(patch: torch.Tensor, homography: torch.Tensor, c: Conditions, h: int, w: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``patch`` (B,3,r,r) seen through ``homography`` (patch pixel centres -> image pixel centres): its bilinear
    colour (B,3,h,w) and the share of each pixel it covers (B,1,h,w), from the distance to its outline as
    ``apply.cover_of`` (an exact outline, a one-pixel soft edge). Only pixels in front of the camera see it: the
    inverse map's homogeneous coordinate is made positive at the sticker's centre, and where it is not, the pixel
    is off the sticker (no division by ~0 on the horizon)."""
    inv = torch.linalg.inv(homography)
    centre = torch.stack([c.cx - 0.5, c.cy - 0.5, torch.ones_like(c.cx)], -1)
    inv = inv * torch.einsum("bij,bj->bi", inv, centre)[:, 2:].sign()[:, :, None]
    ys, xs = torch.meshgrid(torch.arange(h, device=inv.device, dtype=inv.dtype),
                            torch.arange(w, device=inv.device, dtype=inv.dtype), indexing="ij")
    src = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3) @ inv.transpose(1, 2)  # (B, h*w, 3)
    front = src[..., 2] > 1e-6
    depth = torch.where(front, src[..., 2], torch.ones_like(src[..., 2]))
    r = patch.shape[-1]
    far = torch.full_like(depth, -4.0)  # off the patch
    gx = torch.where(front, src[..., 0] / depth / (r - 1) * 2 - 1, far)
    gy = torch.where(front, src[..., 1] / depth / (r - 1) * 2 - 1, far)
    grid = torch.stack([gx, gy], -1).reshape(-1, h, w, 2)
    colour = grid_sample(patch, grid, mode="bilinear", padding_mode="border", align_corners=True)
    pixels_per_patch_pixel = (c.side * c.on("scale", c.scale, 1.0) / r)[:, None, None, None]
    # image pixels from each edge, per axis (grid -1..1 spans the patch's pixel centres, r-1 patch pixels)
    inside = (r / 2 - (grid * (r - 1) / 2).abs()) * pixels_per_patch_pixel + 0.5
    return colour, inside.clamp(0, 1).prod(-1)[:, None]
