"""The table of docs/adversarial-training.md, from the run directories benchmarks/adv_recipe.sh writes.

    python benchmarks/adv_table.py runs/adv --out benchmarks/results/adv_recipe_table.csv

Per checkpoint (compare/<name>/ and transfer/<name>/): clean AP, robust (ensemble) AP at 4/255 and 8/255, PGD-10,
Square and transfer AP at 8/255, each with its 95% bootstrap interval over images, bbox and segm; the median
total-loss input-gradient L1 (clean); the sanity verdict and the checks that warned. Prints a Markdown table,
and paired differences between checkpoints (``--paired A B``): A's AP minus B's on the same bootstrap resamples
of the images (eval/bootstrap.py), from the runs' predictions/ (bbox only for robust points: predictions/robust-*
holds the box selection).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pandas as pd

ROBUST = {"4/255": "robust-linf-eps0.015686", "8/255": "robust-linf-eps0.031373"}
PGD10_8, SQUARE_8 = "pgd-linf-eps0.031373-s10", "square-linf-eps0.031373-s50"
ORDER = ("shipped", "clean", "fgsm-batch", "fgsm-frozen", "pgd")


def _ap(m: pd.DataFrame, point: str, iou: str, **sel) -> tuple[float, float, float]:
    rows = m[(m.point == point) & (m.iou_type == iou) & (m.metric == "AP")]
    for k, v in sel.items():
        rows = rows[rows[k] == v]
    if len(rows) != 1:
        return (float("nan"),) * 3
    r = rows.iloc[0]
    return float(r.value), float(r.ci_lo), float(r.ci_hi)


def rows(root: Path) -> list[dict]:
    out = []
    names = [n for n in ORDER if (root / "compare" / n / "metrics.csv").is_file()]
    for name in names:
        run = root / "compare" / name
        m = pd.read_csv(run / "metrics.csv")
        sanity = json.loads((run / "sanity.json").read_text())
        warned = sorted({c["check"] for c in sanity["checks"] if c["verdict"] == "warn"})
        g = pd.read_csv(run / "gradnorms_summary.csv")
        l1 = float(g[(g.condition == "clean") & (g.component == "total")].l1_median.iloc[0])
        row = {"checkpoint": name, "verdict": sanity["verdict"], "warned": " ".join(warned), "grad_l1_total": l1}
        for iou in ("bbox", "segm"):
            cells = {"clean": _ap(m, "clean", iou), "robust_4": _ap(m, ROBUST["4/255"], iou),
                     "robust_8": _ap(m, ROBUST["8/255"], iou), "pgd10_8": _ap(m, PGD10_8, iou),
                     "square_8": _ap(m, SQUARE_8, iou)}
            t = root / "transfer" / name / "metrics.csv"
            if t.is_file():
                tm = pd.read_csv(t)
                cells["transfer_8"] = _ap(tm, f"from-shipped--{PGD10_8}", iou, source="shipped")
            for k, (v, lo, hi) in cells.items():
                row.update({f"{iou}_{k}": v, f"{iou}_{k}_lo": lo, f"{iou}_{k}_hi": hi})
        out.append(row)
    return out


def paired(root: Path, a: str, b: str, limit: int, n_boot: int = 1000) -> list[dict]:
    """A minus B (bbox; clean also segm) at the clean and robust points, paired over the same resampled images."""
    from robustseg.data.coco import CocoDataset
    from robustseg.data.synth import default_split
    from robustseg.eval.bootstrap import bootstrap_drop
    ds = CocoDataset(*default_split(), limit=limit)
    out = []
    for point, ious in (("clean", ("bbox", "segm")), (ROBUST["4/255"], ("bbox",)), (ROBUST["8/255"], ("bbox",))):
        res = [json.loads((root / "compare" / n / "predictions" / f"{point}.json").read_text()) for n in (a, b)]
        for iou in ious:
            d = bootstrap_drop(ds.coco, res[0], res[1], ds.image_ids, iou, n_boot=n_boot, seed=0)  # a - b
            out.append({"a": a, "b": b, "point": point, "iou_type": iou, "diff": d["drop"], "lo": d["lo"],
                        "hi": d["hi"], "n_boot": n_boot})
    return out


def markdown(rs: list[dict], iou: str) -> str:
    cols = [("clean", "clean"), ("robust 4/255", "robust_4"), ("robust 8/255", "robust_8"),
            ("PGD-10 8/255", "pgd10_8"), ("transfer 8/255", "transfer_8"), ("Square 8/255", "square_8")]
    lines = ["| checkpoint | " + " | ".join(c for c, _ in cols) + " | grad L1 | sanity |",
             "|---" * (len(cols) + 3) + "|"]
    for r in rs:
        cells = []
        for _, k in cols:
            v = r.get(f"{iou}_{k}", float("nan"))
            cells.append("—" if v != v else f"{v:.3f} [{r[f'{iou}_{k}_lo']:.3f}, {r[f'{iou}_{k}_hi']:.3f}]")
        sanity = r["verdict"] + (f" ({r['warned']})" if r["warned"] else "")
        lines.append(f"| {r['checkpoint']} | " + " | ".join(cells) + f" | {r['grad_l1_total']:.3g} | {sanity} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the recipe's output directory (compare/ and transfer/ inside)")
    ap.add_argument("--out", type=Path, help="also write the rows as CSV")
    ap.add_argument("--paired", nargs=2, action="append", default=[], metavar=("A", "B"),
                    help="also A's AP minus B's, paired (repeatable)")
    ap.add_argument("--paired-out", type=Path, help="write the paired differences as CSV")
    ap.add_argument("--limit", type=int, default=16, help="images of the default split the runs used (16)")
    args = ap.parse_args()
    rs = rows(args.root)
    if args.out:
        with open(args.out, "w", newline="") as f:
            fields = list(dict.fromkeys(k for r in rs for k in r))  # shipped, the source, has no transfer cells
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rs)
    for iou in ("bbox", "segm"):
        print(f"\n{iou} AP [95% bootstrap interval over images]\n" + markdown(rs, iou))
    diffs = [r for a, b in args.paired for r in paired(args.root, a, b, args.limit)]
    for r in diffs:
        print(f"{r['a']} - {r['b']}  {r['point']:26} {r['iou_type']}: {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]")
    if args.paired_out and diffs:
        with open(args.paired_out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(diffs[0]))
            w.writeheader()
            w.writerows(diffs)


if __name__ == "__main__":
    main()
