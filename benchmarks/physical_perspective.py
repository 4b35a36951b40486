"""Perspective in training, paired over seeds: does a sticker trained without perspective EOT lose more of its effect
under perspective than its twin trained with it (docs/patches.md "Perspective in training")?

The setting of tests/test_physical_patches.py (off-object, side 0.3, 60 steps of batch 2, lr 0.1, NPS/TV 0.1, tilt
75, trained on 32 images of a seed-31 split) judged on more images (default 64 of a seed-41 split). Per run seed,
the pair is trained with every component and with every component but perspective; each is judged with no viewing
condition and with perspective alone at the same sites. ``lost`` = AP(perspective) - AP(none), bbox, float + print
summed; ``gap`` = lost(without) - lost(with): the criterion holds when the gap is positive. One CSV row per run is
appended as it finishes (a stopped benchmark keeps what it measured); a seed run again counts with its latest rows.

    nice -n 10 python benchmarks/physical_perspective.py --seeds 1-8 --eval-images 64
"""
from __future__ import annotations

import argparse
import copy
import csv
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from robustseg import run_patches  # noqa: E402
from robustseg.data.synth import generate  # noqa: E402
from robustseg.models import load_model  # noqa: E402
from robustseg.patches import load_patch_suite, parse_patch_suite  # noqa: E402
from robustseg.patches.physical import COMPONENTS  # noqa: E402

SETTING = dict(placement="off-object", side=0.3, steps=60, batch_size=2, lr=0.1, train_images=32, nps_weight=0.1,
               tv_weight=0.1, components=["none", "perspective"])
TILT = 75.0
T_975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 11: 2.20,
         12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13}


def paired_t(values: list[float]) -> tuple[float, float, float]:
    """Mean of per-seed paired differences and its 95% t interval (two or more seeds)."""
    m, s = statistics.mean(values), statistics.stdev(values)
    half = T_975.get(len(values) - 1, 2.0) * s / math.sqrt(len(values))
    return m, m - half, m + half


def paired_line(what: str, values: list[float], n_images: int, positive: str) -> str:
    """One summary line: the mean paired difference ``what`` with its 95% t interval, how often it was positive, and
    every seed's value."""
    m, lo, hi = paired_t(values)
    return (f"{len(values)} seeds, {n_images} images: {what} = {m:.4f} [{lo:.4f}, {hi:.4f}] (95% paired t); "
            f"{positive} {sum(v > 0 for v in values)}/{len(values)}; per seed {', '.join(f'{v:.3f}' for v in values)}")


def suite(without_perspective: bool):
    cfg = copy.deepcopy(load_patch_suite("physical").cfg)
    cfg["baselines"] = []
    cfg["physical"].update(SETTING)
    if without_perspective:
        cfg["physical"]["train_eot"] = [c for c in COMPONENTS if c != "perspective"]
    cfg["physical-eot"]["tilt"] = TILT
    return parse_patch_suite(cfg, "benchmark")


def ap(df: pd.DataFrame, point: str) -> float:
    rows = df[(df.point == point) & (df.iou_type == "bbox") & (df.metric == "AP")]
    return float(rows.value.iloc[0])


def lost(df: pd.DataFrame) -> float:
    return sum(ap(df, f"{v}.perspective") - ap(df, f"{v}.none") for v in ("patch-physical", "patch-physical-print"))


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    ap_ = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap_.add_argument("--seeds", default="1-8")
    ap_.add_argument("--eval-images", type=int, default=64)
    ap_.add_argument("--csv", type=Path, default=C.ROOT / "benchmarks" / "results" / "physical_perspective.csv")
    args = ap_.parse_args()
    torch.set_num_threads(1)
    print(f"load {C.load_avg()}", flush=True)
    lm = load_model(C.SHIPPED)
    root = Path(tempfile.mkdtemp(prefix="phys-persp-"))
    train = generate(root / "train", 32, seed=31)
    held = generate(root / "eval", args.eval_images, seed=41)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    new = not args.csv.is_file()
    with open(args.csv, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["seed", "eval_images", "train_eot", "lost", "all_print", "none_print", "persp_print",
                        "seconds"])
        for seed in seeds(args.seeds):
            for without in (False, True):
                t0 = time.time()
                res = run_patches(lm, suite(without), held, root / "eval" / "images", train_data=train,
                                  train_images=root / "train" / "images", out=root / f"s{seed}-{int(without)}",
                                  seed=seed, progress=False, bootstrap=0)
                df = res.metrics
                row = [seed, args.eval_images, "no-perspective" if without else "all", f"{lost(df):.4f}",
                       f"{ap(df, 'patch-physical-print'):.4f}", f"{ap(df, 'patch-physical-print.none'):.4f}",
                       f"{ap(df, 'patch-physical-print.perspective'):.4f}", f"{time.time() - t0:.0f}"]
                w.writerow(row)
                f.flush()
                print(*row, flush=True)
    summarise(args.csv, args.eval_images)


def paired_gaps(df: pd.DataFrame, n_images: int) -> list[float]:
    """lost(without) - lost(with) per seed judged on ``n_images``. The CSV is appended to, so a seed run again has
    two rows per contender: the latest is kept (averaging them would count that seed twice, half old, half new)."""
    df = df[df.eval_images == n_images].drop_duplicates(["seed", "train_eot"], keep="last")
    pair = df.pivot(index="seed", columns="train_eot", values="lost").reindex(columns=["all", "no-perspective"])
    pair = pair.dropna()
    return (pair["no-perspective"] - pair["all"]).tolist()


def summarise(path: Path, n_images: int) -> None:
    gaps = paired_gaps(pd.read_csv(path), n_images)
    if len(gaps) < 2:
        return
    print(paired_line("gap lost(without) - lost(with)", gaps, n_images, "positive in"))


if __name__ == "__main__":
    main()
