"""A results directory read back from disk (docs/results.md), with the groupings every report part uses."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import RobustsegError

BASELINES = ("clean", "random")
SECTION_KINDS = ("probe", "patch")  # kinds with a section of their own; attack rows form the eps-swept families
_KEY = re.compile(r"^.*?-eps[0-9.]+-s\d+-?(.*?)(?:-?seed\d+)?$")


def finite_or_none(v) -> float | None:
    """A number for the report's cells: NaN, inf and anything not a number (an absent interval) as None."""
    return float(v) if v is not None and isinstance(v, (int, float)) and math.isfinite(v) else None


def variant_of(point_key: str) -> str:
    """What a point key says beyond attack, norm, eps and steps (fixed parameters, losses, objective), e.g.
    ``vanish`` for ``pgd-linf-eps0.031373-s10-vanish``: points differing only in eps/steps form one curve."""
    m = _KEY.match(str(point_key))
    return m.group(1) if m else ""


@dataclass
class RunData:
    path: Path
    info: dict
    metrics: pd.DataFrame
    per_class: pd.DataFrame | None = None
    per_image: pd.DataFrame | None = None
    gradnorms: pd.DataFrame | None = None
    sanity: dict | None = None
    label: str = ""
    seeds: pd.DataFrame | None = None  # under --seeds: every seed's rows (``metrics`` holds seed 0's)

    @property
    def name(self) -> str:
        return self.label or self.path.resolve().name

    def ap(self, iou_type: str, metric: str = "AP") -> pd.DataFrame:
        m = self.metrics
        return m[(m.iou_type == iou_type) & (m.metric == metric)]

    def clean_value(self, iou_type: str, metric: str = "AP") -> float:
        g = self.ap(iou_type, metric)
        return float(g[g.kind == "clean"].value.iloc[0])

    def family(self, attack: str, norm: str, variant: str) -> pd.DataFrame:
        m = self.metrics
        return m[(m.attack == attack) & (m.norm == norm) & (m.variant == variant)]

    def random_rows(self, norm: str) -> pd.DataFrame:
        """The same-norm random baseline; plain (all-loss) random points when there are several kinds."""
        m = self.metrics
        r = m[(m.attack == "random") & (m.norm == norm)]
        return r[r.variant == ""] if (r.variant == "").any() else r.drop_duplicates(["iou_type", "metric", "eps"])

    def attack_rows(self) -> pd.DataFrame:
        """Rows of eps-swept attacks (kind attack), random-noise baselines excluded."""
        m = self.metrics
        return m[(m.kind == "attack") & (m.attack != "random")]

    def families(self) -> list[tuple[str, str, str]]:
        """(attack, norm, variant) of each eps-swept attack family, in the order they appear."""
        r = self.attack_rows()
        return list(dict.fromkeys(zip(r.attack, r.norm, r.variant)))

    def kind_rows(self, kind: str) -> pd.DataFrame:
        return self.metrics[self.metrics.kind == kind]

    def strongest_point(self, attack: str, norm: str, variant: str) -> str:
        """Largest eps, then most steps: where the runner saves example images (examples.example_points)."""
        g = self.family(attack, norm, variant).sort_values(["eps", "steps"], kind="stable")
        return str(g.point.iloc[-1])

    def worst(self, iou_type: str) -> pd.Series | None:
        """The attack point with the lowest AP (clean, random, probes and patches excluded)."""
        g = self.attack_rows()
        g = g[(g.iou_type == iou_type) & (g.metric == "AP")]
        return None if g.empty else g.loc[g.value.idxmin()]


def seed_spread(run: RunData) -> list[dict]:
    """Per point repeated under --seeds: box and mask AP over its seeds (mean, sd, min, max, n)."""
    if run.seeds is None:
        return []
    ap = run.seeds[(run.seeds.metric == "AP") & run.seeds.seed.notna()]
    ap = ap.assign(base=[re.sub(r"-seed\d+$", "", p) for p in ap.point])
    rows = []
    for base, g in ap.groupby("base", sort=False):
        if g.seed.nunique() < 2:
            continue
        row = {"point": base, "n": int(g.seed.nunique())}
        for t in ("bbox", "segm"):
            v = g[g.iou_type == t].value.astype(float)
            row.update({f"{t}_mean": v.mean(), f"{t}_sd": v.std(ddof=1), f"{t}_min": v.min(), f"{t}_max": v.max()})
        rows.append(row)
    return rows


def _csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None


def load_run(run_dir: str | Path, label: str = "") -> RunData:
    """A results directory, read strictly: metrics.csv with every column of its schema, run.json, sanity.json."""
    from ..fileio import read_json
    from ..results import read_metrics
    from ..sanity import read_sanity
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.csv").is_file() or not (run_dir / "run.json").is_file():
        raise RobustsegError(f"{run_dir} is not a robustseg results directory (no metrics.csv/run.json)")
    info = read_json(run_dir / "run.json", "run.json")
    if not isinstance(info, dict):
        raise RobustsegError(f"{run_dir}/run.json: not a JSON object")
    metrics = read_metrics(run_dir)
    metrics["variant"] = [variant_of(p) if k == "attack" and a != "random" else ""
                          for p, a, k in zip(metrics.point, metrics.attack, metrics.kind)]
    repeated = metrics.seed.fillna(0) > 0
    seeds = metrics if repeated.any() else None
    metrics = metrics[~repeated].reset_index(drop=True)  # every curve, table and check reads seed 0
    sanity = read_sanity(run_dir / "sanity.json") if (run_dir / "sanity.json").is_file() else None
    return RunData(run_dir, info, metrics, per_class=_csv(run_dir / "per_class.csv"),
                   per_image=_csv(run_dir / "per_image.csv"), gradnorms=_csv(run_dir / "gradnorms.csv"),
                   sanity=sanity, label=label, seeds=seeds)
