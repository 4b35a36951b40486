"""Up-front checks of a COCO instances dict: every problem is collected, not only the first.

Fatal problems (the file cannot be used as it is) raise one DatasetError listing them all; problems that are
safe to skip (a degenerate box, a too-short polygon) are dropped from the dict and returned as warnings.

Nothing here recurses: every check is a loop, and values quoted in a message go through ``_shown`` (depth- and
length-bounded), so a hostile value nested hundreds of levels deep or megabytes long cannot crash or flood the
message. (``read_coco_json`` also refuses files nested deeper than fileio.MAX_NESTING before they get here.)
"""
from __future__ import annotations

import math
import reprlib
from numbers import Number

from ..errors import DatasetError


def _finite_numbers(xs) -> bool:
    return isinstance(xs, list) and all(isinstance(v, Number) and not isinstance(v, bool) and math.isfinite(v)
                                        for v in xs)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_SHOWN = reprlib.Repr()  # (Python 3.11's Repr takes no keyword arguments)
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxlong = 3, 60, 60, 6, 4, 40


def _known(key, table) -> bool:
    """``key in table``, False for an unhashable key (a list or an object where an id belongs)."""
    try:
        return key in table
    except TypeError:
        return False


def _shown(v) -> str:
    """A short repr of a value from the file for a message: at most 3 levels deep and a few dozen characters."""
    return _SHOWN.repr(v)


def rle_counts(s: str) -> list[int] | None:
    """Run lengths of a compressed COCO RLE string (maskApi.c's rleFrString), or None if malformed.

    pycocotools' C decoder writes run lengths without bounds checks, so a hostile string could write past the
    mask buffer: every RLE is checked here, in Python, before pycocotools sees it.
    """
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << 5 * k
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _check_segmentation(seg, where: str, problems: list[str], w: int, h: int) -> bool:
    """Returns False when the segmentation is unusable (the annotation is then skipped)."""
    if isinstance(seg, list):
        polys = [p for p in seg if _finite_numbers(p) and len(p) >= 6 and len(p) % 2 == 0]
        if len(polys) != len(seg):
            problems.append(f"{where}: polygon with fewer than 3 points, odd length or NaN coordinates")
        if not polys:
            return False
        clipped = [[min(max(float(v), 0.0), float(w if i % 2 == 0 else h)) for i, v in enumerate(p)] for p in polys]
        if clipped != [[float(v) for v in p] for p in polys]:
            problems.append(f"{where}: polygon outside the image, clipped to it")
        seg[:] = clipped
        return True
    if isinstance(seg, dict) and "counts" in seg:
        if seg.get("size") != [h, w]:
            problems.append(f"{where}: RLE size {_shown(seg.get('size'))} is not the image's [height, width] "
                            f"[{h}, {w}]")
            return False
        c = seg["counts"]
        counts = rle_counts(c) if isinstance(c, str) else c if isinstance(c, list) and all(_is_int(v) for v in c) \
            else None
        if counts is None or any(v < 0 for v in counts) or sum(counts) != h * w:
            problems.append(f"{where}: malformed RLE counts (must be run lengths summing to height*width)")
            return False
        return True
    problems.append(f"{where}: segmentation is neither polygons nor RLE")
    return False


def validate_coco(d: dict, name: str = "annotations") -> list[str]:
    fatal: list[str] = []
    skipped: list[str] = []
    images = {}
    for i, im in enumerate(d["images"]):
        if not isinstance(im, dict) or not _is_int(im.get("id")):
            fatal.append(f"images[{i}]: missing integer 'id'")
            continue
        if im["id"] in images:
            fatal.append(f"images[{i}]: duplicate image id {im['id']}")
        if not isinstance(im.get("file_name"), str) or not im.get("file_name"):
            fatal.append(f"image {im['id']}: missing 'file_name'")
        if not (_is_int(im.get("width")) and _is_int(im.get("height")) and im["width"] > 0 and im["height"] > 0):
            fatal.append(f"image {im['id']}: 'width'/'height' must be positive integers")
        images[im["id"]] = im
    cats = set()
    if not isinstance(d["categories"], list):
        fatal.append("'categories' is not a list")
        d["categories"] = []
    for i, c in enumerate(d["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            fatal.append(f"categories[{i}]: missing integer 'id'")
            continue
        if c["id"] in cats:
            fatal.append(f"categories[{i}]: duplicate category id {c['id']}")
        cats.add(c["id"])
    if not isinstance(d["annotations"], list):
        fatal.append("'annotations' is not a list")
        d["annotations"] = []
    ann_ids, keep = set(), []
    for i, a in enumerate(d["annotations"]):
        if not isinstance(a, dict) or not _is_int(a.get("id")):
            fatal.append(f"annotations[{i}]: missing integer 'id'")
            continue
        where = f"annotation {a['id']}"
        if a["id"] in ann_ids:
            fatal.append(f"{where}: duplicate annotation id")
        ann_ids.add(a["id"])
        if not _known(a.get("image_id"), images):
            fatal.append(f"{where}: unknown image_id {_shown(a.get('image_id'))}")
            continue
        if not _known(a.get("category_id"), cats):
            fatal.append(f"{where}: unknown category_id {_shown(a.get('category_id'))}")
            continue
        bbox = a.get("bbox")
        if not (_finite_numbers(bbox) and len(bbox) == 4):
            fatal.append(f"{where}: bbox must be 4 finite numbers [x, y, w, h]")
            continue
        im = images[a["image_id"]]
        if not (_is_int(im.get("width")) and _is_int(im.get("height"))):
            continue  # the image itself is already reported
        x, y, w, h = bbox
        if w <= 0 or h <= 0 or x >= im["width"] or y >= im["height"] or x + w <= 0 or y + h <= 0:
            skipped.append(f"{where}: degenerate or out-of-image bbox {bbox}")
            continue
        if "segmentation" in a and not _check_segmentation(a["segmentation"], where, skipped, int(im["width"]),
                                                           int(im["height"])):
            continue
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(w * h))
        keep.append(a)
    if fatal:
        shown = "; ".join(fatal[:10]) + (f"; ... and {len(fatal) - 10} more" if len(fatal) > 10 else "")
        raise DatasetError(f"{name}: {len(fatal)} problem(s): {shown}")
    d["annotations"] = keep
    if skipped:
        d.setdefault("_robustseg_skipped", []).extend(skipped)
    return skipped
