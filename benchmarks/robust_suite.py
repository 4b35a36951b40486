"""The robust suite against the quick suite on the same images: wall time, their ratio, and robust AP beside
the quick suite's PGD-10 (issue 15's criteria: the robust suite on the first 32 images of the default split
within 30 minutes on 2 CPUs; robust AP below PGD-10's at 4/255, with intervals).

Both runs are the default command lines (`robustseg attack --suite robust|quick --limit N`), one after the
other in this process, with the same seed and images; the other processes' CPU use is logged (OtherLoad).
Also: the gradient evaluations the ensemble spent and those its skipping of emptied images saved (run.json), and
how many images each member won.

    python benchmarks/robust_suite.py                # 32 images, ~25 + 5 min on 2 quiet CPUs
    python benchmarks/robust_suite.py --images 4     # smoke run
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import pandas as pd  # noqa: E402

from robustseg.cli import main as cli  # noqa: E402


def _run(suite: str, images: int, out: Path) -> float:
    t = time.perf_counter()
    if cli(["attack", "--suite", suite, "--limit", str(images), "--out", str(out)]) != 0:
        sys.exit(f"robustseg attack --suite {suite} failed")
    return time.perf_counter() - t


def _ap_rows(out: Path) -> pd.DataFrame:
    m = pd.read_csv(out / "metrics.csv")
    return m[m.metric == "AP"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--keep", help="write the two runs here instead of a temporary folder")
    args = ap.parse_args(argv)
    C.header("robust suite vs quick suite: time, robust AP vs PGD-10", args)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="robust-suite-"))
    times = {s: _run(s, args.images, root / s) for s in ("robust", "quick")}
    print(f"wall: robust {times['robust']:.0f} s ({times['robust'] / 60:.1f} min), quick {times['quick']:.0f} s; "
          f"ratio robust/quick {times['robust'] / times['quick']:.2f}")
    info = json.loads((root / "robust" / "run.json").read_text())
    print(f"ensemble: {info.get('ensemble')}")
    robust, quick = _ap_rows(root / "robust"), _ap_rows(root / "quick")
    for t in ("bbox", "segm"):
        print(f"{t}: eps, robust AP [95% interval], each member's AP, quick suite PGD-10 and FGSM AP [interval]")
        for r in robust[(robust.attack == "robust") & (robust.iou_type == t)].sort_values("eps").itertuples():
            members = robust[(robust.iou_type == t) & (robust.attack == "apgd") & (robust.eps_label == r.eps_label)]
            ref = quick[(quick.iou_type == t) & (quick.eps_label == r.eps_label) & (quick.steps.isin([1, 10]))
                        & quick.attack.isin(["pgd", "fgsm"]) & ~quick.point.str.contains("seed")]
            print(f"  {r.eps_label:>6}  robust {r.value:.3f} [{r.ci_lo:.3f}, {r.ci_hi:.3f}]  members "
                  + " ".join(f"{m.point.split('-s25')[-1] or '-gt'}:{m.value:.3f}" for m in members.itertuples())
                  + "  " + " ".join(f"{q.attack}:{q.value:.3f} [{q.ci_lo:.3f}, {q.ci_hi:.3f}]"
                                     for q in ref.itertuples()))
    won = pd.read_csv(root / "robust" / "ensemble_winners.csv")
    print("images kept per member (bbox selection):")
    print(won[won.iou_type == "bbox"].groupby(["eps_label", "winner"]).size().to_string())
    print(f"runs in {root}")
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
