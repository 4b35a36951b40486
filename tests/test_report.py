"""Reports from files on disk: regeneration, summary.csv, comparison deltas, sections, escaping, examples."""
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import VANISH, XSS_CAT, XSS_CAT2, XSS_FILE, XSS_SUITE, make_run, shared_report

from robustseg.cli import main
from robustseg.report.examples import choose, example_points, save_examples
from robustseg.report.html import write_report
from robustseg.suites import load_suite


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    return shared_report(tmp_path_factory).parent


@pytest.fixture(scope="module")
def run_b(tmp_path_factory, run_a):
    """A 'more robust' run on the same data: every attack costs half as much AP; no optional files."""
    data = (run_a.parent / "data" / "annotations.json", run_a.parent / "data" / "images")
    return make_run(tmp_path_factory.mktemp("runs") / "hardened", data, scale=0.5, extras=False)


def _strip_time(html: str) -> str:
    return re.sub(r'<span id="generated">[^<]*</span>', "", html)


class Cells(HTMLParser):
    """Text of elements carrying data-metric (and data-point) attributes, plus every tag name seen."""

    def __init__(self):
        super().__init__()
        self.cells, self.tags, self._open, self._point = [], [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "data-point" in a:
            self._point = a["data-point"]
        if "data-metric" in a:
            self._open = [self._point, a["data-metric"], a.get("data-value"), ""]

    def handle_endtag(self, tag):
        if tag == "td" and self._open:
            self.cells.append(tuple(self._open))
            self._open = None

    def handle_data(self, data):
        if self._open:
            self._open[3] += data


def parse(html: str) -> Cells:
    p = Cells()
    p.feed(html)
    return p


def test_report_writes_everything_and_regenerates_identically(run_a):
    first = (run_a / "report.html").read_text()
    for f in ("summary.csv", "mask_quality.csv", "plots/ap-vs-eps-pgd-linf.png", "plots/ap-vs-steps-pgd-linf.png",
              "plots/per-class-drop-fgsm-linf.png", "plots/gradnorm-cdf.png", "plots/probe-ap.png"):
        assert (run_a / f).is_file(), f
    assert "<link" not in first and "http" not in first.split("<body>")[0]  # CSS inline, nothing fetched
    assert first.count('src="data:image/png;base64,') >= 10
    (run_a / "report.html").unlink()
    assert main(["report", str(run_a)]) == 0
    assert _strip_time((run_a / "report.html").read_text()) == _strip_time(first)


def test_sections_appear_only_with_their_data(run_a, run_b, tmp_path):
    full = re.sub(r">\s+<", "><", (run_a / "report.html").read_text())
    for section in ('id="sanity"', 'id="probes"', 'id="patches"', 'id="gradnorms"', 'id="objects"',
                    'id="family-fgsm-linf"', 'id="family-pgd-linf"', 'id="family-pgd-linf-vanish"',
                    "Mask quality of matched objects", "shape_bias", 'data-file="detection_stats.csv"',
                    'data-file="probes.csv"', "fb-LinfPGD", "examples/overview.png", "patches/universal.png",
                    "<td>tiny.pt / loss_mask / adv</td><td>3</td><td>80</td>"):  # median L1 of 40, 80, 120
        assert section in full, section
    assert 'id="problems"' not in full
    plain_pgd = full.split('id="family-pgd-linf"')[1].split("<section")[0]
    assert "pgd-linf-eps0.031373-s5" in plain_pgd and VANISH not in plain_pgd  # objectives are not mixed
    assert VANISH in full.split('id="family-pgd-linf-vanish"')[1].split("<section")[0]
    write_report(run_b, tmp_path / "b")
    bare = (tmp_path / "b" / "report.html").read_text()
    for section in ('id="sanity"', 'id="probes"', 'id="patches"', 'id="gradnorms"', 'id="problems"'):
        assert section not in bare, section
    # sanity verdicts as badges
    assert 'data-check="monotone_eps"' in full and '<span class="badge warn">warn</span>' in full


def test_strings_from_data_are_escaped(run_a):
    html = (run_a / "report.html").read_text()
    for s in (XSS_CAT, XSS_CAT2, XSS_SUITE, XSS_FILE, "<b>not</b>"):
        assert s not in html, s
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "quick&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert not [t for t, a in parse(html).tags if t == "script" or (t == "img" and a.get("src") == "x")]


def test_headline_cells_equal_metrics_csv(run_a):
    m = pd.read_csv(run_a / "metrics.csv")
    cells = {c[1]: c for c in parse((run_a / "report.html").read_text()).cells}
    for t in ("bbox", "segm"):
        ap = m[(m.metric == "AP") & (m.iou_type == t)]
        clean = ap[ap.attack == "clean"].value.iloc[0]
        attacks = ap[~ap.attack.isin(["clean", "random"]) & ~ap.attack.str.startswith(("probe-", "patch-"))]
        worst = attacks.value.min()
        for name, v in (("clean", clean), ("worst", worst), ("drop", clean - worst)):
            _, _, value, text = cells[f"{t}-{name}-AP"]
            assert text == f"{v:.3f}" and float(value) == pytest.approx(v, abs=1e-9)


def test_summary_csv_equals_metrics_csv(run_a):
    s = pd.read_csv(run_a / "summary.csv")
    m = pd.read_csv(run_a / "metrics.csv")
    assert len(s) == m.point.nunique() and list(s.point) == list(dict.fromkeys(m.point))
    assert (s.run == "baseline").all()
    for r in m[m.metric.isin(["AP", "AP50", "AP75"])].itertuples():
        assert s.loc[s.point == r.point, f"{r.iou_type}_{r.metric}"].item() == r.value
        if r.metric == "AP":
            assert s.loc[s.point == r.point, f"{r.iou_type}_AP_drop"].item() == pytest.approx(r.drop_abs)


def test_mask_quality_csv_per_point(run_a):
    mq = pd.read_csv(run_a / "mask_quality.csv")
    row = mq.set_index("point")
    assert row.loc["clean", "mask_iou"] == 1.0 and row.loc["clean", "n_gt"] == 6
    strong = "pgd-linf-eps0.031373-s10"  # 4-pixel shift of 16-pixel squares, category 2 lost
    assert row.loc[strong, "n_matched"] == 3
    assert row.loc[strong, "mask_iou"] == pytest.approx(12 * 16 / (2 * 256 - 12 * 16))
    assert row.loc[strong, "dice"] == pytest.approx(12 / 16)
    assert row.loc[strong, "boundary_iou"] < row.loc[strong, "mask_iou"]
    assert mq.soft_dice.isna().all()  # predictions JSON holds binary masks only


def test_comparison_report_delta_table(run_a, run_b, tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    assert main(["report", str(run_a), str(run_b), "--out", str(out)]) == 2  # never overwrites without --force
    assert main(["report", str(run_a), str(run_b), "--out", str(out), "--force"]) == 0
    html = (out / "report.html").read_text()
    a, b = pd.read_csv(run_a / "metrics.csv"), pd.read_csv(run_b / "metrics.csv")
    ap = lambda m, p, t: m[(m.point == p) & (m.iou_type == t) & (m.metric == "AP")].value.item()  # noqa: E731
    cells = [c for c in parse(html).cells if c[1].endswith("-delta-AP")]
    common = set(a.point) & set(b.point)
    assert {c[0] for c in cells} == common and len(cells) == 2 * len(common)
    for point, metric, value, text in cells:
        t = metric.split("-")[0]
        expected = ap(b, point, t) - ap(a, point, t)
        assert float(value) == pytest.approx(expected) and text == f"{expected:+.3f}"
    delta = pd.read_csv(out / "delta.csv").set_index("point")
    p = "pgd-linf-eps0.031373-s10"
    assert delta.loc[p, "bbox_delta"] == pytest.approx(ap(b, p, "bbox") - ap(a, p, "bbox"))
    assert delta.loc[p, "bbox_delta"] > 0
    assert delta.loc[p, "segm_drop_delta"] < 0  # the hardened run loses less
    s = pd.read_csv(out / "summary.csv")
    assert set(s.run) == {"baseline", "hardened"} and len(s) == a.point.nunique() + b.point.nunique()
    assert (out / "plots" / "ap-vs-eps-pgd-linf.png").is_file()


def test_comparison_default_out_and_bad_input(run_a, run_b, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(run_a), str(run_b)]) == 0
    [out] = (tmp_path / "reports").glob("compare-*")
    assert (out / "report.html").is_file()
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a robustseg results directory" in capsys.readouterr().err


def test_save_examples_keeps_the_exact_perturbation(tmp_path):
    rng = np.random.default_rng(1)
    clean = [rng.random((3, 8, 10)).astype(np.float32) for _ in range(6)]
    adv = [np.clip(c + rng.uniform(-1, 1, c.shape) / 255, 0, 1).astype(np.float32) for c in clean]
    assert save_examples(tmp_path, "pgd-x", range(6), adv, clean, limit=4) == 4
    assert save_examples(tmp_path, "pgd-x", [7], adv[:1], clean[:1], limit=4) == 0  # enough on disk already
    folder = tmp_path / "examples" / "pgd-x"
    assert sorted(p.name for p in folder.glob("*.png")) == ["0.png", "1.png", "2.png", "3.png"]
    delta = np.load(folder / "2.delta.npy")
    assert delta.dtype == np.float16 and delta.shape == (3, 8, 10)
    assert np.abs(delta - (adv[2] - clean[2])).max() < 1e-5  # PNG alone would be off by up to 0.5/255


def test_example_points_and_choice():
    keys = example_points(load_suite("quick").points)
    assert keys == {"fgsm-linf-eps0.031373-s1", "pgd-linf-eps0.031373-s10", "square-linf-eps0.031373-s20"}
    per_image = pd.DataFrame({"image_id": [1, 2, 3, 4, 5], "point": "p", "detections_clean": [3, 3, 3, 3, 3],
                              "detections_adv": [3, 0, 2, 1, 3], "loss_clean": 1.0,
                              "loss_adv": [1.0, 2.0, 1.5, 1.2, 3.0]})
    assert choose(per_image, "p") == [("worst-hit", 2), ("median", 3), ("best", 1)]
    assert choose(per_image, "p", [1, 5]) == [("worst-hit", 5), ("best", 1)]
    assert choose(per_image, "other") == []


def test_report_survives_a_moved_dataset(run_a, tmp_path):
    """From files alone: without the dataset, mask quality comes from the saved CSV and examples are skipped."""
    import json
    import shutil
    run = tmp_path / "moved"
    shutil.copytree(run_a, run)
    info = json.loads((run / "run.json").read_text())
    info["dataset"]["annotations"] = str(tmp_path / "gone.json")
    (run / "run.json").write_text(json.dumps(info))
    write_report(run)
    html = (run / "report.html").read_text()
    assert "mask quality read from the saved mask_quality.csv" in html
    assert "examples need per_image.csv and the dataset" in html
    assert Path(run / "summary.csv").is_file()


def test_malformed_optional_file_costs_only_its_section(run_b, tmp_path):
    """Another command's file in an unexpected shape must not lose the report of a finished run."""
    import shutil
    run = tmp_path / "odd"
    shutil.copytree(run_b, run)
    (run / "gradnorms.csv").write_text("image_id,component,l2\n1,loss_mask,not-a-number\n")
    write_report(run)
    html = (run / "report.html").read_text()
    assert 'id="problems"' in html and "gradient norms left out" in html
    assert 'data-metric="bbox-clean-AP"' in html


def test_files_read_strictly_a_pre_engine_run_or_a_wrong_sanity_json_is_one_line(run_b, tmp_path, capsys):
    """One schema per file: metrics.csv without `kind` (written before the run engine) and a sanity.json in
    another shape are refused with a one-line error naming what is wrong, not rendered with blanks."""
    import shutil
    old = tmp_path / "old"
    shutil.copytree(run_b, old)
    m = pd.read_csv(old / "metrics.csv")
    m.drop(columns=["kind", "probe"]).to_csv(old / "metrics.csv", index=False)
    assert main(["report", str(old)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing column(s) kind, probe" in err and "Traceback" not in err
    odd = tmp_path / "odd-sanity"
    shutil.copytree(run_b, odd)
    (odd / "sanity.json").write_text('{"status": "ok", "checks": [{"name": "beats_random", "passed": true}]}')
    assert main(["report", str(odd)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sanity.json" in err and "verdict" in err
