"""Self-contained HTML report of a results directory, rendered from the files on disk alone."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..fileio import write_text

TEMPLATES = Path(__file__).parent / "templates"


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))


def headline(df: pd.DataFrame) -> list[dict]:
    """Per iou_type: clean AP, worst attacked AP (over non-random points), and the drop."""
    out = []
    ap = df[df.metric == "AP"]
    for t in ("bbox", "segm"):
        g = ap[ap.iou_type == t]
        clean = g[g.attack == "clean"].value.iloc[0]
        adv = g[~g.attack.isin(["clean", "random"])]
        worst = adv.loc[adv.value.idxmin()] if len(adv) else None
        out.append({"iou_type": t, "clean": clean, "worst": None if worst is None else worst.value,
                    "worst_point": None if worst is None else worst.point,
                    "drop": None if worst is None else clean - worst.value})
    return out


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    run_dir = Path(run_dir)
    df = pd.read_csv(run_dir / "metrics.csv")
    info = json.loads((run_dir / "run.json").read_text())
    table = df[df.metric.isin(["AP", "AP50"])].pivot_table(
        index=["point", "attack", "norm", "eps_label", "steps"], columns=["iou_type", "metric"], values="value",
        sort=False).reset_index()
    rows = []
    for _, r in table.iterrows():
        rows.append({"point": r[("point", "", "")] if ("point", "", "") in r else r.iloc[0],
                     "attack": r.iloc[1], "norm": r.iloc[2], "eps": r.iloc[3], "steps": r.iloc[4],
                     "bbox_ap": r[("bbox", "AP")], "bbox_ap50": r[("bbox", "AP50")],
                     "segm_ap": r[("segm", "AP")], "segm_ap50": r[("segm", "AP50")]})
    html = _env().get_template("report.html.j2").render(info=info, headline=headline(df), rows=rows)
    return write_text(Path(out or run_dir) / "report.html", html)
