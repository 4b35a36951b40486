"""The whole default `robustseg attack` run against its floor, with a per-stage breakdown.

Floor: what the suite's attacks cannot avoid, on the same images and batch size: per batch, every gradient step
of every gradient point as a bare forward+backward (attack_mode, the summed losses, autograd.grad), a query
attack's queries as its own queries (predictions without the mask branch), and one prediction per point plus the clean one. The run is timed as one call of run_suite; its stages come from timing wrappers around
the functions that do them (clean predictions, attacks, predictions of attacked images, per-image objective
measurements, COCO evaluation with bootstrap intervals, the masking probe, the report).
Target (issue 19): run / floor <= 1.15 on 2 CPUs.

The floor is measured before and after the run and their mean taken: on this VM the same floor varies by up to
13% between measurements minutes apart (other processes idle), so one measurement on one side would tilt the ratio.

    python benchmarks/whole_run.py                       # shipped model, 32 images, quick suite
    python benchmarks/whole_run.py --r50                 # FGSM 4/255 on 4 images with a random-init R50-FPN
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import torch  # noqa: E402


class Stages:
    """Wall time spent inside wrapped functions (outermost call only: nested wrapped calls are not counted twice)."""

    def __init__(self):
        self.seconds, self.depth, self.undo = defaultdict(float), 0, []

    def wrap(self, module, name: str, stage: str) -> None:
        real = getattr(module, name)

        def timed(*a, **k):
            if self.depth:
                return real(*a, **k)
            self.depth += 1
            t = time.perf_counter()
            try:
                return real(*a, **k)
            finally:
                self.seconds[stage] += time.perf_counter() - t
                self.depth -= 1
        setattr(module, name, timed)
        self.undo.append((module, name, real))

    def restore(self) -> None:
        for module, name, real in reversed(self.undo):
            setattr(module, name, real)


def floor_seconds(lm, suite, ds, batch_size: int, device) -> float:
    from robustseg.eval.coco_eval import predict
    from robustseg.attacks.square import scores as query_scores
    from robustseg.kinds.attack import NO_GRADIENT, QUERY_ATTACKS
    from robustseg.models.modes import attack_mode
    model = lm.model
    steps = sum(max(p.steps, 1) for p in suite.points if p.attack not in NO_GRADIENT)
    queries = sum(p.steps for p in suite.points if p.attack in QUERY_ATTACKS)  # each a prediction without masks
    preds = 1 + len(suite.points)
    t0 = time.perf_counter()
    for s in range(0, len(ds), batch_size):
        imgs = [ds.load_image(i).to(device) for i in range(s, min(len(ds), s + batch_size))]
        tgts = [{k: v.to(device) if hasattr(v, "to") else v for k, v in ds.target(i).items()}
                for i in range(s, min(len(ds), s + batch_size))]
        with attack_mode(model):
            for _ in range(steps):
                xs = [x.detach().requires_grad_(True) for x in imgs]
                torch.autograd.grad(sum(model(xs, tgts).values()), xs)
        for _ in range(preds):
            predict(model, imgs)
        for _ in range(queries):
            query_scores(model, imgs, tgts)
    C.sync(device)
    return time.perf_counter() - t0


ONE_STEP = {"name": "one-step", "attack": [{"type": "fgsm", "eps": ["4/255"]}]}


def r50_checkpoint() -> Path:
    """A robustseg checkpoint of torchvision's maskrcnn_resnet50_fpn (random weights, seed 0; the synthetic set's
    three classes) at its own input size (800-1333 px), written once to a temporary folder."""
    from robustseg.models.builders import build_model
    from robustseg.models.checkpoint import save_checkpoint
    path = Path(tempfile.gettempdir()) / "robustseg-bench-r50-random.pt"
    if not path.is_file():
        torch.manual_seed(0)
        save_checkpoint(path, build_model("maskrcnn_resnet50_fpn", 4), arch="maskrcnn_resnet50_fpn", arch_cfg={},
                        class_names=["circle", "square", "triangle"], category_ids=[1, 2, 3],
                        meta={"note": "random weights, for timing only (benchmarks/whole_run.py --r50)"})
    return path


def _dataset(args) -> tuple[Path, Path]:
    """The run's COCO file and image folder: --data/--image-dir, or the built-in synthetic split."""
    from robustseg.data.synth import default_split
    return (Path(args.data), Path(args.image_dir)) if args.data else tuple(map(Path, default_split()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the shipped tiny model)")
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--images", type=int, default=32, help="images of the default synthetic split (default 32)")
    ap.add_argument("--data", help="COCO JSON instead of the synthetic split")
    ap.add_argument("--image-dir", help="image folder of --data")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--min-size", type=int)
    ap.add_argument("--max-size", type=int)
    ap.add_argument("--checks", default="quick")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--r50", action="store_true", help="a torchvision maskrcnn_resnet50_fpn with random weights (no "
                    "weight file can be downloaded here; timing only) at its own input size, FGSM 4/255, 4 images")
    args = ap.parse_args(argv)
    if args.r50:
        args.model, args.suite = str(r50_checkpoint()), "one-step (FGSM 4/255)"
        args.images = 4 if args.images == 32 else args.images
    C.header("whole_run: the default robustseg attack against its floor", args)
    import robustseg.kinds.attack as attack_kind
    import robustseg.kinds.attack_checks as checks
    from robustseg.data.coco import CocoDataset
    from robustseg.fileio import read_json
    from robustseg.models.checkpoint import load_model
    from robustseg.run import engine, scoring
    from robustseg.suites import load_suite, parse_suite
    overrides = {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v is not None}
    lm = load_model(C.model_path(args.model), device=args.device, **overrides)
    suite = parse_suite(ONE_STEP, "one-step") if args.r50 else load_suite(args.suite)
    ds = CocoDataset(*_dataset(args), category_ids=lm.category_ids, limit=args.images)
    floor_before = floor_seconds(lm, suite, ds, args.batch_size, torch.device(args.device))

    st = Stages()
    st.wrap(engine, "predict", "clean predictions")
    st.wrap(attack_kind, "build_attack", "attacks (building)")
    st.wrap(attack_kind, "predict", "attacked predictions")
    st.wrap(checks, "per_image_losses", "per-image objective values")
    st.wrap(checks, "masking_probe", "masking probe")
    st.wrap(scoring, "evaluate", "COCO evaluation + intervals")
    st.wrap(engine, "_write_report", "report")
    real_build = attack_kind.build_attack

    def build(point):  # time the attack's run, not its construction
        attack = real_build(point)

        def run(*a, **k):
            t = time.perf_counter()
            try:
                return attack(*a, **k)
            finally:
                st.seconds["attacks"] += time.perf_counter() - t
        return run
    attack_kind.build_attack = build
    out = Path(tempfile.mkdtemp(prefix="whole-run-")) / "run"
    t0 = time.perf_counter()
    res = attack_kind.run_suite(lm, suite, args.data, args.image_dir, out=out, limit=args.images,
                                batch_size=args.batch_size, device=args.device, checks=args.checks, progress=False)
    whole = time.perf_counter() - t0
    attack_kind.build_attack = real_build
    st.restore()
    info = read_json(res.out / "run.json", "run.json")
    assert Path(info["dataset"]["annotations"]).resolve() == _dataset(args)[0].resolve(), "the floor's images"
    floor_after = floor_seconds(lm, suite, ds, args.batch_size, torch.device(args.device))
    floor = (floor_before + floor_after) / 2
    st.seconds.pop("attacks (building)", None)
    print(f"images {len(ds)}, points {len(suite.points)} + clean, batch {args.batch_size}, checks {args.checks}")
    print(f"whole run {whole:.1f} s; floor {floor:.1f} s (before the run {floor_before:.1f} s, after "
          f"{floor_after:.1f} s); ratio {whole / floor:.2f} (against each: {whole / floor_before:.2f}, "
          f"{whole / floor_after:.2f})")
    accounted = sum(st.seconds.values())
    for stage, s in sorted(st.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:30} {s:7.1f} s  {100 * s / whole:5.1f}%")
    print(f"  {'other (loading, files, ...)':30} {whole - accounted:7.1f} s  {100 * (whole - accounted) / whole:5.1f}%")
    sanity_file = res.out / "sanity.json"
    if sanity_file.exists():  # what the checks found, so a cheaper check can be seen to find the same
        report = read_json(sanity_file, "sanity.json")
        print(f"sanity verdict {report['verdict']}")
        for c in report["checks"]:
            if c["check"] in ("moderate_eps", "gradient_fidelity", "deterministic", "gradients") or c["verdict"] != "pass":
                print(f"  {c['check']}: {c['verdict']}: {c['detail']}")
        rose = [f"{c['rose']}/{c['images']}" for c in report["checks"] if c["check"] == "loss_increased" and "rose" in c]
        if rose:
            print("  loss_increased: " + ", ".join(rose))
    shutil.rmtree(out.parent, ignore_errors=True)
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
