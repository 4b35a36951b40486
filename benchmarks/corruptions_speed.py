"""Corrupted images per second: robustseg.corruptions vs the reference imagecorruptions 1.1.2 (shimmed).

Both run in this one process on the same images, single-threaded (torch, OpenCV and the BLAS libraries), paired
and interleaved: every round times robustseg's ``corrupt_batch`` on the whole image set (one batch, as a run
calls it) and the reference's ``corrupt`` on each image in turn, in alternating order. The headline figure is the
median over rounds of the per-round ratio, so load from other processes that drifts between rounds cancels out.

A second ratio, "vs tensors", charges the reference with what a tensor pipeline would have to add to use it:
the float (3,H,W) tensor to a uint8 HWC array and back (robustseg's API takes and returns float tensors; the
reference takes and returns uint8 arrays, so its own timing has no conversion at all).

Image sets: four 480x640 synthetic-shape images (COCO's typical size) and four 128x128 ones (the repo's synthetic
data). Each corruption gets rounds until ``--budget`` seconds are spent on it (at least one, at most
``--rounds``): the reference's glass blur (~9 s per 480x640 image) gets one.

    python benchmarks/corruptions_speed.py                        # all 19 at severity 3, a few minutes
    python benchmarks/corruptions_speed.py --names fog,frost --rounds 9
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch load their thread pools: both contenders get one core

import argparse  # noqa: E402
import csv  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from robustseg.corruptions import ALL, corrupt_batch  # noqa: E402
from robustseg.data.synth import render_image  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "corruptions_speed.csv"
COLUMNS = ("image_set", "corruption", "severity", "rounds", "robustseg_images_per_s", "reference_images_per_s",
           "speedup_median", "speedup_min", "speedup_vs_tensors")


def image_sets(n_large: int, n_small: int) -> dict[str, list[np.ndarray]]:
    """uint8 HWC images: synthetic shapes rendered at 640x640 and cropped to 480x640, and at 128x128."""
    large = [render_image(np.random.default_rng(100 + i), 640)[0][80:560] for i in range(n_large)]
    small = [render_image(np.random.default_rng(200 + i), 128)[0] for i in range(n_small)]
    return {"480x640": large, "128x128": small}


class Pair:
    """One corruption on one image set, both implementations ready to time."""

    def __init__(self, images: list[np.ndarray], name: str, severity: int, reference):
        self.images, self.name, self.severity, self.reference = images, name, severity, reference
        self.tensors = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
        self.seeds = list(range(len(images)))

    def ours(self) -> float:
        t = time.perf_counter()
        corrupt_batch(self.tensors, self.name, self.severity, self.seeds)
        return time.perf_counter() - t

    def theirs(self) -> float:
        t = time.perf_counter()
        for seed, im in zip(self.seeds, self.images):
            self.reference(im, self.name, self.severity, seed)
        return time.perf_counter() - t

    def theirs_from_tensors(self) -> float:
        t = time.perf_counter()
        for seed, x in zip(self.seeds, self.tensors):
            im = (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            torch.from_numpy(self.reference(im, self.name, self.severity, seed)).permute(2, 0, 1).float().div_(255)
        return time.perf_counter() - t

    def warm_up(self) -> None:
        corrupt_batch(self.tensors[:1], self.name, self.severity, [0])
        small = np.ascontiguousarray(self.images[0][:64, :64])  # cheap even for the reference's glass blur
        self.reference(small, self.name, self.severity, 0)


def measure(pair: Pair, max_rounds: int, budget: float, with_tensors: bool) -> dict:
    pair.warm_up()
    ours, theirs, tensors = [], [], []
    start = time.perf_counter()
    while not ours or (len(ours) < max_rounds and time.perf_counter() - start < budget):
        if len(ours) % 2 == 0:  # alternate who goes first
            ours.append(pair.ours())
            theirs.append(pair.theirs())
        else:
            theirs.append(pair.theirs())
            ours.append(pair.ours())
        if with_tensors:
            tensors.append(pair.theirs_from_tensors())
    n = len(pair.images)
    ratios = [t / o for o, t in zip(ours, theirs)]
    return {"rounds": len(ours), "robustseg_images_per_s": n / statistics.median(ours),
            "reference_images_per_s": n / statistics.median(theirs),
            "speedup_median": statistics.median(ratios), "speedup_min": min(ratios),
            "speedup_vs_tensors": statistics.median([t / o for o, t in zip(ours, tensors)]) if tensors else None}


def verdict(rows: list[dict]) -> list[str]:
    """The targets: >= 5x on the reference's five slowest (on 480x640), and never slower anywhere."""
    large = [r for r in rows if r["image_set"] == "480x640"]
    slowest = sorted(large, key=lambda r: r["reference_images_per_s"])[:5]
    lines = [f"reference's slowest five on 480x640: {', '.join(r['corruption'] for r in slowest)}"]
    for r in slowest:
        ok = r["speedup_median"] >= 5
        lines.append(f"  {'PASS' if ok else 'FAIL'} {r['corruption']}: x{r['speedup_median']:.1f} (target >= 5)")
    slower = [f"{r['corruption']} ({r['image_set']}, x{r['speedup_median']:.2f})" for r in rows
              if r["speedup_median"] < 1]
    lines.append("  PASS never slower" if not slower else "  FAIL slower on: " + ", ".join(slower))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--severity", type=int, default=3)
    p.add_argument("--names", default=",".join(ALL), help="comma-separated corruptions (default: all 19)")
    p.add_argument("--rounds", type=int, default=5, help="most paired rounds per corruption and image set")
    p.add_argument("--budget", type=float, default=3.0, help="seconds per corruption and set before stopping")
    p.add_argument("--large", type=int, default=4, help="480x640 images")
    p.add_argument("--small", type=int, default=4, help="128x128 images")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--skip-tensors", default="glass_blur",
                   help="corruptions whose 'vs tensors' timing is skipped (the reference's glass blur takes minutes)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")  # the reference's deprecated calls, once per image
    torch.set_num_threads(1)
    import cv2
    cv2.setNumThreads(1)
    from _imagecorruptions_shim import reference_corrupt

    C.header("corruptions: robustseg vs imagecorruptions 1.1.2", args)
    rows = []
    print(f"{'set':8s} {'corruption':18s} {'rounds':>6s} {'robustseg/s':>12s} {'reference/s':>12s} "
          f"{'speedup':>8s} {'(min)':>6s} {'vs tensors':>10s}", flush=True)
    skip = set(args.skip_tensors.split(","))
    for set_name, images in image_sets(args.large, args.small).items():
        for name in args.names.split(","):
            row = {"image_set": set_name, "corruption": name, "severity": args.severity,
                   **measure(Pair(images, name, args.severity, reference_corrupt), args.rounds, args.budget,
                             name not in skip)}
            rows.append(row)
            vs = row["speedup_vs_tensors"]
            print(f"{set_name:8s} {name:18s} {row['rounds']:6d} {row['robustseg_images_per_s']:12.1f} "
                  f"{row['reference_images_per_s']:12.2f} {row['speedup_median']:8.2f} {row['speedup_min']:6.2f} "
                  f"{'-' if vs is None else f'{vs:.2f}':>10s}", flush=True)
    print("\n".join(verdict(rows)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else "" if v is None else v)
                             for k, v in r.items()})
    print(f"wrote {out}")
    C.footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
