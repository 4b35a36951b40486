"""The sweep runner and ``robustseg attack`` end to end: what the attacks do to a trained model's AP, the results
directory contract (docs/results.md), recomputing AP from the written predictions, refusing to overwrite, and a
torchvision R50-FPN checkpoint through the real command line.

One shared run (module scope): 8 synthetic images, PGD-Linf 5 steps at eps 0, 2/255 and 8/255 (plus the random
baselines the suite adds at 2/255 and 8/255).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from _helpers import RUN_DATA_SEED, load_trained_model, metric, small_sanity_probe
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from robustseg.cli import main
from robustseg.data.synth import generate
from robustseg.fileio import sha256_file
from robustseg.results import METRIC_COLUMNS
from robustseg.kinds.attack import PER_IMAGE_COLUMNS, run_suite
from robustseg.suites import parse_suite

N_IMAGES = 8
STEPS = 5
PGD8 = f"pgd-linf-eps{8 / 255:.6f}-s{STEPS}"
PGD2 = f"pgd-linf-eps{2 / 255:.6f}-s{STEPS}"
PGD0 = f"pgd-linf-eps{0:.6f}-s{STEPS}"
RANDOM8 = f"random-linf-eps{8 / 255:.6f}-s0"
RANDOM2 = f"random-linf-eps{2 / 255:.6f}-s0"
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


@pytest.fixture(scope="module")
def lm():
    return load_trained_model()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_data")
    ann = generate(root, N_IMAGES, seed=RUN_DATA_SEED)
    return Path(ann), root / "images"


@pytest.fixture(scope="module")
def run(lm, dataset, tmp_path_factory):
    ann, images = dataset
    suite = parse_suite({"name": "test-pgd", "attack": [
        {"type": "pgd", "norm": "linf", "eps": ["0", "2/255", "8/255"], "steps": STEPS}]})
    out = tmp_path_factory.mktemp("runs") / "run"
    with small_sanity_probe():
        res = run_suite(lm, suite, ann, images, out=out, seed=11, batch_size=4, progress=False,
                        command="test_attack_run", checks="full")  # every image's objective measured
    return res, pd.read_csv(out / "metrics.csv")


def test_pgd_cuts_ap_and_random_noise_does_not(run):
    _, df = run
    clean = metric(df, "clean")
    assert clean > 0.2, f"clean bbox AP {clean:.3f}: is the test model trained?"
    pgd_drop = clean - metric(df, PGD8)
    random_drop = clean - metric(df, RANDOM8)
    assert pgd_drop >= 0.1, f"PGD-{STEPS} at 8/255 only took bbox AP from {clean:.3f} by {pgd_drop:.3f}"
    assert random_drop < pgd_drop / 3, f"random noise drop {random_drop:.3f} vs PGD drop {pgd_drop:.3f}"
    for t in ("bbox", "segm"):  # metrics.csv's own drop column says the same
        row = df[(df.point == PGD8) & (df.iou_type == t) & (df.metric == "AP")].iloc[0]
        assert row.drop_abs > 0.05


def test_eps_zero_point_equals_clean_exactly(run):
    res, df = run
    for t in ("bbox", "segm"):
        for m in METRICS:
            assert metric(df, PGD0, t, m) == metric(df, "clean", t, m)
    preds = res.out / "predictions"
    assert json.loads((preds / f"{PGD0}.json").read_text()) == json.loads((preds / "clean.json").read_text())
    pi = pd.read_csv(res.out / "per_image.csv")
    zero = pi[pi.point == PGD0]
    assert len(zero) == N_IMAGES and (zero.linf == 0).all() and (zero.l2 == 0).all()
    assert (zero.detections_adv == zero.detections_clean).all()


def test_larger_eps_is_not_weaker(run):
    _, df = run
    for t in ("bbox", "segm"):
        assert metric(df, PGD8, t) <= metric(df, PGD2, t) + 0.02
        assert metric(df, PGD2, t) <= metric(df, PGD0, t) + 0.02


def _coco_eval(gt: COCO, results: list[dict], iou_type: str, img_ids: list[int]) -> list[float]:
    """pycocotools directly: loadRes + COCOeval; for segm the bbox key is dropped first (as detectron2 does)."""
    if iou_type == "segm":
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:6]]


def test_metrics_recomputed_from_predictions_files(run, dataset):
    res, df = run
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(dataset[0]))
    img_ids = sorted(gt.getImgIds())
    points = list(dict.fromkeys(df.point))
    assert sorted(p.name for p in (res.out / "predictions").iterdir()) == sorted(f"{p}.json" for p in points)
    for point in points:
        results = json.loads((res.out / "predictions" / f"{point}.json").read_text())
        if not results:  # loadRes cannot take an empty list; no detections score 0 (or -1: nothing to evaluate)
            assert point != "clean" and (df[df.point == point].value <= 0).all()
            continue
        assert {r["category_id"] for r in results} <= {1, 2, 3}
        assert all({"image_id", "category_id", "bbox", "score", "segmentation"} <= set(r) for r in results)
        for t in ("bbox", "segm"):
            ours = _coco_eval(gt, results, t, img_ids)
            for m, v in zip(METRICS, ours):
                assert abs(metric(df, point, t, m) - v) <= 1e-6, (point, t, m, metric(df, point, t, m), v)


def test_metrics_csv_contract(run):
    res, df = run
    assert list(df.columns) == METRIC_COLUMNS
    expected_points = {"clean", PGD0, PGD2, PGD8, RANDOM2, RANDOM8}
    assert set(df.point) == expected_points
    assert len(df) == len(expected_points) * 2 * len(METRICS)
    assert not df.duplicated(["point", "iou_type", "metric"]).any()
    for point, g in df.groupby("point"):
        assert sorted(zip(g.iou_type, g.metric)) == sorted((t, m) for t in ("bbox", "segm") for m in METRICS)
        assert g[["attack", "norm", "eps", "eps_label", "steps"]].drop_duplicates().shape[0] == 1
    clean = df[df.point == "clean"]
    assert (clean.kind == "clean").all() and (df[df.point != "clean"].kind == "attack").all()
    assert (clean.attack == "clean").all() and (clean.eps == 0).all() and (clean.norm == "none").all()
    assert (clean.steps == 0).all() and (clean.drop_abs == 0).all()
    pgd8 = df[df.point == PGD8].iloc[0]
    assert (pgd8.attack, pgd8.norm, pgd8.eps_label, pgd8.steps) == ("pgd", "linf", "8/255", STEPS)
    assert abs(pgd8.eps - 8 / 255) < 1e-6
    rnd = df[df.point == RANDOM2].iloc[0]
    assert (rnd.attack, rnd.norm, rnd.eps_label, rnd.steps) == ("random", "linf", "2/255", 0)
    for _, r in df.iterrows():
        c = metric(df, "clean", r.iou_type, r.metric)
        assert abs(r.clean_value - c) < 1e-9
        assert abs(r.drop_abs - (r.clean_value - r.value)) < 2e-6
        if r.clean_value > 0:
            assert abs(r.drop_rel - r.drop_abs / r.clean_value) < 1e-4
        else:
            assert math.isnan(r.drop_rel)
    assert ((df.value >= 0) & (df.value <= 1) | (df.value == -1)).all()


def test_per_image_csv_contract(run, dataset):
    res, df = run
    pi = pd.read_csv(res.out / "per_image.csv")
    assert list(pi.columns)[:len(PER_IMAGE_COLUMNS)] == PER_IMAGE_COLUMNS
    with contextlib.redirect_stdout(io.StringIO()):
        ids = sorted(COCO(str(dataset[0])).getImgIds())
    attacked = set(df.point) - {"clean"}
    assert set(pi.point) == attacked and len(pi) == len(attacked) * N_IMAGES
    for point, g in pi.groupby("point"):
        assert sorted(g.image_id) == ids
        eps = float(g.eps.iloc[0])
        assert (g.linf <= eps + 1e-6).all() and (g.l2 >= 0).all()
        assert (g.detections_clean >= 0).all() and (g.detections_adv >= 0).all()
        if point.startswith("random") or point == PGD8:
            assert (g.linf > eps - 1e-6).all()  # these use the whole Linf budget on every image
    # detections_clean is the same count whichever point a row belongs to
    assert (pi.groupby("image_id").detections_clean.nunique() == 1).all()
    pgd = pi[pi.point == PGD8]
    assert (pgd.loss_adv > pgd.loss_clean).mean() >= 0.75  # PGD raised the detector's loss on (nearly) every image


def test_per_class_csv(run):
    res, df = run
    pc = pd.read_csv(res.out / "per_class.csv")
    assert {"point", "iou_type", "category_id", "category", "AP"} <= set(pc.columns)
    assert set(pc.point) == set(df.point)
    assert set(pc.category) == {"circle", "square", "triangle"} and set(pc.category_id) == {1, 2, 3}
    assert len(pc) == len(set(df.point)) * 2 * 3


def test_run_json_and_report(run, lm, dataset):
    res, _ = run
    info = json.loads((res.out / "run.json").read_text())
    assert info["status"] == "complete"
    assert info["command"] == "test_attack_run" and info["seed"] == 11 and info["batch_size"] == 4
    assert info["kinds"] == ["attack"] and info["attack"]["suite"]["name"] == "test-pgd"
    assert {p["key"] for p in info["attack"]["suite"]["points"]} == {PGD0, PGD2, PGD8, RANDOM2, RANDOM8}
    assert {"robustseg", "torch", "torchvision", "python"} <= set(info["versions"])
    assert info["versions"]["torch"] == torch.__version__
    assert info["model"]["sha256"] == sha256_file(lm.path) and info["model"]["arch"] == "tiny"
    assert info["dataset"]["sha256"] == sha256_file(dataset[0]) and info["dataset"]["num_images"] == N_IMAGES
    assert info["wall_seconds"] > 0
    report = (res.out / "report.html").read_text()
    assert report.lstrip().lower().startswith("<!doctype html") and "</html>" in report
    assert not (res.out / "work").exists()  # streamed work files are removed once the run is complete


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(d.rglob("*"))
            if p.is_file()}


def test_refuses_non_empty_out_and_force_overwrites(run, lm, dataset, tmp_path, capsys):
    ann, images = dataset
    out = tmp_path / "copy"
    shutil.copytree(run[0].out, out)
    before = _snapshot(out)
    base = ["attack", "--model", lm.path, "--data", str(ann), "--images", str(images), "--out", str(out),
            "--attack", "random", "--eps", "1/255", "--limit", "1", "--batch-size", "1"]
    rc = main(base)
    cap = capsys.readouterr()
    assert rc == 2
    assert cap.err.count("\n") == 1 and "not empty" in cap.err and "--force" in cap.err and "Traceback" not in cap.err
    assert _snapshot(out) == before  # nothing touched: same files, bytes and mtimes

    (out / "object_accuracy.csv").write_text("point,objects\nstale,1\n")  # as if an earlier run had foolbox points
    with small_sanity_probe():
        rc = main(base + ["--force"])
    capsys.readouterr()
    assert rc == 0
    df = pd.read_csv(out / "metrics.csv")
    assert set(df.point) == {"clean", f"random-linf-eps{1 / 255:.6f}-s0"}
    assert sorted(p.name for p in (out / "predictions").iterdir()) == \
        sorted(["clean.json", f"random-linf-eps{1 / 255:.6f}-s0.json"])  # the old run's predictions are gone
    assert not (out / "object_accuracy.csv").exists()  # nothing of the old run survives to show in the report
    info = json.loads((out / "run.json").read_text())
    assert info["dataset"]["num_images"] == 1 and info["attack"]["suite"]["name"] == "cli-random"
    assert len(pd.read_csv(out / "per_image.csv")) == 1


def test_torchvision_r50_fpn_through_the_cli(dataset, tmp_path, capsys):
    """A plain torchvision maskrcnn_resnet50_fpn state_dict (random init) through ``robustseg attack``: one PGD step
    on two images. In-process, so that the runner's sanity probe can be shrunk (test_suites.py runs the real
    ``python -m robustseg`` process).

    Speed: --min-size/--max-size 128 make the backbone cheap; what remains is the box head on 1000 proposals per
    image (~25 GFLOP). So the RPN's box-regression bias is set to blow every anchor up to the whole image: NMS then
    keeps one proposal per FPN level and the heads see a handful of boxes. Everything else is random init, and
    loading, the attack, predictions (with masks) and evaluation run exactly as for any R50-FPN file."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    ann, images = dataset
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)
    with torch.no_grad():
        reg = model.rpn.head.bbox_pred  # deltas (dx, dy, dw, dh) per anchor: dw = dh = 10 (clamped to log(1000/16))
        reg.weight.zero_()
        reg.bias.zero_()
        reg.bias.view(-1, 4)[:, 2:] = 10.0
    ckpt = tmp_path / "r50.pt"
    torch.save(model.state_dict(), ckpt)
    del model
    out = tmp_path / "r50-run"
    argv = ["attack", "--model", str(ckpt), "--data", str(ann), "--images", str(images), "--attack", "pgd",
            "--eps", "8/255", "--steps", "1", "--limit", "2", "--min-size", "128", "--max-size", "128",
            "--out", str(out)]
    with small_sanity_probe():
        rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-3000:]
    df = pd.read_csv(out / "metrics.csv")
    pgd = f"pgd-linf-eps{8 / 255:.6f}-s1"
    assert set(df.point) == {"clean", pgd, RANDOM8}
    info = json.loads((out / "run.json").read_text())
    assert info["model"]["arch"] == "maskrcnn_resnet50_fpn"
    assert info["model"]["format"] == "torchvision-state-dict"
    assert info["model"]["sha256"] == sha256_file(ckpt)
    assert info["model"]["arch_cfg"]["min_size"] == 128 and info["model"]["arch_cfg"]["max_size"] == 128
    pi = pd.read_csv(out / "per_image.csv")
    assert len(pi) == 2 * 2 and (pi.linf <= 8 / 255 + 1e-6).all() and (pi[pi.point == pgd].linf > 0).all()
    assert (out / "report.html").is_file() and (out / "predictions" / f"{pgd}.json").is_file()
    assert re.search(r"pgd +linf +8/255 +1 ", cap.out)  # the summary table
    assert json.loads((out / "predictions" / "clean.json").read_text())  # it detected something (scored, masked)


@pytest.mark.parametrize("cmd", ["attack", "eval"])
def test_min_size_must_be_positive(cmd, dataset, tmp_path, capsys):
    ann, images = dataset
    argv = [cmd, "--model", str(tmp_path / "missing.pt"), "--data", str(ann), "--images", str(images),
            "--min-size", "0"]
    if cmd == "attack":
        argv += ["--attack", "fgsm", "--eps", "1/255", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--min-size must be a positive" in err
