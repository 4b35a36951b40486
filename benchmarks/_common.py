"""Shared helpers of the benchmark scripts: machine/version header, model, synthetic data, timing.

Not part of the package; imported by the scripts in this folder (``python benchmarks/<name>.py``).
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "robustseg" / "weights" / "tiny_shapes.pt"
DATA_ROOT = Path(os.environ.get("ROBUSTSEG_BENCH_DATA", Path("/tmp") / "robustseg-bench"))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_avg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def versions() -> dict[str, str]:
    from importlib import metadata
    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "numpy", "pycocotools", "faster-coco-eval", "adversarial-robustness-toolbox"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        out["robustseg git"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                              capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        pass
    return out


class OtherLoad:
    """CPU used by processes other than this one and its descendants, sampled every few seconds while the
    benchmark runs (the load average cannot tell: it counts the benchmark's own threads)."""

    def __init__(self, every: float = 5.0):
        import threading
        self.every, self.samples = every, []
        self.hz = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _busy() -> int:
        f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)  # user nice system irq softirq steal

    def _own(self) -> int:
        stats = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    raw = (d / "stat").read_text()
                except OSError:
                    continue
                rest = raw[raw.rindex(")") + 2:].split()
                stats[int(d.name)] = (int(rest[1]), sum(int(v) for v in rest[11:15]))  # ppid, u+s+cu+cs
        mine, frontier = set(), {os.getpid()}
        while frontier:
            mine |= frontier
            frontier = {p for p, (pp, _) in stats.items() if pp in frontier and p not in mine}
        return sum(stats[p][1] for p in mine if p in stats)

    def _run(self) -> None:
        import time as _t
        busy, own, t = self._busy(), self._own(), _t.monotonic()
        while not self._stop.wait(self.every):
            b, o, n = self._busy(), self._own(), _t.monotonic()
            self.samples.append(max(0.0, ((b - busy) - (o - own)) / self.hz / (n - t)))
            busy, own, t = b, o, n

    def start(self) -> "OtherLoad":
        if Path("/proc/stat").is_file():
            self._thread.start()
        return self

    def summary(self) -> str:
        self._stop.set()
        if not self.samples:
            return "CPU used by other processes during the run: not measured"
        s = sorted(self.samples)
        return (f"CPU used by other processes during the run: mean {sum(s) / len(s):.2f} cores, "
                f"95th percentile {s[int(0.95 * (len(s) - 1))]:.2f}, max {s[-1]:.2f} over {self.every:.0f}-s windows "
                f"(n={len(s)}; of {os.cpu_count()} logical CPUs)")


_MONITOR: OtherLoad | None = None


def header(title: str, args=None) -> None:
    """Print what a reader needs to judge the figures: machine, load, threads, versions, command."""
    import torch
    print(f"== {title}")
    print(f"command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    if args is not None:
        print(f"options: {vars(args)}")
    print(f"machine: {os.cpu_count()} logical CPUs ({cpu_model()}); torch threads {torch.get_num_threads()}; "
          f"load average at start {load_avg()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    la = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if la > 1.5:
        print(f"WARNING: 1-minute load average {la:.2f}: other processes compete for the CPUs; "
              f"timings are not trustworthy", flush=True)
    global _MONITOR
    _MONITOR = OtherLoad().start()
    sys.stdout.flush()


def footer() -> None:
    print(f"load average at end {load_avg()}")
    if _MONITOR is not None:
        print(_MONITOR.summary())


def model_path(arg: str | None) -> Path:
    p = Path(arg) if arg else SHIPPED
    if not p.is_file():
        sys.exit(f"no model at {p}: pass --model CHECKPOINT (the shipped tiny model is built by the training run)")
    return p


def synth(n: int, seed: int = 777, size: int = 128) -> tuple[Path, Path]:
    """A synthetic COCO set generated once (cached under $ROBUSTSEG_BENCH_DATA or /tmp/robustseg-bench)."""
    from robustseg.data.synth import GENERATOR_VERSION, generate
    root = DATA_ROOT / f"synth-n{n}-s{seed}-px{size}-v{GENERATOR_VERSION}"
    ann = root / "annotations.json"
    if not ann.is_file():
        import shutil
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        generate(tmp, n, seed=seed, size=size)
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    return ann, root / "images"


def load_set(lm, n: int, seed: int = 777, size: int = 128, device: str = "cpu"):
    """(dataset, images, targets) of a synthetic set, images/targets already on ``device``."""
    from robustseg.data.coco import CocoDataset
    ann, imgs = synth(n, seed, size)
    ds = CocoDataset(ann, imgs, category_ids=lm.category_ids)
    images = [ds.load_image(i).to(device) for i in range(len(ds))]
    targets = [{k: v.to(device) if hasattr(v, "to") else v for k, v in ds.target(i).items()} for i in range(len(ds))]
    return ds, images, targets


def chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(s, min(n, s + size))) for s in range(0, n, size)]


def sync(device) -> None:
    import torch
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device="cpu") -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def _busy_ticks() -> int:
    try:
        f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0
    return f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)


def timed_clean(fn, device="cpu") -> tuple[float, float]:
    """(seconds, CPU cores used by *other* processes meanwhile): the machine's busy time minus this process's."""
    hz = os.sysconf("SC_CLK_TCK")
    b0, o0 = _busy_ticks(), os.times()
    t = timed(fn, device)
    b1, o1 = _busy_ticks(), os.times()
    own = (o1.user + o1.system + o1.children_user + o1.children_system) - \
        (o0.user + o0.system + o0.children_user + o0.children_system)
    return t, max(0.0, ((b1 - b0) / hz - own) / t)


QUIET = 0.1  # a run during which other processes used more CPU cores than this (on average) is marked busy


def interleaved(fns: dict, repeats: int, warmup: int, device="cpu", seed: int = 0) -> dict[str, list[float]]:
    """Run every function ``warmup`` + ``repeats`` times, interleaved (ABAB, order rotated each round so slow
    drift of the machine hits every contender alike); the same torch seed before each run. Returns the timings.

    Each run also records the CPU other processes used meanwhile (``OTHER[name]``, in cores); a round in which
    any contender ran next to more than ``QUIET`` cores of other work is flagged, and ``clean_rounds`` keeps the
    rest."""
    import torch
    names = list(fns)
    out: dict[str, list[float]] = {k: [] for k in names}
    for k in names:
        OTHER[k] = []
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        got = {}
        for k in order:
            torch.manual_seed(seed)
            got[k] = timed_clean(fns[k], device)
            if r >= warmup:
                out[k].append(got[k][0])
                OTHER[k].append(got[k][1])
        busy = max(o for _, o in got.values()) > QUIET
        print(f"  round {r + 1}/{warmup + repeats}{' (warm-up)' if r < warmup else ''}: "
              + ", ".join(f"{k} {got[k][0]:.3f}s" for k in names)
              + f"  [other processes: {max(o for _, o in got.values()):.2f} cores{' BUSY' if busy else ''}]",
              flush=True)
    return out


OTHER: dict[str, list[float]] = {}


def clean_rounds(t: dict[str, list[float]]) -> tuple[dict[str, list[float]], int]:
    """The timings of the rounds in which no contender ran next to other work (all rounds if none was quiet)."""
    names = list(t)
    keep = [i for i in range(len(t[names[0]])) if all(OTHER.get(k, [0.0] * (i + 1))[i] <= QUIET for k in names)]
    if not keep:
        return t, 0
    return {k: [v[i] for i in keep] for k, v in t.items()}, len(keep)


def keep_quiet(t: dict[str, list[float]]) -> dict[str, list[float]]:
    c, n = clean_rounds(t)
    total = len(next(iter(t.values())))
    print(f"   {n} of {total} rounds ran with no other work on the machine (<= {QUIET} cores); figures use "
          + ("those rounds" if n else "ALL rounds: none was quiet, NOT TRUSTWORTHY"), flush=True)
    return c


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"median {med(xs):.3f}s (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"
