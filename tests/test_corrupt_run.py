"""`robustseg corrupt`, the natural-corruption kind on the run engine: each point's AP is what corrupting the
images by hand (same per-image seeds) and scoring them with pycocotools gives; mPC / rPC follow Michaelis et al.
(mean over corruptions of the mean over severities; extra corruptions apart); a killed run resumes to the same
bytes; bad selections are one-line errors; the report and comparisons show the figures."""
from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest

from robustseg.cli import main
from robustseg.corruptions import corrupt
from robustseg.corruptions import benchmark as cb
from robustseg.data.images import load_image, safe_join
from robustseg.data.synth import generate
from robustseg.errors import RobustsegError
from robustseg.eval.coco_eval import evaluate, predict, to_coco_results
from robustseg.kinds.corruption import run_corruptions
from robustseg.report.compare import write_comparison
from robustseg.utils import derived_seed

from _helpers import load_trained_model

NAMES = "gaussian_noise,fog,saturate"  # a random and a deterministic benchmark corruption, one extra
SEVERITIES = "1,4"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("corruptdata")
    return generate(root, 5, seed=47, size=96), root / "images"


@pytest.fixture(scope="module")
def lm():
    return load_trained_model()


@pytest.fixture(scope="module")
def run(lm, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("corrupt") / "run"
    return run_corruptions(lm, *data, corruptions=NAMES, severities=SEVERITIES, out=out, batch_size=2, seed=3,
                           progress=False)


def _ap(metrics, point, iou_type, metric="AP"):
    r = metrics[(metrics.point == point) & (metrics.iou_type == iou_type) & (metrics.metric == metric)]
    assert len(r) == 1, (point, iou_type, metric)
    return float(r.value.iloc[0])


def test_each_point_is_the_images_corrupted_by_hand_and_scored_by_pycocotools(run, lm, data):
    ann = json.loads(data[0].read_text())
    from pycocotools.coco import COCO
    gt = COCO(str(data[0]))
    m = pd.read_csv(run.out / "metrics.csv")
    for name, severity in (("gaussian_noise", 4), ("fog", 1)):
        results = []
        for info in ann["images"]:
            iid = int(info["id"])
            x = load_image(safe_join(data[1], info["file_name"]))
            y = corrupt(x, name, severity, seed=derived_seed(3, "corruption", name, severity, iid))
            results += to_coco_results(predict(lm.model, [y])[0], iid, lm.category_ids)
        want = evaluate(gt, results, [int(i["id"]) for i in ann["images"]])
        key = f"corrupt-{name}-s{severity}"
        for t in ("bbox", "segm"):
            assert _ap(m, key, t) == pytest.approx(want[t]["AP"], abs=2e-3), (key, t)
        row = m[m.point == key].iloc[0]
        assert (row.kind, row.corruption, int(row.severity)) == ("corruption", name, severity)
    assert _ap(m, "corrupt-gaussian_noise-s4", "bbox") < _ap(m, "clean", "bbox")  # the noise does cost AP


def test_mpc_and_rpc_are_michaelis_means_with_the_extra_corruptions_apart(run):
    m = pd.read_csv(run.out / "metrics.csv")
    for t in ("bbox", "segm"):
        clean = _ap(m, "clean", t)
        bench = [(_ap(m, f"corrupt-{n}-s1", t) + _ap(m, f"corrupt-{n}-s4", t)) / 2 for n in ("gaussian_noise", "fog")]
        mpc = sum(bench) / 2
        assert _ap(m, "mPC-benchmark", t, "mPC") == pytest.approx(mpc, abs=1e-6)
        assert _ap(m, "mPC-benchmark", t, "rPC") == pytest.approx(mpc / clean, abs=1e-5)
        extra = (_ap(m, "corrupt-saturate-s1", t) + _ap(m, "corrupt-saturate-s4", t)) / 2
        assert _ap(m, "mPC-extra", t, "mPC") == pytest.approx(extra, abs=1e-6)
        perf = run.corruption_performance[t]["benchmark"]
        assert perf["complete"] is False and perf["corruptions"] == ["gaussian_noise", "fog"]
    table = pd.read_csv(run.out / "corruptions.csv")
    assert list(table.columns[:3]) == ["corruption", "group", "severity"] and len(table) == 6
    assert set(table[table.corruption == "saturate"].group) == {"extra"}
    pc = pd.read_csv(run.out / "corruption_per_class.csv")
    assert set(pc.group) == {"benchmark", "extra"} and set(pc.iou_type) == {"bbox", "segm"}
    assert "partial: 2 of 15 corruptions" in run.summary()


def test_performance_is_complete_only_over_the_whole_benchmark():
    full = {(c, s): 0.5 for c in cb.BENCHMARK for s in range(1, 6)}
    perf = cb.performance(0.8, full, "benchmark")
    assert perf["complete"] and perf["mPC"] == pytest.approx(0.5) and perf["rPC"] == pytest.approx(0.625)
    del full[("fog", 5)]
    assert not cb.performance(0.8, full, "benchmark")["complete"]
    assert cb.performance(0.8, full, "extra") is None
    assert math.isnan(cb.performance(0.8, {("fog", 1): -1.0}, "benchmark")["mPC"])  # COCO's -1 is not an AP
    # a corruption run over fewer severities weighs every corruption equally, as the paper's double mean does
    perf = cb.performance(1.0, {("fog", 1): 0.2, ("fog", 2): 0.4, ("snow", 1): 0.9}, "benchmark")
    assert perf["mPC"] == pytest.approx((0.3 + 0.9) / 2)


def test_selections_parse_and_bad_ones_are_one_line_errors(data, tmp_path, capsys):
    assert cb.parse_corruptions("benchmark") == list(cb.BENCHMARK)
    assert cb.parse_corruptions("extra,fog") == ["fog", *cb.EXTRA]
    assert len(cb.parse_corruptions("all")) == 19
    assert cb.parse_severities("1-3,5") == [1, 2, 3, 5] and cb.parse_severities(2) == [2]
    for spec in ("0-2", "6", "3-1", "x", ""):
        with pytest.raises(RobustsegError):
            cb.parse_severities(spec)
    for argv, needle in ((["--corruptions", "fogg"], "unknown corruption 'fogg'"),
                         (["--severities", "2-7"], "severities must be within 1-5")):
        code = main(["corrupt", "--data", str(data[0]), "--images", str(data[1]), "--out", str(tmp_path / "o"),
                     *argv])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
        assert not (tmp_path / "o").exists()


def test_a_killed_run_resumes_to_the_same_bytes(lm, data, run, tmp_path, monkeypatch):
    import robustseg.kinds.corruption as kind
    real, calls = kind.predict, []

    def dies_in_the_second_batch(model, images):  # 6 points per batch
        calls.append(1)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return real(model, images)
    monkeypatch.setattr(kind, "predict", dies_in_the_second_batch)
    kw = dict(corruptions=NAMES, severities=SEVERITIES, batch_size=2, seed=3, progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_corruptions(lm, *data, out=tmp_path / "run", **kw)
    monkeypatch.setattr(kind, "predict", real)
    res = run_corruptions(lm, *data, out=tmp_path / "run", resume=True, **kw)
    for f in ("metrics.csv", "corruptions.csv", "corruption_per_class.csv", "predictions/corrupt-fog-s4.json",
              "examples/corruption_overview.png"):
        assert (res.out / f).read_bytes() == (run.out / f).read_bytes(), f


def test_images_too_small_to_corrupt_are_skipped_and_logged(lm, tmp_path, capsys):
    ann = generate(tmp_path / "d", 3, seed=48, size=96)
    coco = json.loads(ann.read_text())
    small = coco["images"][0]
    from PIL import Image
    path = tmp_path / "d" / "images" / small["file_name"]
    Image.open(path).crop((0, 0, 30, 30)).save(path)
    small.update(width=30, height=30)
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != small["id"]]
    ann.write_text(json.dumps(coco))
    res = run_corruptions(lm, ann, tmp_path / "d" / "images", corruptions="fog", severities=1,
                          out=tmp_path / "run", progress=False)
    info = json.loads((res.out / "run.json").read_text())
    assert [f["image_id"] for f in info["failed_images"]] == [small["id"]]
    assert "too small to corrupt" in capsys.readouterr().err
    with pytest.raises(RobustsegError, match="cannot be corrupted"):
        run_corruptions(lm, ann, tmp_path / "d" / "images", corruptions="fog", severities=1,
                        out=tmp_path / "run2", on_error="fail", progress=False)


def test_report_and_comparison_show_p_mpc_rpc(run, tmp_path):
    html = (run.out / "report.html").read_text()
    m = pd.read_csv(run.out / "metrics.csv")
    assert 'id="corruptions"' in html and "corruption-heatmap.png" in html and "corruption_overview.png" in html
    shown = re.search(r'data-metric="bbox-benchmark-mPC" data-value="([^"]+)"', html)
    assert float(shown.group(1)) == pytest.approx(_ap(m, "mPC-benchmark", "bbox", "mPC"), abs=1e-6)
    assert "partial: 2 of 15 corruptions" in html
    out = write_comparison([run.out, run.out], tmp_path / "cmp")
    cmp_html = out.read_text()
    assert "corruption-compare" in cmp_html and cmp_html.count('data-group="benchmark"') == 4
    assert (tmp_path / "cmp" / "plots" / "corruption-ap.png").is_file()


def test_every_ap_and_drop_carries_its_paired_bootstrap_interval(run, lm, data, tmp_path):
    from pycocotools.coco import COCO

    from robustseg.eval.bootstrap import bootstrap_ap, bootstrap_drop
    m = pd.read_csv(run.out / "metrics.csv")
    ap = m[m.metric.isin(["AP", "AP50", "AP75"])]
    assert ap.ci_lo.notna().all() and ((ap.ci_lo <= ap.value + 1e-9) & (ap.value <= ap.ci_hi + 1e-9)).all()
    clean = ap[ap.kind == "clean"]
    assert (clean.drop_ci_lo == 0).all() and (clean.drop_ci_hi == 0).all()
    # the stored figures are bootstrap_ap / bootstrap_drop with the run's resamples (seed of the pass)
    gt = COCO(str(data[0]))
    ids = sorted(gt.getImgIds())
    seed = derived_seed(3, "bootstrap", "images")
    preds = {p: json.loads((run.out / "predictions" / f"{p}.json").read_text()) for p in ("clean", "corrupt-fog-s4")}
    row = m[(m.point == "corrupt-fog-s4") & (m.iou_type == "segm") & (m.metric == "AP")].iloc[0]
    want = bootstrap_ap(gt, preds["corrupt-fog-s4"], ids, "segm", n_boot=200, seed=seed)
    assert (row.ci_lo, row.ci_hi) == (pytest.approx(want["lo"], abs=1e-6), pytest.approx(want["hi"], abs=1e-6))
    drop = bootstrap_drop(gt, preds["clean"], preds["corrupt-fog-s4"], ids, "segm", n_boot=200, seed=seed)
    assert (row.drop_ci_lo, row.drop_ci_hi) == (pytest.approx(drop["lo"], abs=1e-6),
                                                pytest.approx(drop["hi"], abs=1e-6))
    mpc = m[(m.point == "mPC-benchmark") & (m.metric == "mPC")]
    assert ((mpc.ci_lo <= mpc.value) & (mpc.value <= mpc.ci_hi) & (mpc.ci_hi > mpc.ci_lo)).all()
    assert "[" in run.summary().splitlines()[-2]  # the printed mPC carries its interval
    off = run_corruptions(lm, *data, corruptions="fog", severities=1, out=tmp_path / "off", bootstrap=0,
                          progress=False)
    m0 = pd.read_csv(off.out / "metrics.csv")
    assert m0.ci_lo.isna().all() and m0.drop_ci_hi.isna().all()
    assert json.loads((off.out / "run.json").read_text())["intervals"]["method"].startswith("none")


def test_metrics_from_before_the_intervals_still_read(run, tmp_path):
    from robustseg.report.rundata import load_run
    from robustseg.results import INTERVAL_COLUMNS, METRIC_COLUMNS, read_metrics
    old = tmp_path / "old"
    old.mkdir()
    pd.read_csv(run.out / "metrics.csv").drop(columns=list(INTERVAL_COLUMNS)).to_csv(old / "metrics.csv", index=False)
    (old / "run.json").write_text((run.out / "run.json").read_text())
    df = read_metrics(old)
    assert list(df.columns) == METRIC_COLUMNS and df.ci_lo.isna().all()
    assert "nan" not in (run.out / "run.json").read_text().lower()  # run.json is valid JSON: no NaN tokens
    assert load_run(old).metrics.shape[0] == len(df)
