"""Scaling of ``robustseg attack``: wall time and peak memory vs number of images (default 100, 400, 1000).

One synthetic set of the largest size is generated once; each size runs ``robustseg attack --attack fgsm --eps
8/255 --limit N`` in a fresh process. Peak RSS is the child's own ``ru_maxrss`` (os.wait4); /proc/<pid>/status is
also sampled to show when in the run memory peaks. Expected: time linear in N, memory flat (predictions stream
to disk during the attack; only the evaluation at the end holds the result lists).

    python benchmarks/scaling.py
    python benchmarks/scaling.py --sizes 100,400,1000 --batch-size 4
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_one(cmd: list[str], log: Path, env: dict) -> dict:
    samples: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                r = rss_mb(p.pid)
                if r is not None:
                    samples.append((time.perf_counter() - t0, r))
                stop.wait(0.25)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        th.join()
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed with exit code {p.returncode}; see {log}:\n" + log.read_text()[-3000:])
    peak_at = max(samples, key=lambda s: s[1])[0] / wall if samples else float("nan")

    def at(frac: float) -> float:
        before = [r for t, r in samples if t <= frac * wall]
        return before[-1] if before else float("nan")

    return {"wall": wall, "maxrss": ru.ru_maxrss / 1024, "peak_at": peak_at,
            "rss_25": at(0.25), "rss_50": at(0.5), "rss_75": at(0.75), "rss_95": at(0.95),
            "user": ru.ru_utime, "sys": ru.ru_stime}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the shipped tiny model)")
    ap.add_argument("--sizes", default="100,400,1000")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", default=str(C.DATA_ROOT / "scaling-runs"))
    args = ap.parse_args(argv)
    C.header("scaling: robustseg attack --attack fgsm --eps 8/255 on growing synthetic sets", args)
    sizes = [int(s) for s in args.sizes.split(",")]
    model = C.model_path(args.model)
    t = time.perf_counter()
    ann, imgs = C.synth(max(sizes), seed=999)
    print(f"synthetic set of {max(sizes)} images: {ann.parent} ({time.perf_counter() - t:.1f}s, generated once)")
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    rows = []
    for n in sizes:
        out = out_root / f"n{n}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "robustseg", "attack", "--model", str(model), "--data", str(ann),
               "--images", str(imgs), "--limit", str(n), "--attack", "fgsm", "--eps", "8/255",
               "--batch-size", str(args.batch_size), "--out", str(out), "--force"]
        print(f"-- {n} images: {' '.join(cmd[1:])}", flush=True)
        r = run_one(cmd, out_root / f"n{n}.log", env)
        r["n"] = n
        rows.append(r)
        print(f"   wall {r['wall']:.1f}s ({r['wall'] / n * 1000:.0f} ms/image), peak RSS {r['maxrss']:.0f} MB "
              f"(peak at {r['peak_at']:.0%} of the run; RSS at 25/50/75/95%: {r['rss_25']:.0f}/{r['rss_50']:.0f}/"
              f"{r['rss_75']:.0f}/{r['rss_95']:.0f} MB)", flush=True)
    print("\nsummary (expected: s/image constant, peak RSS flat)")
    print(f"{'images':>6} {'wall s':>8} {'ms/image':>9} {'x time':>7} {'x images':>8} {'peak RSS MB':>12} "
          f"{'RSS@50% MB':>11} {'peak at':>8}")
    base = rows[0]
    for r in rows:
        print(f"{r['n']:>6} {r['wall']:>8.1f} {r['wall'] / r['n'] * 1000:>9.0f} {r['wall'] / base['wall']:>7.2f} "
              f"{r['n'] / base['n']:>8.1f} {r['maxrss']:>12.0f} {r['rss_50']:>11.0f} {r['peak_at']:>8.0%}")
    if len(rows) > 1:
        import numpy as np
        n = np.array([r["n"] for r in rows], float)
        w = np.array([r["wall"] for r in rows])
        m = np.array([r["maxrss"] for r in rows])
        slope, icpt = np.polyfit(n, w, 1)
        mslope = np.polyfit(n, m, 1)[0]
        print(f"linear fit: wall = {icpt:.1f}s + {slope * 1000:.0f} ms/image (max relative residual "
              f"{np.max(np.abs(w - (icpt + slope * n)) / w):.1%}); peak RSS grows {mslope * 1000:.0f} MB per 1000 images "
              f"({(m[-1] - m[0]) / m[0]:+.1%} from {int(n[0])} to {int(n[-1])} images)")
    C.footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
