"""``robustseg`` command line: a thin layer over the Python API. Errors in user input print one line, exit 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import RobustsegError


def _command(args) -> str:
    """The command line as the user gave it (also when main() is called from Python with argv)."""
    import shlex
    return "robustseg " + shlex.join(args.argv)


def _add_model_data(p: argparse.ArgumentParser, model: bool = True) -> None:
    if model:
        p.add_argument("--model", help="checkpoint file (torchvision state_dict, reference train.py dict or robustseg "
                                       "checkpoint); default: the shipped tiny model")
    p.add_argument("--data", help="COCO instances JSON; default: the built-in synthetic split")
    p.add_argument("--images", help="image folder the JSON's file_names are relative to")
    p.add_argument("--limit", type=int, help="use only the first N images (by image id; default: all of --data, or "
                                             "the command's share of the built-in synthetic split)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--min-size", type=int, help="resize inputs so the short side is this many pixels (overrides the "
                                                "checkpoint's own setting, e.g. 128 for fast CPU runs)")
    p.add_argument("--max-size", type=int, help="cap on the long side after resizing (overrides the checkpoint's)")


def _add_run_opts(p: argparse.ArgumentParser, default_out: str, out: bool = True) -> None:
    """Options of every command that writes a results directory (a run on the engine)."""
    p.add_argument("--category-map", metavar="MAP.json", help="JSON object mapping dataset categories (id or "
                                                               "name) to the model's classes (name or id), when "
                                                               "their label spaces differ (recorded in run.json)")
    p.add_argument("--workers", type=int, default=0, help="processes decoding images ahead of the work "
                                                          "(default 0; 2-4 keep a GPU busy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=200, metavar="N",
                   help="resamples of the images behind every AP's 95%% interval (default 200; 0: no intervals)")
    if out:
        p.add_argument("--out", help=f"results directory (default {default_out})")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--on-error", choices=["skip", "fail"], default="skip",
                   help="an unreadable image: skip it (logged, counted in run.json; default) or stop the run")


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


def _run_options(args) -> dict:
    """The RunOptions every kind takes, from the command line."""
    return {"limit": args.limit, "batch_size": args.batch_size, "device": args.device, "seed": args.seed,
            "on_error": getattr(args, "on_error", "skip"), "amp": getattr(args, "amp", None),
            "workers": getattr(args, "workers", 0), "command": _command(args),
            "category_map": getattr(args, "category_map", None), "bootstrap": getattr(args, "bootstrap", 200)}


def _report(res, files: str) -> int:
    if res is None:  # a torchrun worker other than rank 0: rank 0 merges, evaluates and reports
        return 0
    print(res.summary())
    print(f"results: {res.out}/ ({files})")
    return 0


def cmd_synth(args) -> int:
    from .data.synth import generate
    path = generate(args.out, args.n, seed=args.seed, size=args.size, fill=args.fill, cue_conflict=args.cue_conflict,
                    shape_mode=args.shape_mode, progress=True)
    print(f"wrote {args.n} images and {path}")
    return 0


def cmd_eval(args) -> int:
    from .api import evaluate_model
    if bool(args.data) != bool(args.images):
        raise RobustsegError("--data and --images go together")
    res = evaluate_model(_model_arg(args), args.data, args.images, limit=args.limit, device=args.device,
                         batch_size=args.batch_size, out=args.out)
    print(f"{'':6}{'AP':>7}{'AP50':>7}{'AP75':>7}{'APs':>7}{'APm':>7}{'APl':>7}")
    for t in ("bbox", "segm"):
        print(f"{t:6}" + "".join(f"{res[t][m]:7.3f}" for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")))
    if args.out:
        print(f"predictions and metrics written to {args.out}")
    return 0


def cmd_train(args) -> int:
    from .training import TrainConfig, train
    from .utils import parse_eps, parse_kv
    if not args.data and not args.images:
        raise RobustsegError("train needs --data ANN.json --images DIR (make synthetic data with "
                             "'robustseg data synth')")
    out = Path(args.out)  # missing_ok below: under torchrun every process gets there
    if args.force and not args.resume:
        out.unlink(missing_ok=True)
    cfg = TrainConfig(data=args.data, images=args.images, out=str(out), arch=args.arch,
                      arch_cfg=parse_kv(args.arch_opt), init=args.init, iters=args.iters, batch_size=args.batch_size,
                      lr=args.lr, warmup=args.warmup, seed=args.seed, ckpt_every=args.ckpt_every, half=args.half,
                      device=args.device, workers=args.workers, command=_command(args),
                      # adversarial fine-tuning, AMP, periodic evaluation (docs/adversarial-training.md)
                      adv=args.adv, eps=parse_eps(args.eps), steps=args.steps, adv_ratio=args.adv_ratio,
                      bn=args.bn, amp=args.amp, eval_every=args.eval_every, eval_data=args.eval_data,
                      eval_images=args.eval_images, eval_limit=args.eval_limit, eval_steps=args.eval_steps)
    train(cfg, resume=args.resume)
    return 0


def cmd_gradnorm(args) -> int:
    """Input-gradient norms per loss component (robustseg/kinds/gradnorm.py)."""
    from .kinds.gradnorm import run_gradnorms
    _check_early(args)
    res = run_gradnorms(_model_arg(args), args.data, args.images, out=args.out, force=args.force,
                        resume=args.resume, adv_eps=args.eps if args.adv else None, adv_steps=args.steps,
                        **_run_options(args))
    return _report(res, "gradnorms.csv, gradnorms_summary.csv, metrics.csv, run.json, report.html")


def cmd_compare(args) -> int:
    """Before/after: the attack sweep and gradient norms on every checkpoint (robustseg/compare.py)."""
    from .compare import compare_checkpoints, headline
    overrides = {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v is not None}
    path = compare_checkpoints(args.checkpoints, args.out, suite=args.suite, data=args.data, images=args.images,
                               force=args.force, resume=args.resume, model_overrides=overrides,
                               corruptions=args.corruptions, severities=args.severities, **_run_options(args))
    print(headline(path))
    print(f"wrote {path} (runs in {path.parent}/<name>/, comparison report in {path.parent}/report/)")
    return 0


def _check_early(args) -> None:
    """Refuse a non-empty --out before loading a model for --min-size/--max-size."""
    from .run.rundir import refuse_early
    refuse_early(args.out, args.force, args.resume)


def cmd_attack(args) -> int:
    from .kinds.attack import run_suite
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
    _check_early(args)
    res = run_suite(_model_arg(args), suite, args.data, args.images, out=args.out, force=args.force,
                    resume=args.resume, checks=args.checks, seeds=args.seeds, eot=args.eot,
                    **_run_options(args))
    return _report(res, "metrics.csv, per_image.csv, predictions/, run.json, report.html")


def cmd_probe(args) -> int:
    from .kinds.probe import run_probes
    _check_early(args)
    res = run_probes(_model_arg(args), args.data, args.images, probes=args.probes, config=args.config,
                     out=args.out, force=args.force, resume=args.resume, **_run_options(args))
    return _report(res, "metrics.csv, probes.csv, shape_bias.json, examples/, run.json, report.html")


def cmd_corrupt(args) -> int:
    """Natural corruptions, COCO-C (robustseg/kinds/corruption.py)."""
    from .kinds.corruption import run_corruptions
    _check_early(args)
    res = run_corruptions(_model_arg(args), args.data, args.images, corruptions=args.corruptions,
                          severities=args.severities, examples=args.examples, out=args.out, force=args.force,
                          resume=args.resume, **_run_options(args))
    return _report(res, "metrics.csv, corruptions.csv, corruption_per_class.csv, examples/, run.json, "
                        "report.html")


def cmd_patch(args) -> int:
    """Adversarial patches: universal (EOT), per-image, per-object, with baselines (robustseg/kinds/patch.py)."""
    from .kinds.patch import run_patches
    _check_early(args)
    given = {k: getattr(args, k) for k in ("train_data", "train_images", "apply", "out", "force", "resume",
                                           "print_width_cm", "colours")}
    res = run_patches(_model_arg(args), args.suite, args.data, args.images, **given, **_run_options(args))
    return _report(res, "metrics.csv, patches.csv, patches/, predictions/, run.json, report.html")


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


def _parser_data(sub) -> None:
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


def _parser_eval(sub) -> None:
    e = sub.add_parser("eval", help="COCO bbox/segm AP of a model on a dataset")
    _add_model_data(e)
    e.add_argument("--out", help="also write predictions.json and metrics.json here")
    e.set_defaults(func=cmd_eval)


def _parser_attack(sub) -> None:
    a = sub.add_parser("attack", help="attack a model with a suite (or one attack) and write a results directory")
    _add_model_data(a)
    a.add_argument("--suite", help="suite TOML file or built-in name (quick, standard); default quick")
    a.add_argument("--attack", choices=["fgsm", "pgd", "apgd", "mifgsm", "random"],
                   help="run one attack instead of a suite")
    a.add_argument("--eps", help="with --attack: comma-separated eps in [0,1] pixel units, e.g. 2/255,8/255")
    a.add_argument("--steps", help="with --attack: comma-separated step counts (pgd, mifgsm; apgd: gradient "
                                   "evaluations)")
    a.add_argument("--norm", choices=["linf", "l2"], default="linf")
    a.add_argument("--losses", help="with --attack: losses to maximise, e.g. classifier,mask (default all)")
    _add_run_opts(a, "reports/<model>-<suite>-<time>/")
    a.add_argument("--amp", choices=["bf16", "fp16"], help="mixed precision for the attacks' forward passes "
                                                           "(bf16, or fp16 on CUDA); predictions stay float32")
    a.add_argument("--checks", choices=["full", "quick", "off"], default="quick",
                   help="sanity checks: quick (default; the masking probe only within the attacks' own cost), "
                        "full (always PGD-20 at a moderate eps on 8 images) or off (none: said loudly in the report)")
    a.add_argument("--seeds", type=int, default=1, help="repeat every attack with N random draws; report the spread")
    a.add_argument("--eot", type=int, default=1, help="average each attack gradient over N forward passes (EOT)")
    a.set_defaults(func=cmd_attack)


def _parser_probe(sub) -> None:
    pr = sub.add_parser("probe", help="shape-vs-texture probes (line drawings, silhouettes, texture scramble, "
                                      "cue-conflict shape bias) into a results directory")
    _add_model_data(pr)
    pr.add_argument("--probes", default="all", help="comma-separated: all, line, silhouette, scramble, grayscale, "
                                                    "invert, cue-conflict, or single ones (line-canny, "
                                                    "scramble-8x8, ...); default all")
    pr.add_argument("--config", help="probe options TOML (default attacks/probes.toml, see docs/probes.md)")
    _add_run_opts(pr, "reports/<model>-probes-<time>/")
    pr.set_defaults(func=cmd_probe)


def _parser_corrupt(sub) -> None:
    c = sub.add_parser("corrupt", help="natural corruptions (COCO-C: 15 benchmark + 4 extra, severities 1-5): "
                                       "AP per corruption and severity, P / mPC / rPC")
    _add_model_data(c)
    c.add_argument("--corruptions", default="benchmark",
                   help="benchmark (the 15 of mPC, default), extra (the 4 held-out ones), all, or comma-separated "
                        "names (gaussian_noise,fog,...)")
    c.add_argument("--severities", default="1-5", help="severities 1-5: a range or list (default 1-5)")
    c.add_argument("--examples", type=int, default=1, help="images whose corrupted versions are saved under "
                                                           "examples/ (default 1)")
    _add_run_opts(c, "reports/<model>-corrupt-<time>/")
    c.set_defaults(func=cmd_corrupt)


def _parser_patch(sub) -> None:
    pa = sub.add_parser("patch", help="adversarial patches (universal, per-image, per-object, physical); --apply")
    _add_model_data(pa)
    pa.add_argument("--suite", help="patch suite TOML (default attacks/patch.toml, see docs/patches.md)")
    pa.add_argument("--train-data", help="COCO JSON the patches train on (default: synthetic, seed 777)")
    pa.add_argument("--train-images", help="image folder of --train-data")
    pa.add_argument("--apply", metavar="PATCH", help="evaluate a saved patch instead of training one: a run's "
                                                     "patches/universal.pt, physical.pt or exported physical*.png")
    pa.add_argument("--print-width-cm", type=float, help="physical patch: printed width of the exported PNGs (cm)")
    pa.add_argument("--colours", metavar="CSV", help="physical patch: printable colours, r,g,b rows (0-255)")
    _add_run_opts(pa, "reports/<model>-patch-<time>/")
    pa.set_defaults(func=cmd_patch)


def _parser_report(sub) -> None:
    r = sub.add_parser("report", help="regenerate the HTML report of a results directory, or compare several")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", help="where to write report.html, plots/ and CSVs (default: the run directory; "
                                 "with several runs reports/compare-<time>/)")
    r.add_argument("--force", action="store_true", help="write into a non-empty --out")
    r.set_defaults(func=cmd_report)


def _parser_train(sub) -> None:
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
    t.add_argument("--adv", choices=["pgd", "fgsm-rs"], help="adversarial fine-tuning: PGD (Madry) or FGSM with "
                                                           "random start (Wong et al. 2020)")
    t.add_argument("--eps", default="4/255", help="Linf budget of --adv and of --eval-every's PGD (default 4/255)")
    t.add_argument("--steps", type=int, default=3, help="PGD steps per adversarial example (default 3)")
    t.add_argument("--adv-ratio", type=float, default=0.5, help="fraction of each batch made adversarial")
    t.add_argument("--bn", choices=["batch", "frozen"], help="BatchNorm (default: frozen with --init, else batch)")
    t.add_argument("--amp", choices=["bf16", "fp16"], help="mixed-precision autocast (CUDA only)")
    t.add_argument("--eval-every", type=int, default=0, help="clean + PGD AP every N iterations (0: never)")
    t.add_argument("--eval-data", help="COCO JSON for --eval-every")
    t.add_argument("--eval-images", help="image folder for --eval-every")
    t.add_argument("--eval-limit", type=int, default=16, help="images evaluated by --eval-every (default 16)")
    t.add_argument("--eval-steps", type=int, default=10, help="PGD steps of --eval-every (default 10)")
    t.set_defaults(func=cmd_train)


def _parser_gradnorm(sub) -> None:
    g = sub.add_parser("gradnorm", help="input-gradient norms of each loss component, per image")
    _add_model_data(g)
    g.add_argument("--adv", choices=["pgd"], help="also measure at PGD adversarial images")
    g.add_argument("--eps", default="4/255", help="with --adv: Linf budget (default 4/255)")
    g.add_argument("--steps", type=int, default=10, help="with --adv: PGD steps (default 10)")
    _add_run_opts(g, "reports/<model>-gradnorm-<time>/")
    g.set_defaults(func=cmd_gradnorm)


def _parser_compare(sub) -> None:
    c = sub.add_parser("compare", help="same suite and gradient norms on several checkpoints, side by side")
    c.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint files ('shipped': the shipped "
                                                                  "model); the first is the reference")
    c.add_argument("--suite", help="suite TOML file or built-in name (default quick)")
    _add_model_data(c, model=False)
    c.add_argument("--corruptions", help="also natural corruptions in each run: benchmark, extra, all or names "
                                         "(see robustseg corrupt; default none)")
    c.add_argument("--severities", default="1-5", help="with --corruptions: severities (default 1-5)")
    c.add_argument("--out", required=True, help="results directory: <name>/ per checkpoint, compare.csv, report/")
    _add_run_opts(c, "", out=False)
    c.set_defaults(func=cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="robustseg", description=__doc__)
    ap.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _parser_data(sub)
    _parser_eval(sub)
    _parser_attack(sub)
    _parser_probe(sub)
    _parser_patch(sub)
    _parser_corrupt(sub)
    _parser_report(sub)
    _parser_train(sub)
    _parser_gradnorm(sub)
    _parser_compare(sub)
    from .cli_transfer import add_parser as _parser_transfer
    _parser_transfer(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
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
