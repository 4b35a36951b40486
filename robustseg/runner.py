"""Run a suite: one clean pass, then every attack point on every batch, then COCO evaluation of each point.

image -> perturbation -> loss -> gradient -> step (attacks/) -> predictions -> COCO eval -> tidy rows -> report.
Predictions stream to ``work/*.jsonl`` while the run goes, so memory stays flat; each point is evaluated once
at the end with the same code as ``robustseg eval``.
"""
from __future__ import annotations

import hashlib
import math
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from .api import batches
from . import sanity
from .attacks import ATTACKS, PGD
from .attacks.base import gradients
from .attacks.foolbox_bridge import object_robust_accuracy
from .attacks.objectives import attack_targets, every_sample, make_objective, mislabel_to, with_amp
from .data.coco import CocoDataset
from .errors import RobustsegError
from .eval.coco_eval import IOU_TYPES, METRICS, evaluate, predict, to_coco_results
from .eval.detection_stats import detection_stats
from .fileio import sha256_file, write_json
from .models.checkpoint import LoadedModel, load_model
from .models.modes import attack_mode
from .report.examples import example_points, save_examples
from .results import (append_jsonl, check_resumable, model_fingerprint, prepare_out_dir, read_jsonl, trim_to_done,
                      versions, write_csv, write_metrics, write_run_json)
from .suites import AttackPoint, Suite, load_suite

SCORE_THRESHOLD = 0.5  # detections counted in per_image.csv
CLEAN = AttackPoint("clean")
PER_IMAGE_COLUMNS = ["image_id", "point", "attack", "norm", "eps", "steps", "objective", "loss_clean", "loss_adv",
                     "detections_clean", "detections_adv", "linf", "l2"]
STATS_COLUMNS = ["point", "attack", "norm", "eps", "steps", "objective", "objects", "vanishing_rate", "fp_per_image",
                 "targeted_success", "mask_iou"]


@dataclass
class RunResult:
    out: Path
    metrics: "object"  # pandas DataFrame of metrics.csv

    def summary(self) -> str:
        return summary_table(self.metrics)


def derived_seed(seed: int, *parts) -> int:
    """A seed for one (point, batch): results do not depend on the order points or batches run in."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()[:7], "big")


def build_attack(point: AttackPoint):
    cls = ATTACKS[point.attack]
    kwargs = {"norm": point.norm, **dict(point.params)}
    if point.attack in ("pgd", "mifgsm"):
        kwargs["steps"] = point.steps
    return cls(**kwargs)


@torch.no_grad()
def per_image_losses(model, images, targets, objective, seed: int) -> list[float]:
    """Each image's objective on its own, with every anchor and proposal in the loss: the detector's samplers
    otherwise draw a random few hundred, and that noise hides the small loss change of a 1/255 attack."""
    out = []
    with attack_mode(model), every_sample(model):
        for i, (x, t) in enumerate(zip(images, targets)):
            torch.manual_seed(derived_seed(seed, "loss", i))
            out.append(float(objective(model, [x], [t])[0]))
    return out


def _count(outputs) -> list[int]:
    return [int((o["scores"] >= SCORE_THRESHOLD).sum()) for o in outputs]


class _Run:
    """What every batch of a sweep needs: model, dataset, plan, where to stream results."""

    def __init__(self, lm: LoadedModel, ds: CocoDataset, points: list[AttackPoint], out: Path, work: Path, device,
                 seed: int, amp: str | None = None):
        self.lm, self.ds, self.points, self.out, self.work, self.device, self.seed, self.amp = \
            lm, ds, points, out, work, device, seed, amp
        self.example_keys = example_points(points)  # a few adversarial images per attack family, for the report

    def load(self, i: int):
        img = self.ds.load_image(i).to(self.device)
        tgt = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self.ds.target(i).items()}
        return img, tgt

    def results(self, outputs, ids) -> list[dict]:
        return [r for o, iid in zip(outputs, ids) for r in to_coco_results(o, iid, self.lm.category_ids)]

    def target_label(self, point: AttackPoint) -> int | None:
        if point.target_class in (None, "next"):
            return None
        return self.lm.class_names.index(point.target_class) + 1

    def batch(self, imgs, tgts, ids, batch_key, bar) -> None:
        """Clean pass + every attack point for one batch; appends to the work files only when all is done."""
        model, lines, rows, grads, fb_rows = self.lm.model, {}, [], [], []
        clean_out = predict(model, imgs)
        lines["clean"] = self.results(clean_out, ids)
        clean_counts = _count(clean_out)
        bar.update(len(ids))
        losses_clean: dict[tuple, list[float]] = {}
        for point in self.points:
            s = derived_seed(self.seed, point.key, batch_key)
            if point.attack == "foolbox":
                fb_rows += self.foolbox(point, imgs, tgts, ids, s)
                bar.update(len(ids))
                continue
            objective = make_objective(point.objective, point.losses)
            targets = attack_targets(point.objective, tgts, clean_out, self.lm.num_classes, self.target_label(point))
            okey = (point.objective, point.losses, point.target_class)
            if okey not in losses_clean:
                losses_clean[okey] = per_image_losses(model, imgs, targets, objective,
                                                      derived_seed(self.seed, batch_key))
                grads += gradient_health(model, imgs, targets, objective, ids, point.objective)
            torch.manual_seed(s)
            adv = build_attack(point)(model, imgs, targets, [point.eps], with_amp(objective, self.amp, self.device),
                                      torch.Generator().manual_seed(s))[0]
            if point.key in self.example_keys:
                save_examples(self.out, point.key, ids, adv, imgs)
            adv_out = predict(model, adv)
            lines[point.key] = self.results(adv_out, ids)
            loss_adv = per_image_losses(model, adv, targets, objective, derived_seed(self.seed, batch_key))
            adv_counts = _count(adv_out)
            for j, iid in enumerate(ids):
                d = (adv[j] - imgs[j]).flatten()
                rows.append({"image_id": iid, "point": point.key, "attack": point.attack, "norm": point.norm,
                             "eps": point.eps, "steps": point.steps, "objective": point.objective,
                             "loss_clean": losses_clean[okey][j], "loss_adv": loss_adv[j],
                             "detections_clean": clean_counts[j], "detections_adv": adv_counts[j],
                             "linf": float(d.abs().max()), "l2": float(d.norm(p=2))})
            bar.update(len(ids))
        for key, items in lines.items():
            append_jsonl(self.work / f"{key}.jsonl", items)
        append_jsonl(self.work / "per_image.jsonl", rows)
        append_jsonl(self.work / "grads.jsonl", grads)
        append_jsonl(self.work / "foolbox.jsonl", fb_rows)
        # the batch is committed last: a kill before this line redoes the batch on --resume
        append_jsonl(self.work / "done.jsonl", [{"image_id": i} for i in ids])

    def foolbox(self, point: AttackPoint, imgs, tgts, ids, seed: int) -> list[dict]:
        params = dict(point.params)
        name = params.pop("fb")
        torch.manual_seed(seed)
        rows = []
        for img, t, iid in zip(imgs, tgts, ids):
            clean, robust = object_robust_accuracy(self.lm.model, img, t["boxes"], t["labels"], name, params,
                                                   [point.eps])
            rows.append({"image_id": iid, "point": point.key, "attack": name, "norm": point.norm, "eps": point.eps,
                         "objects": len(clean), "clean_correct": int(clean.sum()),
                         "robust_correct": int(robust[0].sum())})
        return rows

    def batch_or_split(self, imgs, tgts, ids, batch_key, bar) -> None:
        """On CUDA out-of-memory, halve the batch and go on (logged), instead of losing the run."""
        try:
            self.batch(imgs, tgts, ids, batch_key, bar)
        except torch.OutOfMemoryError:
            if len(ids) == 1:
                raise
            torch.cuda.empty_cache()
            h = len(ids) // 2
            tqdm.write(f"CUDA out of memory on a batch of {len(ids)}: retrying as {h} + {len(ids) - h}",
                       file=sys.stderr)
            self.batch_or_split(imgs[:h], tgts[:h], ids[:h], f"{batch_key}a", bar)
            self.batch_or_split(imgs[h:], tgts[h:], ids[h:], f"{batch_key}b", bar)

    def unbounded(self, eval_ids: list[int], clean_results: list[dict]) -> dict:
        """The gradient-masking probe: PGD at eps 1.0 from the clean image on a few images (sanity.py)."""
        cfg = sanity.UNBOUNDED
        ids = eval_ids
        pos = {iid: i for i, iid in enumerate(self.ds.image_ids)}
        results = []
        attack = PGD(steps=cfg["steps"], random_start=False)
        for chunk in batches(len(ids), 4):
            sub = [ids[i] for i in chunk]
            loaded = [self.load(pos[iid]) for iid in sub]
            imgs, tgts = [x for x, _ in loaded], [t for _, t in loaded]
            torch.manual_seed(derived_seed(self.seed, "unbounded", sub[0]))
            adv = attack(self.lm.model, imgs, tgts, [cfg["eps"]], make_objective("gt"))[0]
            results += self.results(predict(self.lm.model, adv), sub)
        keep = set(ids)
        clean = evaluate(self.ds.coco, [r for r in clean_results if r["image_id"] in keep], ids, ("bbox",), False)
        adv_m = evaluate(self.ds.coco, results, ids, ("bbox",), False)
        return {"eps": cfg["eps"], "steps": cfg["steps"], "images": len(ids), "ap": adv_m["bbox"]["AP"],
                "clean_ap": clean["bbox"]["AP"]}


def gradient_health(model, images, targets, objective, ids, objective_name: str) -> list[dict]:
    """Per image: norms of the objective's input gradient at the clean point, and whether it is zero/finite."""
    with attack_mode(model):
        grads, _ = gradients(model, objective, images, targets, sanitize=False)
    return [{"image_id": iid, "objective": objective_name, "l1": float(g.abs().sum()), "l2": float(g.norm()),
             "linf": float(g.abs().max()), "zero": bool((g == 0).all()), "finite": bool(torch.isfinite(g).all())}
            for g, iid in zip(grads, ids)]


def _read_all(work: Path, name: str) -> list[dict]:
    """One work file merged over every rank's folder (``work/rank*/``)."""
    return [r for d in sorted(work.glob("rank*")) for r in read_jsonl(d / name)]


def _resume_state(out: Path, fingerprint: dict) -> None:
    """Check an interrupted run can be continued, and drop the half-written batch of every rank."""
    check_resumable(out, fingerprint)
    for d in (out / "work").glob("rank*"):
        trim_to_done(d)


def run_fingerprint(suite: Suite, seed: int, batch_size: int, lm: LoadedModel, device, data,
                    ds: CocoDataset, amp: str | None = None) -> dict:
    """Everything that changes a run's numbers: ``--resume`` (and ``compare --resume``) refuse a mismatch."""
    return {"suite": suite.as_dict()["points"], "seed": seed, "batch_size": batch_size,
            **model_fingerprint(lm, device), "amp": amp, "dataset_sha256": sha256_file(data),
            "image_ids": ds.image_ids}


class _Images(torch.utils.data.Dataset):
    """Image i and its target, or the reason it cannot be used: decoding runs in DataLoader workers."""

    def __init__(self, ds: CocoDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        try:
            return i, self.ds.load_image(i), self.ds.target(i), None
        except RobustsegError as e:  # e.g. a truncated file whose header looked fine
            return i, None, None, str(e)


def _to(x, device):
    return x.to(device, non_blocking=True) if torch.is_tensor(x) else x


def run_suite(model: str | Path | LoadedModel | None = None, suite: str | Path | Suite | None = None,
              data: str | Path | None = None, images: str | Path | None = None, *, out: str | Path | None = None,
              limit: int | None = None, batch_size: int = 4, device: str = "cpu", seed: int = 0,
              force: bool = False, resume: bool = False, on_error: str = "skip", progress: bool = True,
              command: str | None = None, sanity_images: int | None = None, amp: str | None = None,
              workers: int = 0) -> RunResult | None:
    """Attack ``model`` with every point of ``suite`` on a dataset and write the results directory.

    ``amp`` (bf16, or fp16 on CUDA) runs the attacks' forward passes under autocast; predictions and every
    evaluation stay float32. ``workers`` decode images in that many DataLoader processes, ahead of the attack.

    ``on_error="skip"`` logs an image that cannot be read, counts it in run.json and leaves it out of every
    point's evaluation alike; ``"fail"`` stops the run. ``resume=True`` continues an interrupted run in ``out``.
    Under torchrun, batches are sharded across ranks and rank 0 merges and evaluates (other ranks return None).
    ``sanity_images``: images for the unbounded-attack sanity check (default sanity.UNBOUNDED; 0 skips it).
    """
    from .training.distributed import setup, teardown
    if on_error not in ("skip", "fail"):
        raise RobustsegError(f"on_error must be skip or fail, not {on_error!r}")
    if resume and out is None:
        raise RobustsegError("--resume needs the --out directory of the interrupted run")
    t_start = time.time()
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    if out is not None:  # refuse early, before loading anything, if results would be overwritten
        prepare_out_dir(out, force=force, resume=resume, check_only=True)
    dist, device = setup(device)
    if dist.enabled and out is None:
        raise RobustsegError("under torchrun, give --out so that every process writes to the same run")
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    lm.model.to(device)
    if data is None:
        from .data.synth import default_split
        data, images = default_split()
    ds = CocoDataset(data, images, category_ids=lm.category_ids, limit=limit)
    if len(ds) == 0:
        raise RobustsegError(f"{data}: no images to attack")
    if out is None:
        out = Path("reports") / f"{Path(lm.path or 'model').stem}-{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    points = _checked_points(suite, lm, ds)
    with_amp(make_objective("gt"), amp, device)  # an unusable --amp fails here, before any work
    if torch.device(device).type == "cuda":  # faster convolutions on tensor cores; same numbers
        lm.model.to(memory_format=torch.channels_last)
    fingerprint = run_fingerprint(suite, seed, batch_size, lm, device, data, ds, amp)
    work = Path(out) / "work"
    problems = ds.check_images()  # every unreadable/missing/mis-sized image, found before any work
    if problems and on_error == "fail":
        shown = "; ".join(f"image {i}: {e}" for i, e in list(problems.items())[:5])
        raise RobustsegError(f"{len(problems)} image(s) cannot be used: {shown}")
    run_info = {
        "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or " ".join(["robustseg"] + sys.argv[1:]), "seed": seed, "batch_size": batch_size,
        "device": str(device), "amp": amp, "workers": workers, "limit": limit, "on_error": on_error,
        "world_size": dist.world,
        "suite": suite.as_dict(), "versions": versions(),
        "model": {k: v for k, v in lm.describe().items() if k != "meta"} | {"meta": lm.meta},
        "dataset": {"annotations": str(Path(data).resolve()), "images": str(Path(images).resolve()),
                    "sha256": fingerprint["dataset_sha256"], "num_images": len(ds),
                    "skipped_annotations": ds.skipped},
        "score_threshold_for_counts": SCORE_THRESHOLD, "fingerprint": fingerprint,
    }
    if dist.main:
        out = prepare_out_dir(out, force=force, resume=resume)
        if resume:
            _resume_state(out, fingerprint)
        else:
            for stale in ("work", "predictions", "examples", "plots"):
                shutil.rmtree(out / stale, ignore_errors=True)
            # written only by runs with foolbox points: a --force run without them must not show the old one
            (out / "object_accuracy.csv").unlink(missing_ok=True)
        (out / "predictions").mkdir(exist_ok=True)
        write_run_json(out, run_info)
    _barrier(dist)
    my_work = work / f"rank{dist.rank}"
    my_work.mkdir(parents=True, exist_ok=True)
    done = {int(r["image_id"]) for r in _read_all(work, "done.jsonl")} | \
        {int(r["image_id"]) for r in _read_all(work, "failed.jsonl")}
    for iid, err in problems.items():
        if iid not in done and dist.main:
            tqdm.write(f"skipping image {iid}: {err}", file=sys.stderr)
            append_jsonl(my_work / "failed.jsonl", [{"image_id": iid, "error": err}])
    done |= set(problems)

    run = _Run(lm, ds, points, Path(out), my_work, device, seed, amp)
    all_batches = list(batches(len(ds), batch_size))
    mine = [b for n, b in enumerate(all_batches) if n % dist.world == dist.rank]
    bar = tqdm(total=sum(len(b) for b in mine) * (1 + len(points)), desc="attack", unit="img",
               disable=not progress or not dist.main, dynamic_ncols=True)
    plan = []  # (batch key, positions still to do) per batch of this rank
    for idx in mine:
        ids = [ds.image_ids[i] for i in idx]
        todo = [i for i, iid in zip(idx, ids) if iid not in done]
        bar.update((len(idx) - len(todo)) * (1 + len(points)))
        if todo:
            plan.append((ids[0], todo))
    loader = torch.utils.data.DataLoader(_Images(ds), batch_sampler=[todo for _, todo in plan], collate_fn=list,
                                         num_workers=workers, pin_memory=torch.device(device).type == "cuda")
    for (key, _), items in zip(plan, loader):
        loaded = []
        for i, img, tgt, err in items:
            iid = ds.image_ids[i]
            if err is not None:
                if on_error == "fail":
                    raise RobustsegError(f"image {iid}: {err}")
                tqdm.write(f"skipping image {iid}: {err}", file=sys.stderr)
                append_jsonl(my_work / "failed.jsonl", [{"image_id": iid, "error": err}])
                bar.update(1 + len(points))
            else:
                loaded.append((iid, _to(img, device), {k: _to(v, device) for k, v in tgt.items()}))
        if loaded:
            run.batch_or_split([x for _, x, _ in loaded], [t for _, _, t in loaded], [iid for iid, _, _ in loaded],
                               key, bar)
    bar.close()
    _barrier(dist)
    if not dist.main:
        teardown(dist)
        return None
    try:
        df = _evaluate_run(Path(out), run, points, run_info, t_start, sanity_images)
    finally:
        teardown(dist)
    return RunResult(Path(out), df)


def _barrier(dist) -> None:
    if dist.enabled:
        import torch.distributed as td
        td.barrier()


def _checked_points(suite: Suite, lm: LoadedModel, ds: CocoDataset) -> list[AttackPoint]:
    points = suite.points
    for p in points:
        if p.target_class not in (None, "next") and p.target_class not in lm.class_names:
            raise RobustsegError(f"target_class {p.target_class!r} is not a class of the model "
                                 f"({', '.join(lm.class_names[:10])}...)")
    if not ds.has_annotations and any(p.objective == "gt" for p in points):
        tqdm.write("notice: the dataset has no annotations; attacking the model's own confident detections "
                   "(objective 'pseudo') instead of ground truth; AP needs ground truth and reads -1", file=sys.stderr)
        points = [replace(p, objective="pseudo") if p.objective == "gt" else p for p in points]
    return points


def _evaluate_run(out: Path, run: _Run, points: list[AttackPoint], run_info: dict, t_start: float,
                  sanity_images: int | None):
    """Merge every rank's streamed results, evaluate each point once, write the results files and report."""
    ds, lm, work = run.ds, run.lm, out / "work"
    order = {iid: n for n, iid in enumerate(ds.image_ids)}

    def merged(name: str) -> list[dict]:  # in dataset order, whatever rank or resume wrote them
        return sorted(_read_all(work, name), key=lambda r: order[int(r["image_id"])])

    failed = merged("failed.jsonl")
    failed_ids = {int(f["image_id"]) for f in failed}
    eval_ids = [i for i in ds.image_ids if i not in failed_ids]
    if not eval_ids:
        raise RobustsegError("no image could be read; nothing to evaluate (see run.json)")
    rows, class_rows, stats_rows = [], [], []
    names = dict(zip(lm.category_ids, lm.class_names))
    clean_results: list[dict] = []
    for point in [CLEAN] + [p for p in points if p.attack != "foolbox"]:
        key = "clean" if point is CLEAN else point.key
        results = merged(f"{key}.jsonl")
        clean_results = results if point is CLEAN else clean_results
        write_json(out / "predictions" / f"{key}.json", results)
        m = evaluate(ds.coco, results, eval_ids)
        base = {"attack": point.attack, "norm": point.norm if point is not CLEAN else "none", "eps": point.eps,
                "eps_label": point.eps_label if point is not CLEAN else "0", "steps": point.steps, "point": key}
        for t in IOU_TYPES:
            rows += [{**base, "iou_type": t, "metric": k, "value": m[t][k]} for k in METRICS]
            class_rows += [{**base, "iou_type": t, "category_id": c, "category": names.get(c, str(c)), "AP": ap}
                           for c, ap in m["per_class"][t].items()]
        target = None
        if point.objective == "mislabel":
            label = run.target_label(point)
            target = {cid: lm.category_ids[int(mislabel_to(torch.tensor([i + 1]), lm.num_classes, label)) - 1]
                      for i, cid in enumerate(lm.category_ids)}
        stats_rows.append({**base, "objective": point.objective if point is not CLEAN else "none",
                           **detection_stats(ds.coco, results, eval_ids, target)})
    df = write_metrics(out, rows)
    write_csv(out / "per_class.csv", class_rows)
    write_csv(out / "detection_stats.csv", stats_rows, STATS_COLUMNS)
    per_image = sorted(_read_all(work, "per_image.jsonl"), key=lambda r: (r["point"], order[r["image_id"]]))
    write_csv(out / "per_image.csv", per_image, PER_IMAGE_COLUMNS)
    fb = merged("foolbox.jsonl")
    if fb:
        write_csv(out / "object_accuracy.csv", _object_accuracy(fb))
    n_sanity = sanity.UNBOUNDED["images"] if sanity_images is None else sanity_images
    unbounded = run.unbounded(eval_ids[:n_sanity], clean_results) if ds.has_annotations and n_sanity else None
    grads = _read_all(work, "grads.jsonl")
    checks = sanity.run_checks(df, points, per_image, grads, unbounded)
    write_json(out / "sanity.json", checks)
    nonfinite = sum(1 for r in per_image if not (math.isfinite(r["loss_clean"]) and math.isfinite(r["loss_adv"])))
    shutil.rmtree(work, ignore_errors=True)
    run_info.update(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    wall_seconds=round(time.time() - t_start, 1), failed_images=failed,
                    num_failed_images=len(failed), num_evaluated_images=len(eval_ids),
                    nonfinite_losses=nonfinite, nonfinite_gradients=sum(1 for g in grads if not g["finite"]))
    write_run_json(out, run_info)
    from .report.html import write_report
    write_report(out)
    return df


def _object_accuracy(rows: list[dict]) -> list[dict]:
    """Object-level accuracy per foolbox point: clean, and robust (correct after the attack)."""
    out = {}
    for r in rows:
        a = out.setdefault(r["point"], {"point": r["point"], "attack": r["attack"], "norm": r["norm"],
                                        "eps": r["eps"], "objects": 0, "clean_correct": 0, "robust_correct": 0})
        for k in ("objects", "clean_correct", "robust_correct"):
            a[k] += r[k]
    for a in out.values():
        a["clean_accuracy"] = a["clean_correct"] / a["objects"] if a["objects"] else float("nan")
        a["robust_accuracy"] = a["robust_correct"] / a["objects"] if a["objects"] else float("nan")
    return list(out.values())


def summary_table(df) -> str:
    """Clean vs attacked AP per point (bbox and segm AP), the drop in brackets; eps as written (8/255), and what
    else tells points apart (objective, losses, parameters: the end of the point's key)."""
    import re
    ap = df[df.metric == "AP"]
    lines = [f"{'attack':12} {'norm':6} {'eps':>8} {'steps':>5} {'bbox AP':>16} {'segm AP':>16}  variant"]
    for key, g in ap.groupby("point", sort=False):
        cells = []
        for t in ("bbox", "segm"):
            r = g[g.iou_type == t].iloc[0]
            cells.append(f"{r.value:.3f}" + ("" if key == "clean" else f" ({-r.drop_abs:+.3f})"))
        r = g.iloc[0]
        variant = ""
        if r.norm in ("linf", "l2"):
            head = f"{r.attack:12} {r.norm:6} {r.eps_label:>8} {int(r.steps):>5}"
            m = re.search(r"-s\d+(.*)$", str(key))
            variant = m.group(1).lstrip("-") if m else ""
        else:  # clean, patches: the point's name says it all
            head = f"{key:34}"
        lines.append(f"{head} {cells[0]:>16} {cells[1]:>16}  {variant}".rstrip())
    return "\n".join(lines)
