"""Physical-world patches (robustseg/patches/physical.py, printability.py, sticker.py; docs/patches.md "Physical
patches"): the printability and smoothness terms, the differentiable viewing conditions (seeded, batched, each
alone), print-size export and re-applying an exported PNG, and, on the shipped model, a printable EOT-trained
sticker that beats a random one and a patch trained without perspective that suffers more from it.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from _helpers import PATCH_N_TRAIN, metric
from PIL import Image

from robustseg import run_patches
from robustseg.cli import main
from robustseg.data.coco import CocoDataset
from robustseg.errors import RobustsegError
from robustseg.patches import load_patch_suite, parse_patch_suite
from robustseg.patches.files import export_print_png, printed_width_cm, read_patch_png
from robustseg.patches.physical import COMPONENTS, PhysicalEOT, draw, render, stack
from robustseg.patches.printability import (DEFAULT_COLOURS, load_colours, non_printability, quantise,
                                            total_variation)
from robustseg.patches.sticker import physical_scene
from robustseg.patches.universal import train_universal

N_TRAIN = PATCH_N_TRAIN
PRINT_WIDTH_CM = 10.0


def physical_cfg(**physical) -> dict:
    cfg = copy.deepcopy(load_patch_suite("physical").cfg)
    cfg["baselines"] = ["random"]
    cfg["physical"].update(physical)
    return cfg


# ------------------------------------------------------------------------------------------- printability
def test_quantised_patch_uses_only_printable_colours_in_8_bits():
    patch = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    printed = quantise(patch, DEFAULT_COLOURS)
    pixels = printed.reshape(3, -1).T
    allowed = (DEFAULT_COLOURS * 255).round() / 255
    assert all(bool(((allowed - p).abs() < 1e-6).all(1).any()) for p in pixels)
    assert torch.equal((printed * 255).round() / 255, printed)
    assert float(non_printability(printed, DEFAULT_COLOURS)) < 0.005 < float(non_printability(patch, DEFAULT_COLOURS))
    assert float(total_variation(torch.full((3, 8, 8), 0.3))) == 0 < float(total_variation(patch))


def _nps_all_colours_at_once(patch, colours):
    """NPS as first written: a (K,3,h,w) difference of the patch to every colour, then the minimum."""
    c = colours.to(patch)[:, :, None, None]
    return ((patch[None] - c) ** 2).sum(1).add(1e-12).sqrt().min(0).values.mean()


@pytest.mark.parametrize("elements", [2 ** 24, 3 * 16 * 16 * 5])  # one chunk; chunks of 5 colours
def test_nps_in_colour_chunks_equals_all_colours_at_once(elements, monkeypatch):
    """The chunked nearest-colour search gives the very value and gradient of the (K,3,h,w) formula, ties included
    (pixels exactly on a colour; colours listed twice, a chunk apart), and never holds more than its budget."""
    import robustseg.patches.printability as pr
    monkeypatch.setattr(pr, "DISTANCE_ELEMENTS", elements)
    g = torch.Generator().manual_seed(4)
    colours = torch.cat([DEFAULT_COLOURS, torch.rand(20, 3, generator=g), DEFAULT_COLOURS[:6]])
    base = torch.rand(3, 16, 16, generator=g)
    base[:, :4] = colours[3][:, None, None]  # on colour 3, which colour 47 repeats

    def value_and_grad(nps):
        patch = base.clone().requires_grad_(True)
        value = nps(patch, colours)
        value.backward()
        return value.detach(), patch.grad
    sizes = []
    distances = pr._distances
    monkeypatch.setattr(pr, "_distances", lambda p, c: sizes.append(c.shape[0] * p.numel()) or distances(p, c))
    want, got = value_and_grad(_nps_all_colours_at_once), value_and_grad(non_printability)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert 0 < max(sizes) <= elements
    nearest = pr.nearest_colour(base, colours)
    assert torch.equal(nearest, distances(base, colours).argmin(0)) and bool((nearest[:4] == 3).all())
    assert torch.equal(quantise(base, colours), (colours[nearest].permute(2, 0, 1) * 255).round() / 255)


def test_colours_from_a_csv_and_one_line_errors_for_bad_ones(tmp_path):
    good = tmp_path / "chart.csv"
    good.write_text("r,g,b\n250,10,10\n\n12,200,30\n")
    assert torch.allclose(load_colours(good), torch.tensor([[250, 10, 10], [12, 200, 30]]) / 255)
    for text, expected in (("r,g,b\n1,2\n", "line 2: expected three numbers"), ("1,2,300\n", "must be in 0-255"),
                           ("r,g,b\n", "no r,g,b rows"), ("1,x,3\n", "line 1: expected three numbers")):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(RobustsegError, match=expected):
            load_colours(bad)
    with pytest.raises(RobustsegError, match="no such file"):
        load_colours(tmp_path / "missing.csv")


def test_a_colours_csv_in_0_1_is_refused_not_read_as_near_black(tmp_path):
    """0-1 values would be divided by 255 like the rest: a chart of bright colours read as near-black ones."""
    for text in ("r,g,b\n0.5,0.2,0.9\n0.1,1,0.3\n", "1,0,0\n0,1,0\n0,0,1\n"):
        (tmp_path / "unit.csv").write_text(text)
        with pytest.raises(RobustsegError, match="every value is at most 1.*holds r,g,b in 0-255") as e:
            load_colours(tmp_path / "unit.csv")
        assert len(str(e.value).splitlines()) == 1
    (tmp_path / "measured.csv").write_text("127.4,0.5,250\n")  # fractional 0-255 values: a chart's averaged pixels
    assert torch.allclose(load_colours(tmp_path / "measured.csv"), torch.tensor([[127.4, 0.5, 250]]) / 255)


def test_a_colours_csv_over_the_limit_is_refused_at_the_first_colour_too_many(tmp_path):
    """Reading stops at colour MAX_COLOURS + 1: the bad row after it (standing in for the rest of a huge file) is
    never read; reading to the end first named that row instead."""
    from robustseg.patches.printability import MAX_COLOURS
    big = tmp_path / "big.csv"
    big.write_bytes(b"r,g,b\n" + b"10,20,30\n" * (MAX_COLOURS + 1) + b"1,2\n")
    with pytest.raises(RobustsegError, match=f"more than {MAX_COLOURS} colours \\(line {MAX_COLOURS + 2}\\)"):
        load_colours(big)
    big.write_bytes(b"10,20,30\n" * MAX_COLOURS)  # exactly the limit is fine
    assert load_colours(big).shape == (MAX_COLOURS, 3)


def test_colours_csv_edge_cases(tmp_path):
    """A spreadsheet's byte-order mark does not turn the first colour into a dropped "header"; NaN, an empty file,
    a binary file and a chart of a million colours are one-line errors."""
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf10,20,30\n40,50,60\n")
    assert torch.allclose(load_colours(bom), torch.tensor([[10, 20, 30], [40, 50, 60]]) / 255)
    from robustseg.patches.printability import MAX_COLOURS
    cases = {"nan.csv": (b"nan,1,2\n", "must be in 0-255"), "empty.csv": (b"", "no r,g,b rows"),
             "bin.csv": (b"\xff\xfe\x00\x81", "not a text CSV"),
             "many.csv": (b"1,2,3\n" * (MAX_COLOURS + 1), f"at most {MAX_COLOURS}")}
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(RobustsegError, match=expected) as e:
            load_colours(tmp_path / name)
        assert len(str(e.value).splitlines()) == 1


def test_nps_term_lowers_the_optimised_patch_nps(lm, splits):
    (tr, tri), _ = splits
    ds = CocoDataset(tr, tri, category_ids=lm.category_ids, limit=4)
    cfg = physical_cfg(steps=8, batch_size=1, lr=0.1, tv_weight=0.0)["physical"]
    eot = PhysicalEOT()

    def train(nps_weight: float) -> torch.Tensor:
        def penalty(p):
            return nps_weight * non_printability(p, DEFAULT_COLOURS)
        patch, _ = train_universal(lm.model, lambda i: (ds.load_image(i), ds.target(i)), len(ds), cfg, None, "gt",
                                   None, lm.num_classes, None, 3, scene=physical_scene(cfg, eot), penalty=penalty,
                                   tag="physical", progress=False)
        return patch
    without, with_nps = (float(non_printability(train(w), DEFAULT_COLOURS)) for w in (0.0, 5.0))
    assert with_nps < without - 0.03, (with_nps, without)  # measured 0.071 against 0.169 (random start 0.176)


# --------------------------------------------------------------------------------------- viewing conditions
def _conditions(images, seed=0, side=24.0):
    g = torch.Generator().manual_seed(seed)
    return stack([draw(g, (40.0, 44.0, side), x.shape[1:], PhysicalEOT()) for x in images])


def test_conditions_are_batched_seeded_and_each_applies_alone():
    images = [torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    patch = torch.rand(3, 16, 16, requires_grad=True)
    c = _conditions(images)
    together = render(images, patch, c)
    sum(x.sum() for x in together).backward()
    assert patch.grad is not None and float(patch.grad.abs().sum()) > 0  # differentiable through warp, blur, JPEG
    assert torch.allclose(together[1], render([images[1]], patch, c.select([1]))[0],
                          atol=1e-5)  # an image's photo does not depend on the batch it is in
    assert all(torch.equal(a, b) for a, b in zip(render(images, patch, _conditions(images)), together))
    flat = render(images, torch.ones(3, 16, 16), c.only([]))  # no condition: an upright square, the site's side
    changed = (flat[0] - images[0]).abs().sum(0) > 1e-5  # (float rounding at the exact outline)
    assert int(changed.sum()) == 24 * 24 and bool(changed[32:56, 28:52].all())
    tilted = render(images, torch.ones(3, 16, 16), c.only(["perspective"]))
    assert not torch.equal(tilted[0], flat[0]) and torch.equal(images[0][:, :10], tilted[0][:, :10])
    for comp in COMPONENTS:  # every component changes the photo of some image by itself
        alone = render(images, patch.detach(), c.only([comp]))
        flat_patch = render(images, patch.detach(), c.only([]))
        assert any(not torch.allclose(a, b) for a, b in zip(alone, flat_patch)), comp


def test_selecting_images_takes_each_of_their_fields_and_keeps_the_batchs():
    from dataclasses import fields
    images = [torch.rand(3, 32, 32) for _ in range(3)]
    c = _conditions(images).only(["blur"])
    picked = c.select([2, 0])
    for f in fields(c):
        whole, part = getattr(c, f.name), getattr(picked, f.name)
        if torch.is_tensor(whole) or isinstance(whole, list):
            assert all(torch.equal(torch.as_tensor(part[j]), torch.as_tensor(whole[i])) for j, i in enumerate([2, 0]))
            assert len(part) == 2, f.name
        else:
            assert part == whole, f.name


def test_an_image_blurs_the_same_alone_or_beside_a_heavier_blur():
    """The blur kernel's size comes from the EOT's blur range, not from the largest sigma in the batch: a photo was
    once blurred with a kernel sized by its batchmate's sigma, so it changed with --batch-size."""
    eot = PhysicalEOT(blur=3.0)
    checks = (torch.arange(96)[:, None] // 4 + torch.arange(96)[None] // 4) % 2  # sharp edges everywhere
    noisy = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(2))
    images = [checks.float().expand(3, -1, -1).clone(), noisy]
    g = torch.Generator().manual_seed(0)
    c = stack([{**draw(g, (48.0, 48.0, 24.0), (96, 96), eot), "blur": sigma} for sigma in (1.0, 3.0)]).only(["blur"])
    patch = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    alone, beside = render(images[:1], patch, c.select([0]))[0], render(images, patch, c)[0]
    assert torch.allclose(alone, beside, atol=1e-6, rtol=0), float((alone - beside).abs().max())
    assert not torch.allclose(alone, images[0], atol=0.1)  # it was blurred


def test_the_circle_a_site_keeps_clear_holds_the_tilted_sticker():
    """The pinhole enlarges a tilted sticker's near side: its corners reach beyond the half-diagonal sqrt(2) (the
    circle off-object sites were once kept clear with) up to ``reach(tilt)``, never further."""
    from robustseg.patches.physical import corners, reach
    for tilt in (10.0, 50.0, 75.0):
        g = torch.Generator().manual_seed(int(tilt))
        c = stack([{**draw(g, (0.0, 0.0, 2.0), (4, 4), PhysicalEOT(tilt=tilt)), "scale": 1.0} for _ in range(4000)])
        far = float(corners(c.only(["perspective", "rotation", "scale"])).norm(dim=-1).max())
        assert far <= reach(tilt) + 1e-5 and far > reach(tilt) - 0.01, (tilt, far, reach(tilt))
        assert reach(tilt) > 2 ** 0.5 + 0.01
    assert reach(0.0) == pytest.approx(2 ** 0.5)


def test_sticker_sites_follow_the_placement_rule(splits):
    from robustseg.patches.physical import reach
    from robustseg.patches.sticker import site
    (ann, images), _ = splits
    ds = CocoDataset(ann, images, limit=8)
    eot = PhysicalEOT(tilt=60.0)
    for i in range(len(ds)):
        h, w = ds.load_image(i).shape[1:]
        boxes = ds.target(i)["boxes"]
        for k in range(3):
            g = torch.Generator().manual_seed(10 * i + k)
            (cx, cy, side), held = site(g, h, w, boxes, {"placement": "on-object", "cover": 0.2, "side": 0.25}, eot)
            areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes.tolist()
                     if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]]
            assert held and any(abs(side ** 2 - 0.2 * a) < 1e-3 * a for a in areas)  # 20% of the box it is on
            (cx, cy, side), held = site(g, h, w, boxes, {"placement": "off-object", "cover": 0.2, "side": 0.25}, eot)
            r = side / 2 * reach(eot.tilt)  # the circle around the sticker, whatever its turn and tilt
            assert r <= cx <= w - r and r <= cy <= h - r
            if held:
                assert not any(b[0] - 1 < cx + r and b[2] + 1 > cx - r and b[1] - 1 < cy + r and b[3] + 1 > cy - r
                               for b in boxes.tolist())


def test_an_on_object_sticker_larger_than_the_image_is_centred_on_it():
    """A sticker covering a long thin box can be taller than the image: it is centred along that side (once moved
    to h - r, a centre above the image), and still inside along the other."""
    from robustseg.patches.sticker import on_object
    g = torch.Generator().manual_seed(0)
    for cover in (1.0, 0.5):
        cx, cy, side = on_object(g, 10, 100, [0.0, 0.0, 100.0, 10.0], cover)
        assert side > 10 and cy == 5.0 and side / 2 <= cx <= 100 - side / 2, (cx, cy, side)
    assert on_object(g, 1, 1, [0.0, 0.0, 1.0, 1.0], 0.5) == (0.5, 0.5, 2.0)  # the 2-pixel minimum, both ways


def test_the_warp_stays_finite_where_kornias_gave_nan(splits):
    """A tilted sticker's plane has a horizon; where it crosses the image, kornia's ``warp_perspective`` divides by
    (almost) zero on it: one NaN pixel, far from the sticker, and a NaN patch after the backward pass. Found in
    training (seed 1, step 44, on-object cover 0.5 on this very split); ``warp_sticker`` keeps such pixels off."""
    from kornia.geometry.transform import get_perspective_transform, warp_perspective

    from robustseg.patches.physical import corners, warp_sticker
    from robustseg.patches.sticker import conditions
    from robustseg.utils import derived_seed
    (tr, tri), _ = splits
    ds = CocoDataset(tr, tri)
    g = torch.Generator().manual_seed(derived_seed(1, "physical", 44))
    idx = torch.randperm(len(ds), generator=g)[:2].tolist()
    images, targets = [ds.load_image(i) for i in idx], [ds.target(i) for i in idx]
    cfg = physical_cfg(placement="on-object", cover=0.5)["physical"]
    c = conditions([g] * 2, images, targets, cfg, PhysicalEOT())[0].only(["perspective", "rotation", "scale"])
    src = torch.tensor([[-0.5, -0.5], [31.5, -0.5], [31.5, 31.5], [-0.5, 31.5]])[None].expand(2, -1, -1)
    homography = get_perspective_transform(src, corners(c) - 0.5)
    sticker = torch.ones(2, 3, 32, 32)
    assert torch.isnan(warp_perspective(sticker, homography, (128, 128), align_corners=True)).any()  # the failure
    colour, cover = warp_sticker(sticker, homography, c, 128, 128)
    assert torch.isfinite(colour).all() and torch.isfinite(cover).all() and float(cover.sum()) > 0


def test_a_sticker_tilted_towards_its_horizon_shows_nothing_beyond_it():
    """At a steep tilt the plane's horizon crosses the image; only the sticker's own quad changes, and the
    gradient stays finite."""
    from robustseg.patches.physical import corners
    image = torch.zeros(3, 128, 128)
    patch = torch.ones(3, 16, 16, requires_grad=True)
    c = stack([{**draw(torch.Generator().manual_seed(s), (64.0, 64.0, 40.0), (128, 128), PhysicalEOT()),
                "tilt": 1.45, "tilt_axis": a, "scale": 1.0} for s, a in ((0, 0.0), (1, 0.7), (2, 2.0))])
    c = c.only(["perspective"])
    photos = render([image] * 3, patch, c)
    sum(p.sum() for p in photos).backward()
    assert torch.isfinite(patch.grad).all()
    for photo, quad in zip((p.detach() for p in photos), corners(c)):
        assert torch.isfinite(photo).all()
        (x0, y0), (x1, y1) = quad.min(0).values.floor().int().tolist(), quad.max(0).values.ceil().int().tolist()
        outside = photo[0].clone()
        outside[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = 0
        assert float(outside.abs().max()) == 0 and float(photo.sum()) > 0


# ------------------------------------------------------------------------------------------ export and apply
@pytest.mark.parametrize("width_cm", [15.0, 4.2])
def test_exported_png_prints_at_the_requested_width_and_reads_back_exactly(width_cm, tmp_path):
    patch = quantise(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)), DEFAULT_COLOURS)
    info = export_print_png(tmp_path / "p.png", patch, width_cm)
    with Image.open(tmp_path / "p.png") as im:
        dpi, width_px = im.info["dpi"][0], im.width
    assert dpi >= 300 and width_px == info["pixels"] and width_px % 32 == 0
    assert abs(width_px / dpi * 2.54 - width_cm) < 0.005
    assert abs(printed_width_cm(tmp_path / "p.png") - width_cm) < 0.005
    back = read_patch_png(tmp_path / "p.png", 32)
    assert torch.allclose(back["patch"], patch, atol=1e-6)  # the printed pixels, not a resampling of them
    for bad in (0, -3.0):
        with pytest.raises(RobustsegError, match="positive number of centimetres"):
            export_print_png(tmp_path / "q.png", patch, bad)


def test_a_wide_print_is_a_bounded_png_at_its_true_width(tmp_path):
    """A 5 m print is not a 59,000-pixel PNG: the export stops at MAX_PNG_SIDE pixels and lowers the DPI, so the
    pHYs width is still the one asked, and it reads back to its pixels."""
    from robustseg.patches.files import MAX_PNG_SIDE
    patch = quantise(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2)), DEFAULT_COLOURS)
    info = export_print_png(tmp_path / "wide.png", patch, 500.0)
    assert info["pixels"] <= MAX_PNG_SIDE and info["pixels"] % 32 == 0 and info["dpi"] < 300
    assert abs(printed_width_cm(tmp_path / "wide.png") / 500.0 - 1) < 5e-4  # pHYs: whole pixels per metre
    assert torch.allclose(read_patch_png(tmp_path / "wide.png", 32)["patch"], patch, atol=1e-6)


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): a decompression bomb's opening."""
    import struct
    import zlib
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_a_file_that_is_not_a_patch_png_is_refused(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    Image.new("RGB", (40, 20)).save(tmp_path / "wide.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "patch.jpg", format="JPEG")
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    Image.new("RGBA", (32, 32), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    Image.fromarray(np.full((32, 32), 60000, np.uint16)).save(tmp_path / "deep.png")  # 16-bit grey: not all white
    _png_header_only(tmp_path / "huge.png", 9000, 9000)  # refused from its header, never decoded
    _png_header_only(tmp_path / "bomb.png", 60000, 60000)  # PIL's own decompression-bomb guard
    for name, expected in (("text.png", "not a readable image"), ("wide.png", "40x20"),
                           ("missing.png", "no such file"), ("patch.jpg", "not a patch PNG"),
                           ("one.png", "1x1"), ("clear.png", "transparent"), ("deep.png", "8-bit RGB"),
                           ("huge.png", "9000x9000"), ("bomb.png", "not a readable image")):
        with pytest.raises(RobustsegError, match=expected) as e:
            read_patch_png(tmp_path / name, 32)
        assert len(str(e.value).splitlines()) == 1
    Image.new("RGBA", (32, 32), (10, 20, 30, 255)).save(tmp_path / "opaque.png")  # an editor's opaque RGBA is fine
    assert torch.allclose(read_patch_png(tmp_path / "opaque.png", 32)["patch"][:, 0, 0],
                          torch.tensor([10, 20, 30]) / 255)


def _png_with_chunk_after_pixels(path, kind: bytes, data: bytes) -> None:
    """A valid 32x32 RGB PNG with one more chunk (correct CRC) between its last IDAT and IEND."""
    import io
    import struct
    import zlib
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(buf, format="PNG")
    png = buf.getvalue()
    end = png.rindex(b"IEND") - 4  # the IEND chunk starts with its 4-byte length
    extra = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(png[:end] + extra + png[end:])


@pytest.mark.parametrize("kind, data, error", [
    (b"zTXt", b"note\x00\x01x\x9c\x03\x00\x00\x00\x00\x01", "SyntaxError"),  # compression method 1, not 0
    (b"iCCP", b"name\x00", "IndexError"),  # the profile's compression byte is missing
])
def test_a_png_broken_after_its_pixels_is_a_one_line_cli_error(kind, data, error, synth_data, tmp_path, capsys):
    """Pillow reads the chunks after IDAT only when decoding, and raises SyntaxError or IndexError (not OSError)
    for a malformed one there: ``--apply`` once printed that traceback."""
    _png_with_chunk_after_pixels(tmp_path / "broken.png", kind, data)
    ann, images = synth_data
    rc = main(["patch", "--suite", "physical", "--data", str(ann), "--images", str(images),
               "--apply", str(tmp_path / "broken.png"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"broken.png: not a readable image ({error})" in err
    assert not (tmp_path / "out").exists()


def test_a_saved_patch_that_is_not_a_square_of_colours_is_refused_at_load(tmp_path):
    """A .pt given to --apply can hold anything: a non-square physical patch (the warp assumes r x r), NaN (once
    clamped to NaN, a NaN photo) or values outside [0,1] (once clamped: a 0-255 patch judged as nearly white)."""
    from robustseg.kinds.patch import Patches
    suite = load_patch_suite("physical")
    square = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    cases = {"wide.pt": ({"patch": square[:, :12], "kind": "physical"}, "a 12x16 patch; a physical patch is square"),
             "nan.pt": ({"patch": square.clone().index_fill_(1, torch.tensor([3]), float("nan")), "kind": "physical"},
                        "non-finite values"),
             "bytes.pt": ({"patch": square * 255, "kind": "universal"}, "values span \\[0.*, 25.*\\]"),
             "negative.pt": (square - 0.5, "values span \\[-0.*\\]; a patch holds colours in \\[0, 1\\]")}
    for name, (saved, expected) in cases.items():
        torch.save(saved, tmp_path / name)
        with pytest.raises(RobustsegError, match=expected) as e:
            Patches(suite, apply=tmp_path / name)
        assert len(str(e.value).splitlines()) == 1 and name in str(e.value)
    torch.save({"patch": square, "kind": "physical"}, tmp_path / "good.pt")
    assert torch.equal(Patches(suite, apply=tmp_path / "good.pt").physical.applied["patch"], square)


def test_patches_csv_rows_of_a_point_without_image_rows_are_nan_not_a_crash():
    """A point with no per-image rows (every image failed) gets NaN area and policy columns: np.max([]) raised."""
    from types import SimpleNamespace

    from robustseg.kinds import patch_files
    from robustseg.kinds.patch import Patches
    cfg = copy.deepcopy(load_patch_suite("physical").cfg)
    cfg["kinds"], cfg["baselines"] = ["universal", "physical"], ["grey"]
    patches = Patches(parse_patch_suite(cfg, "test"))
    patches.physical.patches = {v: torch.full((3, 8, 8), 0.5) for v in patches.physical.variants}
    patches.variants = {"meta": {"side": 0.2}, "history": []}
    ap = {"bbox": {"AP": 0.5}, "segm": {"AP": 0.4}}
    scored = SimpleNamespace(evals=dict.fromkeys(["clean", *(p.key for p in patches.points(None))], ap))
    rows = patch_files.patches_rows(patches, None, scored, [], []) + patches.physical.rows(scored, [])
    assert len(rows) == 2 + 3 * len(patches.physical.components)
    for row in rows:
        assert row["images"] == 0 and row["bbox_drop"] == 0
        assert np.isnan([row["area_fraction"], row["area_fraction_max"], row["policy_held"]]).all()


def test_a_batch_measures_the_sticker_areas_once_per_view(monkeypatch):
    """patch_images areas: one area_fractions over the batch per view (it was once called per image, each call
    for the whole batch), each image's fraction of its own size, as measured alone."""
    from types import SimpleNamespace

    import robustseg.kinds.patch_physical as kind
    cfg = physical_cfg(placement="anywhere", components=["none", "scale"])
    physical = kind.PhysicalPatch(parse_patch_suite(cfg, "test"))
    physical.patches = {v: torch.full((3, 8, 8), 0.5) for v in physical.variants}
    images = [torch.rand(3, 48, 64), torch.rand(3, 48, 64), torch.rand(3, 40, 40)]
    batch = SimpleNamespace(ids=[1, 2, 3], images=images, progress=lambda *a: None,
                            targets=[{"boxes": torch.zeros(0, 4)}] * 3)
    calls = []
    real = kind.area_fractions
    monkeypatch.setattr(kind, "area_fractions", lambda c, sizes: calls.append(c) or real(c, sizes))
    out = physical.work(SimpleNamespace(seed=0), batch, lambda ctx, xs, ids: None, lambda *a: None)
    assert len(calls) == len(physical.components)
    for c in calls:
        alone = [float(real(c.select([i]), [x.shape[1:]])[0]) for i, x in enumerate(images)]
        view = "all" if c.active == frozenset(COMPONENTS) else next(iter(c.active), "none")
        got = [r["area"] for r in out.rows["patch_images"] if r["point"] == physical.key("", view)]
        assert got == alone and 0 < min(got)


# ------------------------------------------------------------------------------ on the shipped model, end to end
# The EOT-trained sticker and its twin trained without perspective: same seed, same sites and conditions.
E2E = dict(placement="off-object", side=0.3, steps=60, batch_size=2, lr=0.1, train_images=N_TRAIN,
           nps_weight=0.1, tv_weight=0.1, components=["none", "perspective"])
TILT = 75.0  # steeper than the default 50: what perspective costs shows more clearly
# bbox-AP drop of the print-quantised sticker beyond the random sticker's, under all conditions, on this seed and
# split; over 6 seeds on 64 held-out images 0.035 [0.021, 0.050], 0.059 for seed 1 (benchmarks/physical_margin.py)
MARGIN = 0.05


def _run(lm, splits, out, **physical):
    (tr, tri), (ev, evi) = splits
    cfg = physical_cfg(**{**E2E, **physical})
    cfg["physical-eot"]["tilt"] = TILT
    suite = parse_patch_suite(cfg, "test")
    return run_patches(lm, suite, ev, evi, train_data=tr, train_images=tri, out=out, seed=1, progress=False,
                       bootstrap=20, print_width_cm=PRINT_WIDTH_CM)


@pytest.fixture(scope="module")
def physical_run(lm, splits, tmp_path_factory):
    res = _run(lm, splits, tmp_path_factory.mktemp("physical_runs") / "eot")
    return res.out, res.metrics


@pytest.fixture(scope="module")
def flat_run(lm, splits, tmp_path_factory):
    res = _run(lm, splits, tmp_path_factory.mktemp("physical_runs") / "no-perspective",
               train_eot=[c for c in COMPONENTS if c != "perspective"])
    return res.out, res.metrics


def test_printable_eot_sticker_beats_a_random_one_under_the_test_time_eot(physical_run):
    out, df = physical_run
    clean = metric(df, "clean")
    drop = {p: clean - metric(df, p) for p in ("patch-physical", "patch-physical-print", "patch-physical-random")}
    assert drop["patch-physical-print"] >= drop["patch-physical-random"] + MARGIN, drop
    rows = df[df.attack == "patch-physical-print"]
    assert set(rows.kind) == {"patch"} and set(rows.view) == {"all", "none", "perspective"}
    assert rows.eps.isna().all() and (rows.patch_area > 0).all() and (rows.patch_area <= 0.3 ** 2 * 1.2).all()
    pc = pd.read_csv(out / "patches.csv").set_index("point")
    assert pc.loc["patch-physical-print", "nps"] < 0.005 < pc.loc["patch-physical", "nps"]
    assert pc.loc["patch-physical", "tv"] < pc.loc["patch-physical-random", "tv"]  # smoothness was optimised
    assert pc.loc["patch-physical-random", "area_fraction"] == pc.loc["patch-physical", "area_fraction"]
    for name in ("physical.png", "physical-print.png"):
        assert abs(printed_width_cm(out / "patches" / name) - PRINT_WIDTH_CM) < 0.005
    info = json.loads((out / "run.json").read_text())
    assert info["physical_export"]["print"]["width_cm"] == PRINT_WIDTH_CM
    assert info["patch"]["suite"]["physical"]["print_width_cm"] == PRINT_WIDTH_CM


def test_metrics_naming_the_viewing_condition_eot_still_read(physical_run, tmp_path):
    """The viewing-condition column was called ``eot`` (like the unrelated --eot N option) before ``view``; a run
    written then reads as a new one, and no metrics.csv carries the old name now."""
    from robustseg.report.rundata import load_run
    from robustseg.results import METRIC_COLUMNS, read_metrics
    out, _ = physical_run
    new = pd.read_csv(out / "metrics.csv")
    assert "view" in new.columns and "eot" not in new.columns
    assert "view" in pd.read_csv(out / "patches.csv").columns
    old = tmp_path / "old"
    old.mkdir()
    header, rest = (out / "metrics.csv").read_text().split("\n", 1)
    assert header.split(",").count("view") == 1
    (old / "metrics.csv").write_text(",".join("eot" if c == "view" else c for c in header.split(",")) + "\n" + rest)
    (old / "run.json").write_text((out / "run.json").read_text())
    df = read_metrics(old)
    assert list(df.columns) == METRIC_COLUMNS
    pd.testing.assert_frame_equal(df, read_metrics(out))
    assert load_run(old).metrics.shape[0] == len(df)


def test_perspective_costs_the_sticker_whether_or_not_it_was_trained_with_it(physical_run, flat_run):
    """How much AP the sticker's effect loses when the sticker is tilted (AP under perspective alone minus AP
    with no viewing condition at the same sites), float patch and print together. Perspective costs both the
    sticker trained with it and its twin trained without it (0.107 and 0.093 here, seed 1, 32 images).

    Which of the two loses more is *not* asserted: one pair cannot tell. Over 12 seeds on 64 images
    (benchmarks/physical_perspective.py, docs/patches.md "Perspective in training") the one trained without it
    loses more on average, by a paired gap whose interval excludes zero, but in a few seeds it loses less, and this
    very pair (seed 1, 32 images) went the other way once off-object sites kept clear of the tilted sticker's
    true reach: a per-seed assertion of the direction would be a coin that mostly lands one way."""
    def lost(df):
        return sum(metric(df, f"{v}.perspective") - metric(df, f"{v}.none")
                   for v in ("patch-physical", "patch-physical-print"))
    with_tilt, without = lost(physical_run[1]), lost(flat_run[1])
    assert with_tilt > 0.03 and without > 0.03, (with_tilt, without)


def test_the_perspective_benchmark_counts_a_rerun_seed_once_with_its_latest_rows(tmp_path, capsys):
    """benchmarks/physical_perspective.py appends to its CSV: seed 2 run again replaces its first run in the
    summary (the pivot once averaged the two)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "physical_perspective.py"
    spec = importlib.util.spec_from_file_location("physical_perspective", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [(1, "all", 0.1), (1, "no-perspective", 0.2), (2, "all", 0.1), (2, "no-perspective", 0.3),
            (2, "all", 0.2), (3, "all", 0.5), (1, "all", 0.1)]  # seed 2 rerun (all); seed 3 unpaired
    pd.DataFrame([{"seed": s, "eval_images": 64, "train_eot": t, "lost": v} for s, t, v in rows]
                 ).to_csv(tmp_path / "p.csv", index=False)
    bench.summarise(tmp_path / "p.csv", 64)
    out = capsys.readouterr().out
    assert "2 seeds, 64 images" in out and "per seed 0.100, 0.100" in out, out


def test_an_exported_patch_applies_to_another_dataset_and_bad_input_is_one_line(physical_run, synth_data, tmp_path,
                                                                             capsys):
    src, _ = physical_run
    ann, images = synth_data
    suite = tmp_path / "apply.toml"
    suite.write_text('kinds = ["physical"]\nbaselines = ["grey"]\n[physical]\ncomponents = ["jpeg"]\n')
    args = ["patch", "--suite", str(suite), "--data", str(ann), "--images", str(images), "--bootstrap", "0"]
    out = tmp_path / "applied"
    assert main([*args, "--apply", str(src / "patches" / "physical-print.png"), "--out", str(out)]) == 0
    df = pd.read_csv(out / "metrics.csv")
    assert {"patch-physical", "patch-physical-print", "patch-physical-grey.jpeg"} <= set(df.point)
    info = json.loads((out / "run.json").read_text())
    assert abs(info["patch"]["applied"]["print_width_cm"] - PRINT_WIDTH_CM) < 0.005
    printed = torch.load(src / "patches" / "physical-print.pt", weights_only=True)["patch"]
    assert torch.allclose(torch.load(out / "patches" / "physical.pt", weights_only=True)["patch"], printed)
    capsys.readouterr()
    (tmp_path / "bad.csv").write_text("r,g,b\n1,2\n")
    (tmp_path / "text.png").write_text("no image")
    for extra, expected in ((["--apply", str(src / "patches" / "physical.png"), "--out", str(out)], "not empty"),
                            (["--apply", str(tmp_path / "text.png")], "not a readable image"),
                            (["--apply", str(tmp_path / "none.png")], "no such file"),
                            (["--print-width-cm", "-2"], "positive number of centimetres"),
                            (["--colours", str(tmp_path / "bad.csv")], "line 2: expected three numbers")):
        assert main([*args, "--out", str(tmp_path / "refused"), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "refused").exists()  # refused before anything was written
    assert main(["patch", "--print-width-cm", "15", "--out", str(tmp_path / "o")]) == 2
    assert "--suite physical" in capsys.readouterr().err


@pytest.mark.parametrize("text, expected", [
    ('[physical]\nplacement = "roof"\n', "[physical] placement must be one of on-object, off-object, anywhere"),
    ("[physical]\nprint_width_cm = 0\n", "[physical] print_width_cm must be a number in (0, 10000]"),
    ('[physical]\ntrain_eot = ["fog"]\n', "[physical] train_eot must be one of"),
    ("[physical-eot]\njpeg = [0, 50]\n", "[physical-eot] jpeg must be a number in [1, 100]"),
    ("[physical-eot]\ntiltt = 3\n", "unknown key 'tiltt' in [physical-eot]"),
])
def test_bad_physical_suite_keys_are_one_line_errors(text, expected, tmp_path):
    from robustseg.errors import SuiteError
    bad = tmp_path / "bad.toml"
    bad.write_text(f'kinds = ["physical"]\n{text}')
    with pytest.raises(SuiteError) as e:
        load_patch_suite(bad)
    assert expected in str(e.value) and len(str(e.value).splitlines()) == 1
