"""``robustseg`` command line: a thin layer over the Python API. Errors in user input print one line, exit 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import RobustsegError


def _add_model_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint file (torchvision state_dict, reference train.py dict or robustseg "
                                   "checkpoint); default: the shipped tiny model")
    p.add_argument("--data", help="COCO instances JSON; default: the built-in synthetic split")
    p.add_argument("--images", help="image folder the JSON's file_names are relative to")
    p.add_argument("--limit", type=int, help="use only the first N images (by image id)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--min-size", type=int, help="resize inputs so the short side is this many pixels (overrides the "
                                                "checkpoint's own setting, e.g. 128 for fast CPU runs)")
    p.add_argument("--max-size", type=int, help="cap on the long side after resizing (overrides the checkpoint's)")


def _model_arg(args):
    """The --model path as given, or a LoadedModel when --min-size/--max-size override its input resizing."""
    overrides = {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v is not None}
    for k, v in overrides.items():
        if v < 1:
            raise RobustsegError(f"--{k.replace('_', '-')} must be a positive number of pixels, got {v}")
    if not overrides:
        return args.model
    from .models import load_model
    return load_model(args.model, device=args.device, **overrides)


def _data_paths(args) -> tuple[str, str]:
    if bool(args.data) != bool(args.images):
        raise RobustsegError("--data and --images go together")
    if args.data:
        return args.data, args.images
    from .data.synth import default_split
    ann, images = default_split()
    return str(ann), str(images)


def cmd_synth(args) -> int:
    from .data.synth import generate
    path = generate(args.out, args.n, seed=args.seed, size=args.size, fill=args.fill, cue_conflict=args.cue_conflict,
                    shape_mode=args.shape_mode, progress=True)
    print(f"wrote {args.n} images and {path}")
    return 0


def cmd_eval(args) -> int:
    from .api import evaluate_model
    data, images = _data_paths(args)
    res = evaluate_model(_model_arg(args), data, images, limit=args.limit, device=args.device,
                         batch_size=args.batch_size, out=args.out)
    print(f"{'':6}{'AP':>7}{'AP50':>7}{'AP75':>7}{'APs':>7}{'APm':>7}{'APl':>7}")
    for t in ("bbox", "segm"):
        print(f"{t:6}" + "".join(f"{res[t][m]:7.3f}" for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")))
    if args.out:
        print(f"predictions and metrics written to {args.out}")
    return 0


def cmd_train(args) -> int:
    from .training import TrainConfig, train
    from .utils import parse_kv
    if not args.data and not args.images:
        raise RobustsegError("train needs --data ANN.json --images DIR (make synthetic data with "
                             "'robustseg data synth')")
    out = Path(args.out)
    if out.exists() and args.force and not args.resume:
        out.unlink()
    cfg = TrainConfig(data=args.data, images=args.images, out=str(out), arch=args.arch,
                      arch_cfg=parse_kv(args.arch_opt), init=args.init, iters=args.iters, batch_size=args.batch_size,
                      lr=args.lr, warmup=args.warmup, seed=args.seed, ckpt_every=args.ckpt_every, half=args.half,
                      device=args.device, workers=args.workers, command="robustseg " + " ".join(sys.argv[1:]))
    train(cfg, resume=args.resume)
    return 0


DEFAULT_ATTACK_LIMIT = 40  # images of the built-in synthetic split attacked when no --data is given


def cmd_attack(args) -> int:
    from .runner import run_suite
    from .suites import load_suite, single_attack_suite
    if args.attack:
        if args.suite:
            raise RobustsegError("give either --suite or --attack, not both")
        if not args.eps:
            raise RobustsegError("--attack needs --eps (e.g. --eps 2/255,8/255)")
        suite = single_attack_suite(args.attack, args.eps, args.steps, args.norm, args.losses)
    else:
        if args.eps or args.steps:
            raise RobustsegError("--eps/--steps go with --attack; a suite file sets its own")
        suite = load_suite(args.suite)
    data, images = _data_paths(args)
    limit = args.limit if args.limit is not None or args.data else DEFAULT_ATTACK_LIMIT
    if args.out:  # refuse a non-empty --out before loading a model for --min-size/--max-size
        from .results import prepare_out_dir
        prepare_out_dir(args.out, force=args.force, resume=args.resume, check_only=True)
    res = run_suite(_model_arg(args), suite, data, images, out=args.out, limit=limit, batch_size=args.batch_size,
                    device=args.device, seed=args.seed, force=args.force,
                    resume=args.resume, on_error=args.on_error, command="robustseg " + " ".join(sys.argv[1:]))
    print(res.summary())
    print(f"results: {res.out}/ (metrics.csv, per_image.csv, predictions/, run.json, report.html)")
    return 0


def cmd_report(args) -> int:
    """One RUN_DIR: regenerate its report (into the run, or --out). Several: a comparison report."""
    from .report.rundata import load_run
    for d in args.runs:
        load_run(d)  # a clear error for anything that is not a results directory
    if len(args.runs) == 1:
        from .report.html import write_report
        if args.out:
            from .results import prepare_out_dir
            prepare_out_dir(args.out, force=args.force)
        print(f"wrote {write_report(args.runs[0], args.out)}")
    else:
        from .report.compare import write_comparison
        print(f"wrote {write_comparison(args.runs, args.out, force=args.force)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="robustseg", description=__doc__)
    ap.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = ap.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_cmd", required=True)
    s = data.add_parser("synth", help="write a synthetic COCO dataset of textured shapes")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--fill", choices=["texture", "uniform"], default="texture")
    s.add_argument("--cue-conflict", type=float, default=0.0, help="fraction of objects with another class's texture")
    s.add_argument("--shape-mode", choices=["class", "random"], default="class",
                   help="random: shapes random, class given by texture only")
    s.set_defaults(func=cmd_synth)

    e = sub.add_parser("eval", help="COCO bbox/segm AP of a model on a dataset")
    _add_model_data(e)
    e.add_argument("--out", help="also write predictions.json and metrics.json here")
    e.set_defaults(func=cmd_eval)

    a = sub.add_parser("attack", help="attack a model with a suite (or one attack) and write a results directory")
    _add_model_data(a)
    a.add_argument("--suite", help="suite TOML file or built-in name (quick, standard); default quick")
    a.add_argument("--attack", choices=["fgsm", "pgd", "mifgsm", "random"], help="run one attack instead of a suite")
    a.add_argument("--eps", help="with --attack: comma-separated eps in [0,1] pixel units, e.g. 2/255,8/255")
    a.add_argument("--steps", help="with --attack: comma-separated step counts (pgd, mifgsm)")
    a.add_argument("--norm", choices=["linf", "l2"], default="linf")
    a.add_argument("--losses", help="with --attack: losses to maximise, e.g. classifier,mask (default all)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", help="results directory (default reports/<model>-<suite>-<time>/)")
    a.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    a.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    a.add_argument("--on-error", choices=["skip", "fail"], default="skip",
                   help="an unreadable image: skip it (logged, counted in run.json; default) or stop the run")
    a.set_defaults(func=cmd_attack)

    r = sub.add_parser("report", help="regenerate the HTML report of a results directory, or compare several")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", help="where to write report.html, plots/ and CSVs (default: the run directory; "
                                 "with several runs reports/compare-<time>/)")
    r.add_argument("--force", action="store_true", help="write into a non-empty --out")
    r.set_defaults(func=cmd_report)

    t = sub.add_parser("train", help="train or fine-tune a Mask R-CNN")
    t.add_argument("--data")
    t.add_argument("--images")
    t.add_argument("--out", default="runs/train/model.pt")
    t.add_argument("--arch", default="tiny")
    t.add_argument("--arch-opt", action="append", default=[], help="architecture option KEY=VALUE, repeatable")
    t.add_argument("--init", help="start from this checkpoint (fine-tune)")
    t.add_argument("--iters", type=int, default=3000)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--ckpt-every", type=int, default=500)
    t.add_argument("--half", action="store_true", help="store the final weights in fp16")
    t.add_argument("--device", default="cpu")
    t.add_argument("--workers", type=int, default=0)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--force", action="store_true", help="overwrite an existing --out")
    t.set_defaults(func=cmd_train)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RobustsegError as e:
        if args.debug:
            raise
        print(f"robustseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robustseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
