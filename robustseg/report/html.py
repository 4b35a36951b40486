"""Self-contained HTML report of a results directory, rendered from the files on disk alone.

``write_report(run_dir)`` writes, beside the run's own files (or into ``out``): report.html (CSS and images
inlined), plots/*.png, summary.csv and mask_quality.csv. Sections appear only when their data exists.
"""
from __future__ import annotations

import base64
import json
import math
import os
import re
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
from jinja2 import ChainableUndefined, Environment, FileSystemLoader

from ..fileio import atomic_write, write_text
from . import corruption as corr
from . import examples as ex
from . import plots
from . import robust
from .rundata import RunData, finite_or_none as _finite, load_run, seed_spread
from .summary import write_summary

TEMPLATES = Path(__file__).parent / "templates"
KIND_SECTIONS = {"probe": ("Probes", ("probes.csv", "shape_bias.csv")), "patch": ("Patches", ("patches.csv",))}
LINKED_FILES = ("summary.csv", "metrics.csv", "per_class.csv", "per_image.csv", "mask_quality.csv",
                "detection_stats.csv", "object_outcomes.csv", "ensemble_winners.csv", "object_accuracy.csv", "gradnorms.csv", "gradnorms_summary.csv",
                "probes.csv", "shape_bias.csv", "decisions.csv", "corruptions.csv", "corruption_per_class.csv",
                "sanity.json", "run.json")


def env() -> Environment:
    # ChainableUndefined: each kind's run.json has its own sections; the template shows blanks for the others
    e = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True,
                    undefined=ChainableUndefined)
    e.filters["num"] = lambda v, fmt="%.3f": "–" if v is None or (isinstance(v, float) and math.isnan(v)) \
        else fmt % v
    e.filters["ci"] = lambda pair: "" if not pair or pair[0] is None or pair[1] is None \
        else f"[{pair[0]:.3f}, {pair[1]:.3f}]"
    return e


def headline(run: RunData) -> list[dict]:
    """Per iou_type: clean AP, worst attacked AP (over eps-swept attacks, not random) and the drop, each with its
    bootstrap interval when the run has one."""
    out = []
    for t in ("bbox", "segm"):
        clean, worst = run.clean_value(t), run.worst(t)
        c = run.ap(t)
        c = c[c.kind == "clean"].iloc[0]
        row = {"iou_type": t, "clean": clean, "clean_ci": (_finite(c.ci_lo), _finite(c.ci_hi)),
               "worst": None, "worst_point": None, "drop": None, "worst_ci": (None, None), "drop_ci": (None, None)}
        if worst is not None:
            row.update(worst=float(worst.value), worst_point=worst.point, drop=clean - float(worst.value),
                       worst_ci=(_finite(worst.ci_lo), _finite(worst.ci_hi)),
                       drop_ci=(_finite(worst.drop_ci_lo), _finite(worst.drop_ci_hi)))
        out.append(row)
    return out


class Images:
    """Figures saved under plots/ and embedded as data: URIs."""

    def __init__(self, folder: Path):
        self.folder = folder

    def add(self, fig, name: str, alt: str) -> dict | None:
        if fig is None:
            return None
        name = re.sub(r"[^A-Za-z0-9._+-]", "_", name)  # point keys of other commands: keep file names safe
        data = plots.save(fig, self.folder / f"{name}.png")
        return {"src": "data:image/png;base64," + base64.b64encode(data).decode(), "alt": alt,
                "file": f"plots/{name}.png"}


def point_rows(run: RunData, points: list[str] | None = None) -> list[dict]:
    """One dict per point: its identity and bbox/segm AP, AP50, AP75 and AP drop."""
    groups = dict(list(run.metrics.groupby("point", sort=False)))
    rows = []
    for key in points if points is not None else groups:
        if key not in groups:
            continue
        g = groups[key]
        r0 = g.iloc[0]
        row = {"point": key, "attack": r0.attack, "norm": r0.norm, "eps": r0.eps_label, "steps": int(r0.steps)}
        for t in ("bbox", "segm"):
            for metric in ("AP", "AP50", "AP75"):
                v = g[(g.iou_type == t) & (g.metric == metric)].value
                row[f"{t}_{metric}"] = float(v.iloc[0]) if len(v) else None
            ap = g[(g.iou_type == t) & (g.metric == "AP")]
            row[f"{t}_drop"] = float(ap.drop_abs.iloc[0]) if len(ap) else None
            for col in ("ci_lo", "ci_hi", "drop_ci_lo", "drop_ci_hi"):
                row[f"{t}_{col}"] = _finite(ap[col].iloc[0]) if len(ap) else None
        rows.append(row)
    return rows


def per_class_rows(run: RunData, point: str) -> list[dict]:
    """Per category: clean and attacked AP at ``point`` and the drop, bbox and segm."""
    pc = run.per_class
    if pc is None or pc.empty:
        return []
    rows: dict = {}
    for r in pc[pc.point.isin(["clean", point])].itertuples():
        row = rows.setdefault(r.category_id, {"category_id": r.category_id, "category": str(r.category)})
        row[f"{r.iou_type}_{'clean' if r.point == 'clean' else 'adv'}"] = float(r.AP)
    for row in rows.values():
        for t in ("bbox", "segm"):
            c, a = row.get(f"{t}_clean"), row.get(f"{t}_adv")
            row[f"{t}_drop"] = None if c is None or a is None else c - a
    return list(rows.values())


def csv_table(path: Path, points: list[str] | None = None) -> dict | None:
    """Any CSV another part of robustseg writes (detection_stats.csv, probes.csv, ...) as a table, optionally
    only the rows of some points."""
    import pandas as pd
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    if points is not None and "point" in df.columns:
        df = df[df.point.isin(points)]
    if df.empty:
        return None
    fmt = lambda v: "" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return {"file": path.name, "columns": [str(c) for c in df.columns],
            "rows": [[fmt(v) for v in r] for r in df.itertuples(index=False)]}


def outcome_table(path: Path, points: list[str]) -> dict | None:
    """object_outcomes.csv at some points: per class and per size (not both), each rate with its interval."""
    import pandas as pd
    if not path.is_file():
        return None
    df = pd.read_csv(path, dtype={"category": str, "size": str, "point": str})
    df["category"] = pd.read_csv(path, usecols=["category"], dtype=str, keep_default_na=False).category  # "NA"
    df = df[df.point.isin(points) & ((df.category == "all") | (df["size"] == "all"))]
    if df.empty:
        return None
    outcomes = ("found", "mislabelled", "mislocalised", "vanished")
    cell = lambda r, o: f"{r[o + '_rate']:.3f}" + ("" if pd.isna(r[o + "_ci_lo"]) else  # noqa: E731
                                                   f" [{r[o + '_ci_lo']:.3f}, {r[o + '_ci_hi']:.3f}]")
    rows = [[r.point, r.category, r["size"], str(int(r.objects)), *[cell(r, o) for o in outcomes]]
            for _, r in df.iterrows()]
    return {"file": path.name, "columns": ["point", "class", "size", "objects", *outcomes], "rows": rows}


def sanity_checks(sanity: dict | None) -> tuple[str | None, list[dict]]:
    """(overall verdict, [{name, status, detail}]) from sanity.json, already read strictly (sanity.read_sanity)."""
    if sanity is None:
        return None, []
    return sanity["verdict"], [{"name": c["check"], "status": c["verdict"], "detail": c["detail"]}
                               for c in sanity["checks"]]


def mask_quality(run: RunData, out_dir: Path) -> tuple[list[dict], str | None]:
    """mask_quality.csv rows (computed now; or the existing file when the annotations are gone) and a note."""
    import pandas as pd

    from ..eval.mask_quality import mask_quality_table
    note = None
    try:
        df = mask_quality_table(run.path)
        meta = run.metrics.drop_duplicates("point")[["point", "attack", "norm", "eps", "eps_label", "steps"]]
        df = meta.merge(df, on="point", how="inner")  # in metrics.csv's order
        atomic_write(out_dir / "mask_quality.csv", lambda f: df.to_csv(f, index=False, float_format="%.6g"))
    except (OSError, KeyError, ValueError) as e:
        existing = run.path / "mask_quality.csv"
        if not existing.is_file():
            return [], f"mask quality not computed: ground truth unavailable ({type(e).__name__}: {e})"
        df = pd.read_csv(existing)
        note = "mask quality read from the saved mask_quality.csv (ground truth unavailable now)"
    df = df.astype(object).where(df.notna(), None)
    return df.to_dict("records"), note


def _dataset(run: RunData):
    """(COCO dict, image root) of the run's dataset, or (None, None) when it is not on disk any more."""
    try:
        ann = Path(run.info["dataset"]["annotations"])
        return json.loads(ann.read_text()), Path(run.info["dataset"]["images"])
    except (OSError, KeyError, ValueError):
        return None, None


def example_panels(run: RunData, point: str, images: Images, dataset) -> tuple[list[dict], str | None]:
    from ..data.images import load_image, safe_join
    coco, root = dataset
    if run.per_image is None or coco is None:
        return [], "examples need per_image.csv and the dataset's images"
    saved = ex.saved_ids(run.path, point)
    picks = ex.choose(run.per_image, point, saved or None)
    infos = {int(i["id"]): i for i in coco["images"]}
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in coco.get("categories", [])}
    thr = float(run.info.get("score_threshold_for_counts", 0.5))
    ids = {iid for _, iid in picks}
    clean_p, adv_p = ex.load_predictions(run.path, "clean", ids), ex.load_predictions(run.path, point, ids)
    g = run.per_image[run.per_image.point == point].set_index("image_id")
    panels = []
    for label, iid in picks:
        try:
            clean = load_image(safe_join(root, infos[iid]["file_name"])).numpy().transpose(1, 2, 0)
        except Exception:  # a missing/unreadable image only costs its example  # noqa: BLE001
            continue
        adv, delta = ex.load_example_images(run.path, point, iid, clean)
        fig = ex.example_figure(clean, adv, delta, clean_p.get(iid, []), adv_p.get(iid, []), names, thr)
        img = images.add(fig, f"example-{point}-{iid}", f"{label} example, image {iid}")
        r = g.loc[iid]
        panels.append({"label": label, "image_id": iid, "file_name": infos[iid]["file_name"], "img": img,
                       "det_clean": int(r.detections_clean), "det_adv": int(r.detections_adv),
                       "loss_clean": float(r.loss_clean), "loss_adv": float(r.loss_adv)})
    note = (f"chosen among the {len(saved)} images whose adversarial version was saved" if saved else
            "adversarial images were not saved for this point: attacked predictions are drawn on the clean image")
    return panels, note


def _links(run_dir: Path, out_dir: Path) -> list[dict]:
    return [{"name": n, "href": quote(os.path.relpath(run_dir / n if (run_dir / n).exists() else out_dir / n,
                                                      out_dir))}
            for n in LINKED_FILES if (run_dir / n).exists() or (out_dir / n).exists()]


def build_context(run: RunData, out_dir: Path) -> dict:
    images = Images(out_dir / "plots")
    dataset = _dataset(run)
    problems: list[str] = []

    def optional(what: str, fn, default):
        """Sections built from optional or other commands' files: a malformed one costs its section (said in
        the report), never the report of a finished run."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            problems.append(f"{what} left out: {type(e).__name__}: {e}")
            return default

    mq_rows, mq_note = optional("mask quality", lambda: mask_quality(run, out_dir), ([], None))
    mq_by_point = {r["point"]: r for r in mq_rows}
    families = []
    for attack, norm, variant in run.families():
        # the family's points, then the same-norm random baselines to compare them with
        fam_points = list(dict.fromkeys([*run.family(attack, norm, variant).point, *run.random_rows(norm).point]))
        strongest = run.strongest_point(attack, norm, variant)
        fid = "-".join(filter(None, (attack, norm, variant)))
        panels, note = optional(f"examples of {fid}", lambda: example_panels(run, strongest, images, dataset),
                                ([], None))
        families.append({
            "id": fid, "attack": attack, "norm": norm, "variant": variant, "strongest": strongest,
            "rows": point_rows(run, ["clean", *fam_points]),
            "mask_quality": [mq_by_point[p] for p in ["clean", *fam_points] if p in mq_by_point],
            "figures": [f for f in (
                images.add(plots.ap_vs_eps([run], attack, norm, variant), f"ap-vs-eps-{fid}", f"AP vs eps, {fid}"),
                images.add(plots.ap_vs_steps([run], attack, norm, variant), f"ap-vs-steps-{fid}",
                           f"AP vs steps, {fid}"),
                optional("per-class plot", lambda: images.add(plots.per_class_drop(run, strongest),
                                                              f"per-class-drop-{fid}",
                                                              f"per-class AP drop at {strongest}"), None)) if f],
            "per_class": optional("per-class table", lambda: per_class_rows(run, strongest), []),
            "stats": optional("detection stats", lambda: csv_table(run.path / "detection_stats.csv", fam_points),
                              None),
            "outcomes": optional("object outcomes", lambda: outcome_table(run.path / "object_outcomes.csv",
                                                                          ["clean", strongest]), None),
            "examples": panels, "examples_note": note})
    special = {}
    for kind, (title, files) in KIND_SECTIONS.items():
        rows = run.kind_rows(kind)
        if len(rows):
            pts = list(dict.fromkeys(rows.point))
            overview = run.path / "examples" / "overview.png"
            special[kind] = {"title": title, "rows": point_rows(run, ["clean", *pts]),
                             "tables": [t for t in (optional(f, lambda: csv_table(run.path / f), None)
                                                    for f in files) if t],
                             "overview": _embed_png(overview) if kind == "probe" and overview.is_file() else None,
                             "figure": optional(title, lambda: images.add(plots.kind_bars([run], kind), f"{kind}-ap",
                                                                          title), None),
                             "extra": _extra_metrics(run, pts),
                             "mask_quality": [mq_by_point[p] for p in ["clean", *pts] if p in mq_by_point]}
    patch_images = [_embed_png(p) for p in sorted((run.path / "patches").glob("*.png"))] \
        if (run.path / "patches").is_dir() else []
    verdict, checks = sanity_checks(run.sanity)
    plan = (run.info.get("attack") or {}).get("checks") if isinstance(run.info.get("attack"), dict) else None
    plan = plan if isinstance(plan, dict) else {}
    objects = optional("object-level attacks", lambda: csv_table(run.path / "object_accuracy.csv"), None)
    return {
        "run": run, "info": run.info, "headline": headline(run), "families": families, "special": special,
        "patch_images": patch_images, "sanity_verdict": verdict, "sanity": checks,
        "sanity_warned": list(dict.fromkeys(c["name"] for c in checks if c["status"] == "warn")),
        "checks_mode": plan.get("mode"), "probe_skipped": (plan.get("probe") or {}).get("skipped"), "object_accuracy": objects,
        "all_rows": point_rows(run), "mask_quality_note": mq_note, "has_mask_quality": bool(mq_rows),
        "gradnorms": optional("gradient norms", lambda: _gradnorm_summary(run), []),
        "gradnorm_figure": optional("gradient-norm plot", lambda: images.add(
            plots.gradnorm_cdfs([run]), "gradnorm-cdf", "input-gradient norm CDFs"), None),
        "seed_spread": optional("spread over seeds", lambda: seed_spread(run), []),
        "robust": optional("robust AP", lambda: robust.section(run, images, optional), None),
        "corruption": optional("corruptions", lambda: corr.section(run, images, _embed_png, optional, csv_table),
                               None),
        "problems": problems, "links": _links(run.path, out_dir),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _extra_metrics(run: RunData, points: list[str]) -> list[dict]:
    """Metrics other than COCO AP that probe/patch rows carry (e.g. shape_bias), as (point, metric, value)."""
    m = run.metrics
    m = m[m.point.isin(points) & ~m.metric.str.startswith("AP")]
    return [{"point": r.point, "iou_type": r.iou_type, "metric": r.metric, "value": float(r.value)}
            for r in m.itertuples()]


def _gradnorm_summary(run: RunData) -> list[dict]:
    df = run.gradnorms
    if df is None or df.empty:
        return []
    by, norms = plots.gradnorm_columns(df)
    return [{"component": name, "n": len(g), **{n: float(np.nanmedian(g[n].astype(float))) for n in norms}}
            for name, _, g in plots.groups_of(df, by)]


def _embed_png(path: Path) -> dict:
    return {"src": "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode(), "alt": path.name,
            "file": f"{path.parent.name}/{path.name}"}


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Regenerate report.html (and plots/, summary.csv, mask_quality.csv) of one results directory."""
    run = load_run(run_dir)
    out_dir = Path(out) if out else run.path
    out_dir.mkdir(parents=True, exist_ok=True)
    write_summary(out_dir / "summary.csv", [run])
    ctx = build_context(run, out_dir)
    html = env().get_template("report.html.j2").render(**ctx)
    return write_text(out_dir / "report.html", html)
