"""``robustseg transfer``: the command line of robustseg/transfer.py (kept beside cli.py, which it extends)."""
from __future__ import annotations


def cmd_transfer(args) -> int:
    from .cli import _run_options
    from .transfer import matrix_text, run_transfer
    overrides = {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v is not None}
    path = run_transfer(args.source, args.target, args.out, suite=args.suite, data=args.data, images=args.images,
                        force=args.force, resume=args.resume, model_overrides=overrides, **_run_options(args))
    if path is not None:
        print(matrix_text(path))
        print(f"wrote {path} (runs in {path.parent}/<target>/, comparison report in {path.parent}/report/)")
    return 0


def add_parser(sub) -> None:
    from .cli import _add_model_data, _add_run_opts
    t = sub.add_parser("transfer", help="attacks crafted on each source model, evaluated on each target: a matrix "
                                        "of AP (the diagonal is white-box)")
    t.add_argument("--source", nargs="+", required=True, metavar="CKPT",
                   help="checkpoints the attacks are crafted on ('shipped': the shipped model)")
    t.add_argument("--target", nargs="+", required=True, metavar="CKPT",
                   help="checkpoints the adversarial images are evaluated on (each is also attacked white-box)")
    t.add_argument("--suite", help="suite TOML file or built-in name (default quick; its gradient attacks)")
    _add_model_data(t, model=False)
    t.add_argument("--out", required=True, help="results directory: <target>/ per target, transfer.csv, report/")
    _add_run_opts(t, "", out=False)
    t.set_defaults(func=cmd_transfer)
